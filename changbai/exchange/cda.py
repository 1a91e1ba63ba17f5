"""CDA R2 documents (C-CDA R2.1, Chinese WS/T 500 shared documents) -> a FHIR transaction Bundle.

The whole document is stored as a Binary and described by a DocumentReference; structured entries of
known sections (data/cda_sections.json: problems, medications, allergies, results, vital signs,
immunisations, matched by section templateId or LOINC code) become Condition, MedicationStatement,
AllergyIntolerance, Observation and Immunization resources. Each of them points back to the document
(Observation.derivedFrom, or the extension below) and the DocumentReference lists them in
context.related, so a reader can always get from a fact to the document it came from.

Parsing uses lxml with entity resolution and network access off (documents come from outside).
"""

from __future__ import annotations

import base64
import csv
import json
import uuid
from dataclasses import dataclass, field
from functools import cache
from typing import Any

from lxml import etree

from changbai.errors import InvalidInput
from changbai.exchange.datatypes import BadValue, ts_to_datetime
from changbai.exchange.maps import DATA, v2_map

NS = {"h": "urn:hl7-org:v3", "xsi": "http://www.w3.org/2001/XMLSchema-instance", "sdtc": "urn:hl7-org:sdtc"}
XSI_TYPE = "{http://www.w3.org/2001/XMLSchema-instance}type"
NAMESPACE = uuid.UUID("0b7e2d0e-52a5-4b8e-8a44-2f1d6c9a7c31")
EXT_SOURCE_DOCUMENT = "https://changbai.example/fhir/StructureDefinition/source-document"
CATEGORY = "http://terminology.hl7.org/CodeSystem/observation-category"
CDA_MIME = "application/hl7-cda+xml"

_PARSER = etree.XMLParser(resolve_entities=False, no_network=True, huge_tree=False, remove_comments=True)


@cache
def _code_systems() -> dict[str, str]:
    with (DATA / "cda_code_systems.csv").open(encoding="utf-8", newline="") as fh:
        return {row["oid"]: row["system"] for row in csv.DictReader(fh)}


@cache
def _config() -> dict[str, Any]:
    with (DATA / "cda_sections.json").open(encoding="utf-8") as fh:
        return json.load(fh)


def _sections() -> list[dict[str, Any]]:
    return _config()["sections"]


def system_uri(oid: str | None) -> str | None:
    if not oid:
        return None
    return _code_systems().get(oid) or (f"urn:oid:{oid}" if oid[:1].isdigit() else f"urn:uuid:{oid}")


@dataclass
class Extracted:
    bundle: dict[str, Any]
    sections: dict[str, int] = field(default_factory=dict)  # kind -> resources extracted
    skipped: list[str] = field(default_factory=list)  # entries that could not be read, and why

    def resources(self, rtype: str | None = None) -> list[dict[str, Any]]:
        return [e["resource"] for e in self.bundle["entry"] if rtype is None or e["resource"]["resourceType"] == rtype]


# ------------------------------------------------------------------------------------------ helpers
def _first(el: Any, path: str) -> Any:
    return el.find(path, NS) if el is not None else None


def _text(el: Any, path: str) -> str:
    found = el.find(path, NS) if el is not None else None
    return " ".join("".join(found.itertext()).split()) if found is not None else ""


def _dt(value: str | None) -> str | None:
    try:
        return ts_to_datetime(value or "", "+08:00")
    except BadValue:
        return None


def _when(el: Any) -> str | None:
    """effectiveTime/@value, or its low/@value (the start of an interval)."""
    if el is None:
        return None
    low = _first(el, "h:low")
    return _dt(el.get("value")) or (_dt(low.get("value")) if low is not None else None)


def concept(el: Any) -> dict[str, Any] | None:
    """A CD/CE element (code, codeSystem, displayName, translations, originalText) -> CodeableConcept."""
    if el is None:
        return None
    codings = []
    for c in [el, *el.findall("h:translation", NS)]:
        if c.get("code"):
            coding = {"system": system_uri(c.get("codeSystem")), "code": c.get("code")}
            if c.get("displayName"):
                coding["display"] = c.get("displayName")
            codings.append({k: v for k, v in coding.items() if v})
    text = _text(el, "h:originalText") if _first(el, "h:originalText/h:reference") is None else ""
    text = text or el.get("displayName") or ""
    if not codings and not text:
        return None
    cc: dict[str, Any] = {}
    if codings:
        cc["coding"] = codings
    if text:
        cc["text"] = text
    return cc


