"""The console's data, fetched through the platform's FHIR router with the signed-in user's Context.

Nothing here reads a table: every read and write is a :class:`FhirRequest` handled by
``platform.router`` (so the security module authorises, narrows, masks and audits it exactly as for the
REST API), and the shaping into page models is pure functions over FHIR resources.
"""

from __future__ import annotations

import functools
import re
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson

from changbai.api.router import FhirRequest, FhirResponse
from changbai.errors import ChangbaiError, Forbidden, InvalidInput, NotFound
from changbai.store.pipeline import Context

if TYPE_CHECKING:
    from changbai.api.app import Platform

SYS_FACILITY = "https://changbai.example/fhir/CodeSystem/access-facility"
ID_NUMBER = re.compile(r"(?<![0-9])([1-9][0-9]{16}[0-9Xx])(?![0-9])")
LOINC = "http://loinc.org"
#: LOINC codes the trend charts draw (one chart each; blood pressure draws two lines).
TRENDS = {
    "bp": ("85354-9", ("8480-6", "8462-4")),
    "glucose": ("14771-0", ()),
    "hba1c": ("4548-4", ()),
}
VITALS = ("85354-9", "8867-4", "29463-7", "8302-2", "39156-5", "8310-5")


class Fhir:
    """FHIR interactions as the signed-in user: ``platform.router.handle`` with their Context."""

    def __init__(self, platform: Platform, ctx: Context) -> None:
        self.platform = platform
        self.ctx = ctx

    def call(
        self, method: str, path: str, query: list[tuple[str, str]] | None = None, body: Any = None
    ) -> FhirResponse:
        req = FhirRequest(method, path, list(query or []), {"accept": "application/fhir+json"}, body)
        return self.platform.router.handle(req, self.ctx)

    def ok(self, resp: FhirResponse) -> dict[str, Any]:
        if resp.status < 400:
            return resp.body or {}
        message = _diagnostics(resp.body)
        if resp.status == 404:
            raise NotFound(message)
        if resp.status in (401, 403):
            raise Forbidden(message)
        raise InvalidInput(message)

    def search(self, rtype: str, query: list[tuple[str, str]]) -> list[dict[str, Any]]:
        return [e["resource"] for e in self.ok(self.call("GET", rtype, query)).get("entry", []) if "resource" in e]

    def bundle(self, path: str, query: list[tuple[str, str]]) -> dict[str, Any]:
        return self.ok(self.call("GET", path, query))

    def read(self, rtype: str, id: str) -> dict[str, Any]:
        return self.ok(self.call("GET", f"{rtype}/{id}"))


def _diagnostics(body: dict[str, Any] | None) -> str:
    issues = (body or {}).get("issue") or [{}]
    return str(issues[0].get("diagnostics") or issues[0].get("code") or "refused")


# ----------------------------------------------------------------------------------------- finding
@dataclass
class Criteria:
    id_number: str = ""
    name: str = ""
    birth_date: str = ""
    phone: str = ""
    qr: str = ""

    def empty(self) -> bool:
        return not any((self.id_number, self.name, self.birth_date, self.phone, self.qr))


def id_number_from_qr(text: str) -> str | None:
    """The resident ID number a health-card QR text carries (the card's text embeds it; any layout)."""
    m = ID_NUMBER.search(text or "")
    return m.group(1).upper() if m else None


def find_query(c: Criteria, resident_id_system: str) -> list[tuple[str, str]]:
    """The Patient search for the criteria; InvalidInput when there is nothing to search by."""
    q: list[tuple[str, str]] = []
    number = c.id_number.strip().upper()
    if c.qr.strip():
        found = id_number_from_qr(c.qr)
        if found is None:
            raise InvalidInput("bad_qr")
        number = found
    if number:
        q.append(("identifier", f"{resident_id_system}|{number}"))
    if c.name.strip():
        q.append(("name", c.name.strip()))
    if c.birth_date.strip():
        q.append(("birthdate", c.birth_date.strip()))
    if c.phone.strip():
        q.append(("phone", re.sub(r"[\s-]", "", c.phone.strip())))
    if not q:
        raise InvalidInput("need_criteria")
    return [*q, ("_count", "20")]


def find(fhir: Fhir, c: Criteria) -> list[dict[str, Any]]:
    return fhir.search("Patient", find_query(c, fhir.platform.settings.resident_id_system))


