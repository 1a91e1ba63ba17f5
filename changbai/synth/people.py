"""Residents: a Jilin-shaped age/sex pyramid, households (couples, their children), places, ethnicity,
names, resident ID numbers, mobile numbers and insurance. Persons are plain objects; the FHIR resources
for them (Patient, RelatedPerson, Coverage) are written by :func:`emit_registration`."""

from __future__ import annotations

import bisect
import random
from dataclasses import dataclass, field
from itertools import accumulate
from typing import Any

from changbai.synth import gb11643, names, systems
from changbai.synth.data import band_value, load
from changbai.synth.elements import concept, day, ref
from changbai.synth.facilities import address
from changbai.synth.geography import Map, Place, county_weights
from changbai.synth.output import Output


@dataclass(slots=True, eq=False)
class Person:
    idx: int
    sex: str
    birth: int  # day number
    age: int  # whole years on the as-of date
    death: int | None = None
    ethnicity: str = "01"
    name: names.Name | None = None
    household: int = 0
    role: str = "single"  # head | spouse | child | parent (an elder living with the couple) | single
    spouse: Person | None = None
    mother: Person | None = None
    father: Person | None = None
    children: list[Person] = field(default_factory=list)
    township: Place | None = None
    line: str = ""
    phone: str | None = None
    resident_id: str = ""
    insurance: str | None = None  # UEBMI | URRBMI | None (self-pay)
    coverage: str | None = None
    patient: str = ""  # the primary Patient record id
    records: dict[str, str] = field(default_factory=dict)  # organization id -> Patient id (duplicates)
    chronic: list[tuple[dict[str, Any], int]] = field(default_factory=list)  # (definition, onset day)
    marital: str | None = None

    @property
    def pid(self) -> str:
        return f"person-{self.idx}"

    def patient_at(self, org: str) -> str:
        """The Patient record this person has at a facility (a duplicate registration, or the primary)."""
        return self.records.get(org, self.patient)

    def alive_on(self, d: int) -> bool:
        return self.birth <= d and (self.death is None or d < self.death)


def years_between(birth: int, on: int) -> int:
    from datetime import date

    b, o = date.fromordinal(birth), date.fromordinal(on)
    return o.year - b.year - ((o.month, o.day) < (b.month, b.day))


def sample_people(rng: random.Random, n: int, as_of: int, care_start: int) -> list[Person]:
    """``n`` persons from the Jilin age/sex pyramid, with deaths during the care window."""
    pop = load("population")
    bands = pop["age_bands"]
    cum = list(accumulate(b[2] for b in bands))
    people = []
    for i in range(n):
        low, high, _, male = rng.choices(bands, cum_weights=cum)[0]
        age_days = rng.randint(low * 365, high * 365 + 364)
        birth = as_of - 1 - age_days
        sex = "male" if rng.random() < male else "female"
        people.append(Person(i + 1, sex, birth, years_between(birth, as_of)))
    years = (as_of - care_start) / 365.25
    for p in people:
        q = band_value(pop["annual_mortality"], p.age)
        if rng.random() < 1 - (1 - q) ** years:
            start = max(care_start, p.birth + 1)
            p.death = rng.randint(start, as_of - 1)
    return people


def form_households(rng: random.Random, people: list[Person]) -> list[list[Person]]:
    """Couples by matched age rank; children, unmarried young adults and some widowed elders attached to a
    couple of the right age; everyone else alone (shares in the population data file)."""
    pop = load("population")
    married = [p for p in people if p.age >= 20 and rng.random() < band_value(pop["married_share_by_age"], p.age)]
    men = sorted((p for p in married if p.sex == "male"), key=lambda p: p.birth)
    women = sorted((p for p in married if p.sex == "female"), key=lambda p: p.birth)
    couples = list(zip(men, women, strict=False))
    capacity: dict[int, int] = {}
    for h, w in couples:
        h.spouse, w.spouse = w, h
        h.role, w.role = "head", "spouse"
        h.marital = w.marital = "M"
        capacity[w.idx] = 2 if rng.random() < pop["second_child_share"] else 1
    by_age = sorted(couples, key=lambda c: c[1].age)  # wives by age, to find a mother for each child
    ages = [c[1].age for c in by_age]
    low, high = pop["mother_age_at_birth"]

    def couple_for(target: int, accept: Any) -> tuple[Person, Person] | None:
        i = bisect.bisect_left(ages, target)
        for step in range(0, 300):
            for j in (i + step, i - step):
                if 0 <= j < len(by_age) and accept(*by_age[j]):
                    return by_age[j]
        return None

    for child in sorted((p for p in people if p.age < 18 or (p.age < 35 and p.spouse is None)), key=lambda p: p.idx):
        if child.age >= 18 and rng.random() >= pop["adult_child_at_home"]:
            continue
        found = couple_for(
            child.age + rng.randint(low, high),
            lambda h, w, c=child: (
                len(w.children) < capacity[w.idx] and low <= w.age - c.age <= high + 6 and c.birth > w.birth
            ),
        )
        if found is None:
            continue
        h, w = found
        child.father, child.mother = h, w
        child.role = "child"
        h.children.append(child)
        w.children.append(child)
    lodgers: dict[int, list[Person]] = {}
    for elder in (p for p in people if p.age >= 65 and p.spouse is None and p.role == "single"):
        if rng.random() >= pop["elderly_with_children"]:
            continue
        found = couple_for(elder.age - rng.randint(24, 34), lambda h, w: w.idx not in lodgers)
        if found is not None:
            elder.role = "parent"
            lodgers[found[1].idx] = [elder]
    households: list[list[Person]] = []
    seen: set[int] = set()
    for p in people:
        if p.idx in seen or p.role in ("child", "parent"):
            continue  # children and elders join the household of the couple they live with
        members = [p]
        if p.spouse is not None:
            members.append(p.spouse)
        for m in list(members):
            for c in m.children:
                if c not in members:
                    members.append(c)
            members.extend(lodgers.get(m.idx, []))
        for m in members:
            seen.add(m.idx)
            if m.marital is None and m.age >= 18:
                m.marital = "W" if m.age >= 65 and rng.random() < 0.6 else "S"
        households.append(members)
    # a mother alive when her children were born
    for hh in households:
        for m in hh:
            if m.children and m.death is not None:
                last = max(c.birth for c in m.children)
                if m.death <= last + 30:
                    m.death = None
    households.sort(key=lambda hh: min(m.idx for m in hh))
    return households