def quantity(el: Any) -> dict[str, Any] | None:
    if el is None or el.get("value") is None:
        return None
    try:
        number: float | int = float(el.get("value"))
    except ValueError:
        return None
    if float(number).is_integer() and "." not in el.get("value"):
        number = int(number)
    q: dict[str, Any] = {"value": number}
    unit = el.get("unit")
    if unit and unit != "1":
        q.update({"unit": unit, "system": "http://unitsofmeasure.org", "code": unit})
    return q


def value_of(el: Any) -> dict[str, Any]:
    if el is None or el.get("nullFlavor"):
        return {}
    kind = (el.get(XSI_TYPE) or "").split(":")[-1]
    if kind == "PQ":
        q = quantity(el)
        return {"valueQuantity": q} if q else {}
    if kind in ("CD", "CE", "CO", "CV"):
        cc = concept(el)
        return {"valueCodeableConcept": cc} if cc else {}
    if kind == "IVL_PQ":
        low, high = quantity(_first(el, "h:low")), quantity(_first(el, "h:high"))
        rng = {k: v for k, v in (("low", low), ("high", high)) if v}
        return {"valueRange": rng} if rng else {}
    if kind in ("ST", "ED"):
        text = " ".join("".join(el.itertext()).split())
        return {"valueString": text} if text else {}
    if kind == "INT" and el.get("value"):
        return {"valueInteger": int(el.get("value"))}
    if kind == "BL" and el.get("value"):
        return {"valueBoolean": el.get("value") == "true"}
    return {}


# ------------------------------------------------------------------------------------------ document
def parse(data: bytes) -> Any:
    try:
        root = etree.fromstring(data, _PARSER)
    except etree.XMLSyntaxError as exc:
        raise InvalidInput(f"not well-formed XML: {exc}") from exc
    if etree.QName(root).localname != "ClinicalDocument" or etree.QName(root).namespace != NS["h"]:
        raise InvalidInput("not a CDA document (root element must be urn:hl7-org:v3 ClinicalDocument)")
    return root


def to_bundle(data: bytes) -> Extracted:
    """A stored CDA document as one FHIR transaction: Binary, DocumentReference, Patient, extracted facts."""
    root = parse(data)
    doc_id = _first(root, "h:id")
    if doc_id is None or not (doc_id.get("root") or doc_id.get("extension")):
        raise InvalidInput("the document has no id (ClinicalDocument/id)")
    doc_key = f"{doc_id.get('root', '')}|{doc_id.get('extension', '')}"

    def rid(*parts: str) -> str:
        return str(uuid.uuid5(NAMESPACE, "|".join((doc_key, *parts))))

    entries: list[dict[str, Any]] = []

    def put(resource: dict[str, Any], *key: str) -> str:
        resource["id"] = rid(resource["resourceType"], *key)
        full = f"urn:uuid:{resource['id']}"
        entries.append(
            {
                "fullUrl": full,
                "resource": resource,
                "request": {"method": "PUT", "url": f"{resource['resourceType']}/{resource['id']}"},
            }
        )
        return full

    patient_ref = _patient(root, entries, rid)
    put({"resourceType": "Binary", "contentType": CDA_MIME, "data": base64.b64encode(data).decode()}, "binary")
    binary_url = f"Binary/{entries[-1]['resource']['id']}"  # a relative url: the Binary's id is fixed here
    doc: dict[str, Any] = {
        "resourceType": "DocumentReference",
        "masterIdentifier": {
            "system": system_uri(doc_id.get("root")),
            "value": doc_id.get("extension") or doc_id.get("root"),
        },
        "status": "current",
        "subject": {"reference": patient_ref},
        "content": [{"attachment": {"contentType": CDA_MIME, "url": binary_url, "size": len(data)}}],
    }
    if not doc_id.get("extension"):
        doc["masterIdentifier"] = {"system": "urn:ietf:rfc:3986", "value": f"urn:oid:{doc_id.get('root')}"}
    doc_type = concept(_first(root, "h:code"))
    if doc_type:
        doc["type"] = doc_type
    title = _text(root, "h:title")
    if title:
        doc["description"] = title
        doc["content"][0]["attachment"]["title"] = title
    date = _when(_first(root, "h:effectiveTime"))
    if date and "T" in date:
        doc["date"] = date
    doc_url = put(doc, "document")
    extracted = Extracted({"resourceType": "Bundle", "type": "transaction", "entry": entries})
    related: list[dict[str, str]] = []
    for section in root.iterfind(".//h:section", NS):
        kind = _section_kind(section)
        if kind is None:
            continue
        spec = next(s for s in _sections() if s["kind"] == kind)
        for n, entry in enumerate(section.findall("h:entry", NS)):
            for resource in _EXTRACTORS[kind](entry, spec, extracted):
                resource[_SUBJECT_KEY[resource["resourceType"]]] = {"reference": patient_ref}
                if resource["resourceType"] == "Observation":
                    resource["derivedFrom"] = [{"reference": doc_url}]
                else:
                    resource.setdefault("extension", []).append(
                        {"url": EXT_SOURCE_DOCUMENT, "valueReference": {"reference": doc_url}}
                    )
                ref = put(resource, kind, _section_code(section), str(n), str(len(related)))
                related.append({"reference": ref})
                extracted.sections[kind] = extracted.sections.get(kind, 0) + 1
    if related:
        doc["context"] = {"related": related}
    return extracted