# ------------------------------------------------------------------------------------------ record
@dataclass
class Record:
    patient: dict[str, Any]
    by_type: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    org_names: dict[str, str] = field(default_factory=dict)

    def of(self, rtype: str) -> list[dict[str, Any]]:
        return self.by_type.get(rtype, [])


def load_record(fhir: Fhir, pid: str) -> Record:
    """The resident's whole record across facilities: Patient/[id]/$everything, every page."""
    patient = fhir.read("Patient", pid)
    by_type: dict[str, list[dict[str, Any]]] = defaultdict(list)
    query = [("_count", "1000")]
    path = f"Patient/{pid}/$everything"
    for _ in range(20):
        bundle = fhir.bundle(path, query)
        for e in bundle.get("entry", []):
            r = e.get("resource") or {}
            if r.get("resourceType") and r.get("resourceType") != "Patient":
                by_type[r["resourceType"]].append(r)
        nxt = next((link["url"] for link in bundle.get("link", []) if link.get("relation") == "next"), None)
        if not nxt or "?" not in nxt:
            break
        from urllib.parse import parse_qsl

        path_part, _, qs = nxt.partition("?")
        path = path_part.split("/fhir/", 1)[-1]
        query = parse_qsl(qs, keep_blank_values=True)
    rec = Record(patient, dict(by_type))
    rec.org_names = organisation_names(fhir, rec)
    return rec


def organisation_names(fhir: Fhir, rec: Record) -> dict[str, str]:
    ids: set[str] = set()
    for items in rec.by_type.values():
        for r in items:
            org = holder(r)
            if org:
                ids.add(org)
    names: dict[str, str] = {}
    ids_list = sorted(ids)
    for i in range(0, len(ids_list), 100):
        chunk = ids_list[i : i + 100]
        try:
            for o in fhir.search("Organization", [("_id", ",".join(chunk)), ("_count", "100"), ("_elements", "name")]):
                names[o["id"]] = o.get("name") or o["id"]
        except ChangbaiError:
            break
    return names


def holder(resource: dict[str, Any]) -> str | None:
    """The facility a record came from: its access-facility label (set by security from meta.source or the
    holder elements), else its meta.source."""
    for c in (resource.get("meta") or {}).get("security") or []:
        if c.get("system") == SYS_FACILITY and c.get("code"):
            return str(c["code"])
    for key in ("serviceProvider", "performer", "recorder", "managingOrganization", "custodian", "requester"):
        value = resource.get(key)
        refs = value if isinstance(value, list) else [value]
        for ref in refs:
            if isinstance(ref, dict):
                target = (ref.get("reference") or (ref.get("actor") or {}).get("reference") or "").split("/")
                if len(target) == 2 and target[0] == "Organization":
                    return target[1]
    return None


def source_of(resource: dict[str, Any], names: dict[str, str]) -> str:
    org = holder(resource)
    if org:
        return names.get(org, org)
    return str((resource.get("meta") or {}).get("source") or "")


# ------------------------------------------------------------------------------------------ shaping
def text_of(concept: Any) -> str:
    if not isinstance(concept, dict):
        return ""
    if concept.get("text"):
        return str(concept["text"])
    for c in concept.get("coding") or []:
        if c.get("display"):
            return str(c["display"])
    codes = [c.get("code") for c in concept.get("coding") or [] if c.get("code")]
    return ", ".join(codes)


def code_of(concept: Any, system: str | None = None) -> str | None:
    for c in (concept or {}).get("coding") or []:
        if system is None or c.get("system") == system:
            return c.get("code")
    return None


def name_of(resource: dict[str, Any]) -> str:
    for n in resource.get("name") or []:
        if n.get("text"):
            return str(n["text"])
        return "".join([n.get("family", ""), *n.get("given", [])])
    return resource.get("id", "")


def id_number_of(patient: dict[str, Any], system: str) -> str:
    for i in patient.get("identifier") or []:
        if i.get("system") == system:
            return str(i.get("value", ""))
    return ""


def age(birth: str | None, today: date | None = None) -> int | None:
    if not birth or len(birth) < 10:
        return None
    today = today or date.today()
    y, m, d = int(birth[:4]), int(birth[5:7]), int(birth[8:10])
    return today.year - y - ((today.month, today.day) < (m, d))


