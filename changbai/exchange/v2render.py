"""FHIR resources -> HL7 v2.5.1 ER7 messages, as a hospital system would send them.

Used to turn the synthetic province's records into the ADT^A01/A03/A04, ORU^R01 and VXU^V04 traffic of
its hospitals (tests and benchmarks of the intake), and usable wherever the platform must speak v2 to a
legacy system. Only what the intake maps back is rendered; text is escaped with the standard escapes.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from changbai.exchange.er7 import Delimiters, escape

D = Delimiters()
CLASS_TO_PV1_2 = {"IMP": "I", "AMB": "O", "EMER": "E", "PRENC": "P", "HH": "H", "VR": "V"}
LOINC = "http://loinc.org"
CVX = "http://hl7.org/fhir/sid/cvx"
RESIDENT_ID = "urn:oid:2.16.156.10011.1.3"


def ts(value: str | None) -> str:
    """FHIR date/dateTime -> v2 DTM (keeping the zone)."""
    if not value:
        return ""
    if "T" not in value:
        return value.replace("-", "")
    parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    out = parsed.strftime("%Y%m%d%H%M%S")
    return out + (parsed.strftime("%z") if parsed.tzinfo else "")


def e(text: Any) -> str:
    return escape(str(text), D) if text not in (None, "") else ""


def _cx(ident: dict[str, Any], resident_id_system: str) -> str:
    id_type = ((ident.get("type") or {}).get("coding") or [{}])[0].get("code", "")
    if ident.get("system") == resident_id_system:
        return f"{e(ident['value'])}^^^CHN^NNCHN"
    authority = (ident.get("system") or "").rstrip("/").rsplit("/", 1)[-1]
    return f"{e(ident['value'])}^^^{e(authority)}^{e(id_type or 'MR')}"


def pid(patient: dict[str, Any], resident_id_system: str = RESIDENT_ID) -> str:
    ids = "~".join(_cx(i, resident_id_system) for i in patient.get("identifier", []) if i.get("value"))
    names = []
    for n in patient.get("name", []):
        given = n.get("given") or []
        names.append(
            f"{e(n.get('family', ''))}^{e(given[0] if given else '')}"
            if n.get("family") or given
            else e(n.get("text", ""))
        )
    gender = {"male": "M", "female": "F", "other": "O", "unknown": "U"}.get(patient.get("gender", ""), "")
    addr = ""
    for a in patient.get("address", [])[:1]:
        line = (a.get("line") or [""])[0]
        county = next(
            (x["valueCoding"]["code"] for x in a.get("extension", []) if x.get("valueCoding", {}).get("code")), ""
        )
        addr = (
            f"{e(line)}^^{e(a.get('city', ''))}^{e(a.get('state', ''))}^{e(a.get('postalCode', ''))}"
            f"^CHN^H^^{e(county[:6])}"
        )
    phone = next((f"{e(t['value'])}^PRN^PH" for t in patient.get("telecom", []) if t.get("system") == "phone"), "")
    fields = [
        "PID",
        "1",
        "",
        ids,
        "",
        "~".join(names),
        "",
        ts(patient.get("birthDate")),
        gender,
        "",
        "",
        addr,
        "",
        phone,
    ]
    return "|".join(fields)


def _msh(event: str, structure: str, facility: str, control_id: str, when: str) -> str:
    return (
        f"MSH|^~\\&|HIS|{e(facility)}|CHANGBAI|PROVINCE|{when}||{event}^{structure}|{e(control_id)}|P|2.5.1"
        "|||AL|NE|CHN|UNICODE UTF-8"
    )


def adt(
    patient: dict[str, Any],
    encounter: dict[str, Any],
    trigger: str,
    facility: str,
    control_id: str,
    resident_id_system: str = RESIDENT_ID,
) -> str:
    period = encounter.get("period") or {}
    when = ts(period.get("end") if trigger == "A03" else period.get("start")) or ts(patient.get("birthDate"))
    pclass = CLASS_TO_PV1_2.get((encounter.get("class") or {}).get("code", ""), "O")
    location = next((e(loc.get("location", {}).get("display", "")) for loc in encounter.get("location", [])), "")
    attending = next((e(p.get("individual", {}).get("display", "")) for p in encounter.get("participant", [])), "")
    pv1 = [
        "PV1",
        "1",
        pclass,
        f"^^^{location}",
        "",
        "",
        "",
        f"^{attending}" if attending else "",
        "",
        "",
        "",
        "",
        "",
        "",
        "",
        "",
        "",
        "",
        "",
        f"{e(encounter['id'])}^^^{e(facility)}^VN",
    ]
    pv1 += [""] * (44 - len(pv1))
    pv1 += [ts(period.get("start")), ts(period.get("end")) if trigger == "A03" else ""]
    return (
        "\r".join(
            [
                _msh(f"ADT^{trigger}", "ADT_A01", facility, control_id, when),
                f"EVN|{trigger}|{when}",
                pid(patient, resident_id_system),
                "|".join(pv1),
            ]
        )
        + "\r"
    )


def _obx(n: int, code: dict[str, Any], value: dict[str, Any], when: str) -> str | None:
    coding = next((c for c in code.get("coding", []) if c.get("system") == LOINC), None)
    if coding is None:
        return None
    ident = f"{e(coding['code'])}^{e(coding.get('display') or code.get('text', ''))}^LN"
    if "valueQuantity" in value:
        q = value["valueQuantity"]
        unit = f"{e(q.get('code') or q.get('unit', ''))}^^UCUM" if q.get("system") else e(q.get("unit", ""))
        return f"OBX|{n}|NM|{ident}||{q['value']}|{unit}|||||F|||{when}"
    if "valueString" in value:
        return f"OBX|{n}|ST|{ident}||{e(value['valueString'])}||||||F|||{when}"
    if "valueCodeableConcept" in value:
        c = (value["valueCodeableConcept"].get("coding") or [{}])[0]
        return f"OBX|{n}|CWE|{ident}||{e(c.get('code', ''))}^{e(c.get('display', ''))}^L||||||F|||{when}"
    return None


def oru(
    patient: dict[str, Any],
    observations: list[dict[str, Any]],
    facility: str,
    control_id: str,
    resident_id_system: str = RESIDENT_ID,
) -> str | None:
    """One ORU^R01 with an OBX per observation value (panel components each get their own OBX)."""
    obx: list[str] = []
    first_when = ""
    for obs in observations:
        when = ts(obs.get("effectiveDateTime"))
        first_when = first_when or when
        parts = obs.get("component") or [obs]
        for part in parts:
            line = _obx(len(obx) + 1, part.get("code", {}), part, when)
            if line:
                obx.append(line)
    if not obx:
        return None
    obr = (
        f"OBR|1|{e(control_id)}|{e(control_id)}^{e(facility)}|{e(observations[0]['code'].get('text', 'results'))}"
        f"|||{first_when}||||||||||||||{first_when}||LAB|F"
    )
    return (
        "\r".join(
            [_msh("ORU^R01", "ORU_R01", facility, control_id, first_when), pid(patient, resident_id_system), obr, *obx]
        )
        + "\r"
    )


def vxu(
    patient: dict[str, Any],
    immunization: dict[str, Any],
    facility: str,
    control_id: str,
    resident_id_system: str = RESIDENT_ID,
) -> str | None:
    coding = next((c for c in immunization.get("vaccineCode", {}).get("coding", []) if c.get("system") == CVX), None)
    if coding is None:
        return None
    when = ts(immunization.get("occurrenceDateTime"))
    dose = immunization.get("doseQuantity") or {}
    rxa = [
        "RXA",
        "0",
        "1",
        when,
        "",
        f"{e(coding['code'])}^{e(coding.get('display', ''))}^CVX",
        str(dose.get("value", "999")),
        "mL^mL^UCUM" if dose else "",
        "",
        "00^New record^NIP001",
        "",
        "",
        "",
        "",
        "",
        e(immunization.get("lotNumber", "")),
        "",
        "",
        "",
        "",
        "CP",
        "A",
    ]
    return (
        "\r".join(
            [
                _msh("VXU^V04", "VXU_V04", facility, control_id, when),
                pid(patient, resident_id_system),
                f"ORC|RE||{e(immunization['id'])}^{e(facility)}",
                "|".join(rxa),
            ]
        )
        + "\r"
    )