_SUBJECT_KEY = {
    "AllergyIntolerance": "patient",
    "Immunization": "patient",
    "Condition": "subject",
    "MedicationStatement": "subject",
    "Observation": "subject",
}


def _section_code(section: Any) -> str:
    code = _first(section, "h:code")
    return code.get("code", "") if code is not None else ""


def _section_kind(section: Any) -> str | None:
    templates = {t.get("root") for t in section.findall("h:templateId", NS)}
    code = _section_code(section)
    for spec in _sections():
        if templates & set(spec["templates"]) or code in spec["loinc"]:
            return spec["kind"]
    return None


def _patient(root: Any, entries: list[dict[str, Any]], rid: Any) -> str:
    role = _first(root, "h:recordTarget/h:patientRole")
    if role is None:
        raise InvalidInput("the document has no recordTarget/patientRole")
    ids = [
        {"system": system_uri(i.get("root")), "value": i.get("extension")}
        for i in role.findall("h:id", NS)
        if i.get("extension") and i.get("root")
    ]
    if not ids:
        raise InvalidInput("the document's patient has no identifier (recordTarget/patientRole/id)")
    patient: dict[str, Any] = {"resourceType": "Patient", "identifier": ids}
    person = _first(role, "h:patient")
    if person is not None:
        names = []
        for name in person.findall("h:name", NS):
            family = _text(name, "h:family")
            given = [" ".join("".join(g.itertext()).split()) for g in name.findall("h:given", NS)]
            if not family and not given:
                text = " ".join("".join(name.itertext()).split())
                if text:
                    names.append({"text": text})
                continue
            hn: dict[str, Any] = {}
            if family:
                hn["family"] = family
            if given:
                hn["given"] = given
            names.append(hn)
        if names:
            patient["name"] = names
        gender = _first(person, "h:administrativeGenderCode")
        if gender is not None and gender.get("code"):
            patient["gender"] = v2_map("0001", gender.get("code"), "unknown")
        birth = _dt(_first(person, "h:birthTime").get("value") if _first(person, "h:birthTime") is not None else None)
        if birth:
            patient["birthDate"] = birth[:10]
    addresses = []
    for addr in role.findall("h:addr", NS):
        a: dict[str, Any] = {}
        lines = [
            " ".join("".join(x.itertext()).split())
            for tag in ("streetAddressLine", "houseNumber")
            for x in addr.findall(f"h:{tag}", NS)
        ]
        if lines:
            a["line"] = lines
        for key, tag in (
            ("city", "city"),
            ("state", "state"),
            ("postalCode", "postalCode"),
            ("country", "country"),
            ("district", "county"),
        ):
            if _text(addr, f"h:{tag}"):
                a[key] = _text(addr, f"h:{tag}")
        if not a:
            text = " ".join("".join(addr.itertext()).split())
            if text:
                a["text"] = text
        if a:
            addresses.append(a)
    if addresses:
        patient["address"] = addresses
    telecom = []
    for t in role.findall("h:telecom", NS):
        value = (t.get("value") or "").strip()
        if not value:
            continue
        system = "email" if value.startswith("mailto:") else "phone"
        telecom.append({"system": system, "value": value.split(":", 1)[-1].strip()})
    if telecom:
        patient["telecom"] = telecom
    key = ids[0]
    full = f"urn:uuid:{uuid.uuid5(NAMESPACE, key['system'] + '|' + key['value'])}"
    entries.append(
        {
            "fullUrl": full,
            "resource": patient,
            "request": {
                "method": "POST",
                "url": "Patient",
                "ifNoneExist": f"identifier={key['system']}|{key['value']}",
            },
        }
    )
    return full