def when(resource: dict[str, Any]) -> str:
    for key in ("effectiveDateTime", "occurrenceDateTime", "recordedDate", "onsetDateTime", "authoredOn", "date"):
        if resource.get(key):
            return str(resource[key])
    for key in ("period", "effectivePeriod"):
        if (resource.get(key) or {}).get("start"):
            return str(resource[key]["start"])
    return str((resource.get("meta") or {}).get("lastUpdated") or "")


@functools.cache
def _units() -> dict[str, str]:
    path = Path(__file__).parent / "data" / "units.json"
    return {k: v for k, v in orjson.loads(path.read_bytes()).items() if k != "note"}


def unit_text(q: dict[str, Any]) -> str:
    """A quantity's unit as people write it (mmHg, not the UCUM code mm[Hg])."""
    unit = str(q.get("unit") or q.get("code") or "")
    return _units().get(unit, unit)


def value_text(o: dict[str, Any]) -> str:
    if "valueQuantity" in o:
        q = o["valueQuantity"]
        return f"{_num(q.get('value'))} {unit_text(q)}".strip()
    if o.get("component"):
        parts = [_num((c.get("valueQuantity") or {}).get("value")) for c in o["component"]]
        unit = unit_text(o["component"][0].get("valueQuantity") or {})
        return "/".join(p for p in parts if p) + (f" {unit}" if unit else "")
    for key in ("valueString", "valueCodeableConcept", "valueBoolean", "valueInteger"):
        if key in o:
            v = o[key]
            return text_of(v) if isinstance(v, dict) else str(v)
    return ""


def _num(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, float) and v.is_integer():
        return str(int(v))
    return str(v)


def summary(rec: Record) -> dict[str, Any]:
    """The EHR front page: allergies, conditions, current medicines, last vitals, immunisations, care team,
    flags, each item with its source facility."""
    names = rec.org_names
    at = encounter_facilities(rec)

    def src(r: dict[str, Any]) -> str:
        return source_of(r, names) or at.get((r.get("encounter") or {}).get("reference", ""), "")

    def items(rtype: str, label: Any, keep: Any = None) -> list[dict[str, str]]:
        rows = [r for r in rec.of(rtype) if keep is None or keep(r)]
        rows.sort(key=when, reverse=True)
        return [{"text": label(r), "date": when(r)[:10], "source": src(r)} for r in rows]

    # problems still active first (chronic disease), then past diagnoses, each newest first
    conditions: dict[str, dict[str, str]] = {}
    for r in sorted(rec.of("Condition"), key=lambda r: (_active(r), when(r)), reverse=True):
        label = text_of(r.get("code"))
        if label and label not in conditions:
            status = "" if _active(r) else "resolved"
            conditions[label] = {"text": label, "date": when(r)[:10], "source": src(r), "status": status}
    latest: dict[str, dict[str, Any]] = {}
    for o in rec.of("Observation"):
        code = code_of(o.get("code"), LOINC)
        if code in VITALS and (code not in latest or when(o) > when(latest[code])):
            latest[code] = o
    meds: dict[str, dict[str, str]] = {}
    for r in sorted(rec.of("MedicationRequest"), key=when, reverse=True):
        if r.get("status") not in (None, "active", "completed"):
            continue
        label = text_of(r.get("medicationCodeableConcept")) or (r.get("medicationReference") or {}).get("display", "")
        if label and label not in meds and len(meds) < 12:
            meds[label] = {"text": label, "date": when(r)[:10], "source": src(r)}
    team = []
    for ct in rec.of("CareTeam"):
        if ct.get("status") not in (None, "active"):
            continue
        for p in ct.get("participant") or []:
            member = (p.get("member") or {}).get("display") or (p.get("member") or {}).get("reference", "")
            team.append(
                {
                    "text": f"{member}（{text_of((p.get('role') or [{}])[0])}）",
                    "date": ((ct.get("period") or {}).get("end") or "")[:10],
                    "source": (p.get("onBehalfOf") or {}).get("display") or source_of(ct, names),
                }
            )
    return {
        "allergies": items("AllergyIntolerance", lambda r: text_of(r.get("code"))),
        "conditions": list(conditions.values()),
        "medicines": list(meds.values()),
        "vitals": [
            {
                "text": text_of(o.get("code")),
                "value": value_text(o),
                "date": when(o)[:10],
                "source": src(o),
            }
            for o in sorted(latest.values(), key=lambda o: VITALS.index(code_of(o.get("code"), LOINC) or ""))
        ],
        "immunisations": items("Immunization", lambda r: text_of(r.get("vaccineCode"))),
        "family_doctor": team,
        "flags": items("Flag", lambda r: text_of(r.get("code")), lambda r: r.get("status") == "active"),
    }


