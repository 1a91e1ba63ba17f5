"""Facilities and health workers, mCSD-shaped: each facility is an Organization (what it is, its level,
who it belongs to) and a Location (where it is), with Practitioners and PractitionerRoles."""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any

from changbai.synth import names, systems
from changbai.synth.data import load
from changbai.synth.elements import concept, ref
from changbai.synth.geography import Map, Place
from changbai.synth.output import Output

_ROLE_DISPLAY = {"doctor": "Doctor", "nurse": "Nurse", "pharmacist": "Pharmacist"}
_LOCATION_TYPE = {"HOSP": "Hospital", "PC": "Primary care clinic", "PHARM": "Pharmacy"}


@dataclass(slots=True)
class Staff:
    practitioner: str
    role: str
    name: str
    kind: str


@dataclass(slots=True)
class Facility:
    org: str
    loc: str
    name: str
    kind: str
    care_level: str
    place: Place
    staff: dict[str, list[Staff]] = field(default_factory=dict)

    def pick(self, rng: random.Random, kind: str = "doctor") -> Staff | None:
        pool = self.staff.get(kind) or self.staff.get("doctor") or self.staff.get("family_doctor")
        if not pool:
            pool = next(iter(self.staff.values()), None)
        return rng.choice(pool) if pool else None


def address(place: Place, geo: Map, line: str | None, use: str) -> dict[str, Any]:
    """A Chinese address down to the township, with the division code in an extension."""
    chain = []
    p: Place | None = place
    while p is not None:
        chain.append(p)
        p = geo.places.get(p.parent)
    by_level = {c.level: c for c in chain}
    text = "".join(c.name for c in reversed(chain)) + (line or "")
    addr: dict[str, Any] = {
        "extension": [
            {
                "url": systems.EXT_DIVISION,
                "valueCoding": {"system": systems.DIVISION, "code": place.code, "display": place.name},
            }
        ],
        "use": use,
        "type": "physical",
        "text": text,
    }
    if line:
        addr["line"] = [by_level["township"].name + line] if "township" in by_level else [line]
    addr["city"] = by_level["city"].name
    if "county" in by_level:
        addr["district"] = by_level["county"].name
    addr["state"] = "吉林省"
    addr["country"] = "CN"
    return addr


class Registry:
    """All facilities, found by the place they serve and the level of care they give."""

    def __init__(self) -> None:
        self.all: list[Facility] = []
        self.province: list[Facility] = []
        self.city: dict[str, Facility] = {}
        self.city_mch: dict[str, Facility] = {}
        self.county: dict[str, Facility] = {}
        self.county_tcm: dict[str, Facility] = {}
        self.cdc: dict[str, Facility] = {}  # by province, city and county code
        self.pharmacies: dict[str, list[Facility]] = {}
        self.primary: dict[str, Facility] = {}  # by township code
        self.village: dict[str, Facility] = {}  # by township code
        self.payer: dict[str, Facility] = {}  # by province and city code

    def for_care(self, level: str, township: Place, city_code: str) -> Facility:
        """The facility a resident of ``township`` uses for a level of care."""
        county = township.parent
        if level == "village":
            return self.village.get(township.code) or self.primary[township.code]
        if level == "primary":
            return self.primary[township.code]
        if level == "county":
            return self.county[county]
        if level == "city":
            return self.city[city_code]
        return self.province[0]