def settle(rng: random.Random, households: list[list[Person]], geo: Map, townships: dict[str, list[Place]]) -> None:
    """Place each household in a township, give it an ethnicity, names, IDs, phones and insurance."""
    pop = load("population")
    weights = county_weights()
    counties = list(weights)
    cum = list(accumulate(weights.values()))
    used_ids: set[str] = set()
    used_phones: set[str] = set()
    for hid, hh in enumerate(households, start=1):
        county = rng.choices(counties, cum_weights=cum)[0]
        town = rng.choice(townships[county])
        city = geo.city_of(county)
        eth_weights = (
            pop["ethnicity_by_division"].get(county)
            or pop["ethnicity_by_division"].get(city.code)
            or pop["ethnicity_default"]
        )
        ethnicity = rng.choices(list(eth_weights), weights=list(eth_weights.values()))[0]
        line = _line(rng, town, pop)
        family = names.surname(rng, ethnicity)
        for m in hh:
            m.household = hid
            m.township = town
            m.line = line
            m.ethnicity = ethnicity
            year = int(day(m.birth)[:4])
            if m.role == "spouse" or (m.role == "parent" and m.sex == "female"):
                fam = names.surname(rng, ethnicity)
            else:
                fam = family
            m.name = names.person_name(rng, fam, m.sex, year, ethnicity)
            if m.name.korean is not None and rng.random() >= pop["korean_bilingual_share"]:
                m.name.korean = None  # registered with the Chinese name only
            m.resident_id = _resident_id(rng, m, county, geo, used_ids)
            m.insurance = _insurance(rng, m, town, pop)
        for m in hh:
            if m.age >= pop["mobile_from_age"]:
                m.phone = _phone(rng, pop, used_phones)
        for m in hh:
            if m.phone is None:
                guardian = m.mother or m.father
                m.phone = guardian.phone if guardian is not None else None


def _line(rng: random.Random, town: Place, pop: dict[str, Any]) -> str:
    if town.name.endswith("街道"):
        return (
            f"{rng.choice(pop['roads'])}{rng.randint(1, 2999)}号{rng.choice(pop['communities'])}小区"
            f"{rng.randint(1, 30)}栋{rng.randint(1, 6)}单元{rng.randint(1, 18)}{rng.randint(1, 4):02d}室"
        )
    village = rng.choice(load("facilities")["village_names"])
    return f"{village}村{rng.randint(1, 12)}组{rng.randint(1, 200)}号"


def _resident_id(rng: random.Random, p: Person, county: str, geo: Map, used: set[str]) -> str:
    share = load("population")["born_elsewhere_share"]
    r = rng.random()
    if r < share["same_county"]:
        region = county
    elif r < share["same_county"] + share["other_jilin"]:
        region = rng.choice(geo.counties).code
    else:
        region = rng.choice(geo.other_counties)
    parity = 1 if p.sex == "male" else 0
    while True:
        seq = rng.randrange(parity, 1000, 2)
        number = gb11643.make(region, day(p.birth), seq)
        if number not in used:
            used.add(number)
            return number


def _phone(rng: random.Random, pop: dict[str, Any], used: set[str]) -> str:
    while True:
        number = rng.choice(pop["mobile_prefixes"]) + f"{rng.randrange(10**8):08d}"
        if number not in used:
            used.add(number)
            return number