# ------------------------------------------------------------------------------------------ extractors
def _problems(entry: Any, spec: dict[str, Any], out: Extracted) -> list[dict[str, Any]]:
    found = []
    concern = _first(entry, "h:act")
    concern_status = (
        _first(concern, "h:statusCode").get("code")
        if concern is not None and _first(concern, "h:statusCode") is not None
        else ""
    )
    observations = entry.findall(".//h:observation", NS) if concern is not None else entry.findall("h:observation", NS)
    for obs in observations:
        value = _first(obs, "h:value")
        code = concept(value) if value is not None and not value.get("nullFlavor") else None
        if code is None:
            continue
        condition: dict[str, Any] = {"resourceType": "Condition", "code": code}
        resolved = (
            concern_status in ("completed", "aborted") or _first(obs, "h:effectiveTime/h:high[@value]") is not None
        )
        condition["clinicalStatus"] = {
            "coding": [
                {
                    "system": "http://terminology.hl7.org/CodeSystem/condition-clinical",
                    "code": "resolved" if resolved else "active",
                }
            ]
        }
        onset = _when(_first(obs, "h:effectiveTime"))
        if onset:
            condition["onsetDateTime"] = onset
        abatement = (
            _dt(_first(obs, "h:effectiveTime/h:high").get("value"))
            if _first(obs, "h:effectiveTime/h:high") is not None
            else None
        )
        if abatement:
            condition["abatementDateTime"] = abatement
        condition["category"] = [
            {
                "coding": [
                    {"system": "http://terminology.hl7.org/CodeSystem/condition-category", "code": "problem-list-item"}
                ]
            }
        ]
        found.append(condition)
    return found


def _medications(entry: Any, spec: dict[str, Any], out: Extracted) -> list[dict[str, Any]]:
    sa = _first(entry, "h:substanceAdministration")
    if sa is None:
        return []
    med = concept(_first(sa, "h:consumable/h:manufacturedProduct/h:manufacturedMaterial/h:code"))
    if med is None:
        out.skipped.append("medication entry without a product code")
        return []
    status_code = _first(sa, "h:statusCode")
    code = status_code.get("code", "") if status_code is not None else ""
    status = _config()["medication_status"].get(code, "unknown")
    ms: dict[str, Any] = {"resourceType": "MedicationStatement", "status": status, "medicationCodeableConcept": med}
    for eff in sa.findall("h:effectiveTime", NS):
        low, high = _first(eff, "h:low"), _first(eff, "h:high")
        if low is not None or high is not None:
            period = {
                k: v
                for k, v in (
                    ("start", _dt(low.get("value")) if low is not None else None),
                    ("end", _dt(high.get("value")) if high is not None else None),
                )
                if v
            }
            if period:
                ms["effectivePeriod"] = period
            break
    dose = quantity(_first(sa, "h:doseQuantity"))
    route = concept(_first(sa, "h:routeCode"))
    dosage: dict[str, Any] = {}
    if dose:
        dosage["doseAndRate"] = [{"doseQuantity": dose}]
    if route:
        dosage["route"] = route
    if dosage:
        ms["dosage"] = [dosage]
    return [ms]