def _active(condition: dict[str, Any]) -> bool:
    """Whether a condition is still a problem: clinical status active, recurrence or relapse (or unsaid)."""
    status = code_of(condition.get("clinicalStatus"))
    return status in (None, "active", "recurrence", "relapse")


def timeline(rec: Record) -> list[dict[str, Any]]:
    """Encounters at every facility, newest first, with their diagnoses."""
    conditions = {c["id"]: text_of(c.get("code")) for c in rec.of("Condition") if c.get("id")}
    out = []
    for e in sorted(rec.of("Encounter"), key=when, reverse=True):
        diagnoses = []
        for d in e.get("diagnosis") or []:
            ref = ((d.get("condition") or {}).get("reference") or "").split("/")[-1]
            label = conditions.get(ref) or (d.get("condition") or {}).get("display")
            if label:
                diagnoses.append(label)
        if not diagnoses:
            diagnoses = [text_of(c) for c in e.get("reasonCode") or [] if text_of(c)]
        out.append(
            {
                "date": when(e)[:16].replace("T", " "),
                "type": (e.get("class") or {}).get("code", ""),
                "facility": (e.get("serviceProvider") or {}).get("display") or source_of(e, rec.org_names),
                "diagnoses": diagnoses,
                "id": e.get("id"),
            }
        )
    return out


def encounter_facilities(rec: Record) -> dict[str, str]:
    """Encounter id -> the facility it happened at (for items that name only their encounter)."""
    out = {}
    for e in rec.of("Encounter"):
        label = (e.get("serviceProvider") or {}).get("display") or source_of(e, rec.org_names)
        if e.get("id") and label:
            out[f"Encounter/{e['id']}"] = label
    return out


def results(rec: Record, limit: int = 60) -> list[dict[str, str]]:
    rows = sorted(rec.of("Observation"), key=when, reverse=True)[:limit]
    at = encounter_facilities(rec)
    return [
        {
            "date": when(o)[:10],
            "item": text_of(o.get("code")),
            "value": value_text(o),
            "source": source_of(o, rec.org_names) or at.get((o.get("encounter") or {}).get("reference", ""), ""),
        }
        for o in rows
    ]


def series(rec: Record) -> dict[str, list[tuple[str, list[float]]]]:
    """Points for the trend charts: chart key -> [(date, [values...])], oldest first."""
    out: dict[str, list[tuple[str, list[float]]]] = {k: [] for k in TRENDS}
    for o in rec.of("Observation"):
        code = code_of(o.get("code"), LOINC)
        for key, (panel, parts) in TRENDS.items():
            if code != panel:
                continue
            if parts:
                values = []
                for part in parts:
                    comp = next((c for c in o.get("component") or [] if code_of(c.get("code"), LOINC) == part), None)
                    v = ((comp or {}).get("valueQuantity") or {}).get("value")
                    if isinstance(v, int | float):
                        values.append(float(v))
                if len(values) == len(parts):
                    out[key].append((when(o)[:10], values))
            else:
                v = (o.get("valueQuantity") or {}).get("value")
                if isinstance(v, int | float):
                    out[key].append((when(o)[:10], [float(v)]))
    for pts in out.values():
        pts.sort(key=lambda p: p[0])
    return out


def documents(rec: Record) -> list[dict[str, str]]:
    docs = []
    for d in sorted(rec.of("DocumentReference"), key=when, reverse=True):
        docs.append(
            {
                "date": when(d)[:10],
                "item": d.get("description") or text_of(d.get("type")),
                "type": text_of(d.get("type")),
                "source": source_of(d, rec.org_names),
            }
        )
    for r in sorted(rec.of("DiagnosticReport"), key=when, reverse=True):
        docs.append(
            {
                "date": when(r)[:10],
                "item": text_of(r.get("code")),
                "type": "DiagnosticReport",
                "source": source_of(r, rec.org_names),
            }
        )
    return docs