def _insurance(rng: random.Random, p: Person, town: Place, pop: dict[str, Any]) -> str | None:
    ins = pop["insurance"]
    if rng.random() < ins["uninsured"]:
        return None
    if p.age >= 18:
        share = ins["employee_share_adult_urban"] if town.urban else ins["employee_share_adult_rural"]
        if rng.random() < share:
            return "UEBMI"
    return "URRBMI"


_MARITAL = {"M": "Married", "S": "Never Married", "W": "Widowed"}
_RELATION = {"HUSB": "husband", "WIFE": "wife", "MTH": "mother", "FTH": "father"}


def human_names(name: names.Name) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = [{"use": "official", "text": name.text, "family": name.family, "given": [name.given]}]
    if name.korean is not None:
        fam, giv = name.korean
        out.append(
            {
                "extension": [{"url": systems.LANGUAGE_EXT, "valueCode": "ko"}],
                "use": "usual",
                "text": fam + giv,
                "family": fam,
                "given": [giv],
            }
        )
    return out


def communication(p: Person) -> list[dict[str, Any]]:
    zh = {"language": concept("urn:ietf:bcp:47", "zh-CN", "Chinese (China)")}
    if p.name is not None and p.name.korean is not None:
        return [{"language": concept("urn:ietf:bcp:47", "ko", "Korean"), "preferred": True}, zh]
    return [zh]


def patient_resource(p: Person, pid: str, org: str, org_name: str, mrn: str, geo: Map) -> dict[str, Any]:
    """The primary registration of a person (duplicates are derived from it in duplicates.py)."""
    eth = load("population")["ethnicity_codes"][p.ethnicity]
    res: dict[str, Any] = {
        "resourceType": "Patient",
        "id": pid,
        "extension": [
            {
                "url": systems.EXT_ETHNICITY,
                "valueCoding": {"system": systems.ETHNICITY, "code": p.ethnicity, "display": eth},
            }
        ],
        "identifier": [
            {
                "use": "official",
                "type": concept(systems.V2_0203, "NI", "National unique individual identifier"),
                "system": systems.RESIDENT_ID,
                "value": p.resident_id,
            },
            {
                "use": "usual",
                "type": concept(systems.V2_0203, "MR", "Medical record number"),
                "system": systems.MRN + org,
                "value": mrn,
            },
        ],
        "active": True,
        "name": human_names(p.name),  # type: ignore[arg-type]
    }
    if p.phone:
        res["telecom"] = [{"system": "phone", "value": p.phone, "use": "mobile"}]
    res["gender"] = p.sex
    res["birthDate"] = day(p.birth)
    if p.death is not None:
        res["deceasedDateTime"] = day(p.death)
    res["address"] = [address(p.township, geo, p.line, "home")]  # type: ignore[arg-type]
    if p.marital:
        res["maritalStatus"] = concept(systems.V3_MARITAL, p.marital, _MARITAL[p.marital])
    res["communication"] = communication(p)
    res["managingOrganization"] = ref("Organization", org, org_name)
    return res


def related_person(out: Output, subject: Person, other: Person, code: str, geo: Map) -> dict[str, Any]:
    res: dict[str, Any] = {
        "resourceType": "RelatedPerson",
        "id": out.new_id("rp-"),
        "identifier": [{"system": systems.RESIDENT_ID, "value": other.resident_id}],
        "active": True,
        "patient": ref("Patient", subject.patient),
        "relationship": [concept(systems.V3_ROLECODE, code, _RELATION[code])],
        "name": human_names(other.name),  # type: ignore[arg-type]
    }
    if other.phone:
        res["telecom"] = [{"system": "phone", "value": other.phone, "use": "mobile"}]
    res["gender"] = other.sex
    res["birthDate"] = day(other.birth)
    res["address"] = [address(other.township, geo, other.line, "home")]  # type: ignore[arg-type]
    return res


def coverage_resource(out: Output, p: Person, payer_org: str, payer_name: str, start: int) -> dict[str, Any]:
    types = load("population")["insurance"]["types"]
    kind = p.insurance or "URRBMI"
    cid = out.new_id("cov-")
    p.coverage = cid
    return {
        "resourceType": "Coverage",
        "id": cid,
        "identifier": [{"system": systems.COVERAGE_ID, "value": f"J{p.resident_id[:6]}{p.idx:09d}"}],
        "status": "active",
        "type": concept(systems.INSURANCE_TYPE, kind, types[kind]),
        "subscriberId": p.resident_id,
        "beneficiary": ref("Patient", p.patient),
        "relationship": concept("http://terminology.hl7.org/CodeSystem/subscriber-relationship", "self", "Self"),
        "period": {"start": day(max(start, p.birth))},
        "payor": [ref("Organization", payer_org, payer_name)],
    }