def _allergies(entry: Any, spec: dict[str, Any], out: Extracted) -> list[dict[str, Any]]:
    found = []
    for obs in entry.findall(".//h:observation", NS):
        agent = concept(_first(obs, "h:participant/h:participantRole/h:playingEntity/h:code"))
        if agent is None:
            continue
        allergy: dict[str, Any] = {"resourceType": "AllergyIntolerance", "code": agent}
        kind = _first(obs, "h:value")
        category = _config()["allergy_category"].get(kind.get("code", "") if kind is not None else "")
        if category:
            allergy["category"] = [category]
        onset = _when(_first(obs, "h:effectiveTime"))
        if onset:
            allergy["onsetDateTime"] = onset
        reactions = []
        for rel in obs.findall("h:entryRelationship/h:observation", NS):
            tids = {t.get("root") for t in rel.findall("h:templateId", NS)}
            if "2.16.840.1.113883.10.20.22.4.9" in tids:
                manifestation = concept(_first(rel, "h:value"))
                if manifestation:
                    reactions.append({"manifestation": [manifestation]})
        if reactions:
            allergy["reaction"] = reactions
        found.append(allergy)
        break
    return found


def _observations(entry: Any, spec: dict[str, Any], out: Extracted) -> list[dict[str, Any]]:
    found = []
    organizer = _first(entry, "h:organizer")
    observations = (
        organizer.findall("h:component/h:observation", NS)
        if organizer is not None
        else entry.findall("h:observation", NS)
    )
    for obs in observations:
        code = concept(_first(obs, "h:code"))
        if code is None:
            continue
        o: dict[str, Any] = {"resourceType": "Observation", "status": "final", "code": code}
        status = _first(obs, "h:statusCode")
        if status is not None and status.get("code") in ("active", "new"):
            o["status"] = "preliminary"
        if spec.get("category"):
            o["category"] = [{"coding": [{"system": CATEGORY, "code": spec["category"]}]}]
        when = _when(_first(obs, "h:effectiveTime"))
        if when:
            o["effectiveDateTime"] = when
        o.update(value_of(_first(obs, "h:value")))
        interp = concept(_first(obs, "h:interpretationCode"))
        if interp:
            o["interpretation"] = [interp]
        rng = _first(obs, "h:referenceRange/h:observationRange/h:value")
        if rng is not None:
            low, high = quantity(_first(rng, "h:low")), quantity(_first(rng, "h:high"))
            ref = {k: v for k, v in (("low", low), ("high", high)) if v}
            if ref:
                o["referenceRange"] = [ref]
        found.append(o)
    return found


def _immunizations(entry: Any, spec: dict[str, Any], out: Extracted) -> list[dict[str, Any]]:
    sa = _first(entry, "h:substanceAdministration")
    if sa is None:
        return []
    vaccine = concept(_first(sa, "h:consumable/h:manufacturedProduct/h:manufacturedMaterial/h:code"))
    when = _when(_first(sa, "h:effectiveTime"))
    if vaccine is None or not when:
        out.skipped.append("immunization entry without a vaccine code or date")
        return []
    imm: dict[str, Any] = {
        "resourceType": "Immunization",
        "vaccineCode": vaccine,
        "occurrenceDateTime": when,
        "status": "not-done" if sa.get("negationInd") == "true" else "completed",
    }
    lot = _text(sa, "h:consumable/h:manufacturedProduct/h:manufacturedMaterial/h:lotNumberText")
    if lot:
        imm["lotNumber"] = lot
    dose = quantity(_first(sa, "h:doseQuantity"))
    if dose:
        imm["doseQuantity"] = dose
    route = concept(_first(sa, "h:routeCode"))
    if route:
        imm["route"] = route
    return [imm]


_EXTRACTORS = {
    "problems": _problems,
    "medications": _medications,
    "allergies": _allergies,
    "results": _observations,
    "vitals": _observations,
    "immunizations": _immunizations,
}