def build(out: Output, rng: random.Random, geo: Map, townships: dict[str, list[Place]], residents: int) -> Registry:
    """Emit every Organization, Location, Practitioner and PractitionerRole; return the registry.

    Every county keeps its hospitals and CDC whatever the run's size; staff numbers grow with the
    residents (at least one of each role) up to the data file's full numbers."""
    spec = load("facilities")
    staff_scale = min(1.0, residents / spec["full_staff_residents"])
    reg = Registry()
    centre = load("population")["city_centre"]

    def make(kind: str, name: str, place: Place, city: Place, parent: Facility | None = None) -> Facility:
        k = spec["kinds"][kind]
        org_id, loc_id = out.new_id("org-"), out.new_id("loc-")
        fac = Facility(org_id, loc_id, name, kind, k["care_level"], place)
        phone = f"0{_area_code(city.code)}-{rng.randint(81000000, 89999999)}"
        types = [
            concept(systems.ORG_TYPE, k["org_type"], _ORG_TYPE_DISPLAY[k["org_type"]]),
            concept(systems.FACILITY_TYPE, k["type"], k["type_display"]),
        ]
        if k["level"]:
            types.append(concept(systems.HOSPITAL_LEVEL, k["level"], spec["levels"][k["level"]]))
        line = f"{rng.choice(load('population')['roads'])}{rng.randint(1, 999)}号"
        addr = address(place, geo, line, "work")
        org: dict[str, Any] = {
            "resourceType": "Organization",
            "id": org_id,
            "identifier": [{"system": systems.ORG_CODE, "value": f"{place.code[:6]}{len(reg.all) + 1:06d}"}],
            "active": True,
            "type": types,
            "name": name,
            "telecom": [{"system": "phone", "value": phone, "use": "work"}],
            "address": [addr],
        }
        if parent is not None:
            org["partOf"] = ref("Organization", parent.org, parent.name)
        out.emit(org)
        if k["location_type"] is not None or kind == "cdc":
            lat, lon = centre[city.code]
            loc: dict[str, Any] = {
                "resourceType": "Location",
                "id": loc_id,
                "status": "active",
                "name": name,
                "mode": "instance",
                "type": [concept(systems.V3_ROLECODE, k["location_type"], _LOCATION_TYPE[k["location_type"]])]
                if k["location_type"] in _LOCATION_TYPE
                else [concept(systems.FACILITY_TYPE, k["type"], k["type_display"])],
                "telecom": [{"system": "phone", "value": phone, "use": "work"}],
                "address": addr,
                "physicalType": concept(systems.LOCATION_PHYSICAL, "bu", "Building"),
                "position": {
                    "longitude": round(lon + rng.uniform(-0.4, 0.4), 5),
                    "latitude": round(lat + rng.uniform(-0.3, 0.3), 5),
                },
                "managingOrganization": ref("Organization", org_id, name),
            }
            out.emit(loc)
        for role, count in k["staff"].items():
            n = max(1, round(count * staff_scale))
            fac.staff[role] = [_staff(out, rng, fac, role, spec) for _ in range(n)]
        reg.all.append(fac)
        return fac

    seat = geo.places["220102"]  # provincial institutions sit in Changchun
    changchun = geo.places["220100"]
    reg.payer["220000"] = make("insurance_bureau", "吉林省医疗保障局", seat, changchun)
    reg.cdc["220000"] = make("cdc", "吉林省疾病预防控制中心", seat, changchun)
    for kind in ("provincial_hospital", "provincial_tcm"):
        for name in spec["kinds"][kind]["names"]:
            reg.province.append(make(kind, name, seat, changchun))
    brands = spec["pharmacy_brands"]
    for city in geo.cities:
        short = _short(city.name)
        seat = next(c for c in city.children if c in geo.counties)
        reg.payer[city.code] = make("insurance_bureau", f"{city.name}医疗保障局", seat, city, reg.payer["220000"])
        reg.cdc[city.code] = make("cdc", f"{city.name}疾病预防控制中心", seat, city, reg.cdc["220000"])
        tmpl = rng.choice(spec["kinds"]["city_hospital"]["names"])
        reg.city[city.code] = make("city_hospital", tmpl.format(city=short), seat, city)
        reg.city_mch[city.code] = make("city_mch", f"{short}妇幼保健院", seat, city)
        for county in (c for c in city.children if c in geo.counties):
            reg.county[county.code] = make("county_hospital", f"{county.name}人民医院", county, city)
            reg.county_tcm[county.code] = make("county_tcm", f"{county.name}中医院", county, city)
            reg.cdc[county.code] = make("cdc", f"{county.name}疾病预防控制中心", county, city, reg.cdc[city.code])
            reg.pharmacies[county.code] = [
                make("pharmacy", f"{rng.choice(brands)}大药房{_short(county.name)}店", county, city)
                for _ in range(spec["pharmacies_per_county"])
            ]
            for town in townships.get(county.code, []):
                if town.name.endswith("街道"):
                    name = f"{town.name.removesuffix('街道')}社区卫生服务中心"
                    reg.primary[town.code] = make("community_centre", name, town, city, reg.county[county.code])
                else:
                    name = f"{county.name}{town.name}卫生院"
                    centre_fac = make("township_centre", name, town, city, reg.county[county.code])
                    reg.primary[town.code] = centre_fac
                    village = rng.choice(spec["village_names"])
                    reg.village[town.code] = make(
                        "village_clinic", f"{town.name}{village}村卫生室", town, city, centre_fac
                    )
    return reg


_ORG_TYPE_DISPLAY = {"prov": "Healthcare Provider", "govt": "Government", "pay": "Payer"}


def _staff(out: Output, rng: random.Random, fac: Facility, role: str, spec: dict[str, Any]) -> Staff:
    sex = "female" if rng.random() < (0.9 if role == "nurse" else 0.5) else "male"
    year = rng.randint(1965, 1998)
    nm = names.person_name(rng, names.surname(rng, "01"), sex, year, "01")
    prac_id, role_id = out.new_id("prac-"), out.new_id("role-")
    out.emit(
        {
            "resourceType": "Practitioner",
            "id": prac_id,
            "identifier": [{"system": systems.PRACTITIONER_CODE, "value": f"{rng.randint(10**14, 10**15 - 1)}"}],
            "active": True,
            "name": [{"use": "official", "text": nm.text, "family": nm.family, "given": [nm.given]}],
            "gender": sex,
            "birthDate": f"{year}-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}",
        }
    )
    base, display = spec["roles"][role]
    codes = [concept(systems.PRACTITIONER_ROLE, base, _ROLE_DISPLAY[base])]
    if role not in ("doctor", "nurse", "pharmacist"):
        codes.append(concept(systems.STAFF_ROLE, role.replace("_", "-"), display))
    dept = rng.choice(spec["departments"][role])
    out.emit(
        {
            "resourceType": "PractitionerRole",
            "id": role_id,
            "active": True,
            "practitioner": ref("Practitioner", prac_id, nm.text),
            "organization": ref("Organization", fac.org, fac.name),
            "code": codes,
            "specialty": [concept(systems.DEPARTMENT, dept, dept)],
            "location": [ref("Location", fac.loc)],
        }
    )
    return Staff(prac_id, role_id, nm.text, role)


def _short(name: str) -> str:
    for suffix in ("朝鲜族自治州", "市", "区", "县"):
        if name.endswith(suffix) and len(name) > len(suffix) + 1:
            return name[: -len(suffix)]
    return name


_AREA = {
    "2201": "431",
    "2202": "432",
    "2203": "434",
    "2204": "437",
    "2205": "435",
    "2206": "439",
    "2207": "438",
    "2208": "436",
    "2224": "433",
}


def _area_code(city_code: str) -> str:
    return _AREA.get(city_code[:4], "431")
