"""CSV uploads for clinics without a system: templates per record kind, a per-row report, two load modes.

``template(kind)`` is the header row a clinic downloads (columns in data/csv_templates.json).
``read(kind, data, facility, mode)`` checks every row and returns a report plus the transaction Bundle of
what will be stored: in ``valid-rows`` mode the rows that passed, in ``all-or-nothing`` mode every row or,
if any row was refused, nothing. Files saved by Excel in China are often GB18030 rather than UTF-8; both
are read (a UTF-8 BOM is tolerated). Ids are deterministic (facility + kind + patient + code + date), so
uploading the same file twice changes nothing the second time.
"""

from __future__ import annotations

import csv
import io
import json
import re
import uuid
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from functools import cache
from typing import Any

from changbai.errors import InvalidInput
from changbai.exchange.datatypes import local_system
from changbai.exchange.maps import DATA, ucum_unit, v2_map

NAMESPACE = uuid.UUID("5d1f6a86-1f43-4c3e-9b0c-7c43c7a5e2a1")
MODES = ("valid-rows", "all-or-nothing")
_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_DATETIME = re.compile(r"^(\d{4}-\d{2}-\d{2})(?:[ T](\d{2}):(\d{2})(?::(\d{2}))?)?$")


@cache
def templates() -> dict[str, list[dict[str, Any]]]:
    with (DATA / "csv_templates.json").open(encoding="utf-8") as fh:
        return {k: v for k, v in json.load(fh).items() if not k.startswith("_")}


def template(kind: str) -> str:
    """The downloadable template: the header row (UTF-8 with BOM, so Excel shows Chinese correctly)."""
    columns = _columns(kind)
    return "\ufeff" + ",".join(c["name"] for c in columns) + "\r\n"


def _columns(kind: str) -> list[dict[str, Any]]:
    if kind not in templates():
        raise InvalidInput(f"unknown record kind '{kind}' (one of {', '.join(templates())})")
    return templates()[kind]


@dataclass
class RowResult:
    row: int  # 1-based data row (the header is row 0)
    status: str  # accepted | refused | not-loaded
    errors: list[str] = field(default_factory=list)


@dataclass
class Upload:
    kind: str
    mode: str
    rows: list[RowResult]
    bundle: dict[str, Any]

    @property
    def accepted(self) -> int:
        return sum(1 for r in self.rows if r.status == "accepted")

    @property
    def refused(self) -> int:
        return sum(1 for r in self.rows if r.status == "refused")

    def report(self) -> str:
        """The per-row report as CSV (row, status, reasons)."""
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\r\n")
        writer.writerow(["row", "status", "reasons"])
        for r in self.rows:
            writer.writerow([r.row, r.status, "; ".join(r.errors)])
        return out.getvalue()


def decode(data: bytes) -> str:
    if data.startswith(b"\xef\xbb\xbf"):
        return data[3:].decode("utf-8")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        try:
            return data.decode("gb18030")
        except UnicodeDecodeError as exc:
            raise InvalidInput("the file is neither UTF-8 nor GB18030 text") from exc


def read(
    kind: str,
    data: bytes,
    facility: str,
    mode: str = "valid-rows",
    resident_id_system: str = "urn:oid:2.16.156.10011.1.3",
) -> Upload:
    if mode not in MODES:
        raise InvalidInput(f"mode must be one of {', '.join(MODES)}")
    columns = _columns(kind)
    reader = csv.DictReader(io.StringIO(decode(data)))
    header = [h.strip() for h in (reader.fieldnames or [])]
    missing = [c["name"] for c in columns if c["required"] and c["name"] not in header]
    if missing:
        raise InvalidInput(f"the header lacks required column(s): {', '.join(missing)}")
    builder = _Builder(kind, facility, resident_id_system)
    rows: list[RowResult] = []
    entries_by_row: list[list[dict[str, Any]]] = []
    for n, raw in enumerate(reader, start=1):
        values = {(k or "").strip(): (v or "").strip() for k, v in raw.items()}
        if not any(values.values()):
            continue
        errors = _check(columns, values)
        entries: list[dict[str, Any]] = []
        if not errors:
            try:
                entries = builder.row(values)
            except ValueError as exc:
                errors.append(str(exc))
        rows.append(RowResult(n, "refused" if errors else "accepted", errors))
        entries_by_row.append(entries)
    if mode == "all-or-nothing" and any(r.status == "refused" for r in rows):
        for r in rows:
            if r.status == "accepted":
                r.status = "not-loaded"
                r.errors.append("another row was refused and the upload is all-or-nothing")
        entries_by_row = []
    seen: set[str] = set()
    entries = []
    for group in entries_by_row:
        for e in group:
            if e["fullUrl"] not in seen:
                seen.add(e["fullUrl"])
                entries.append(e)
    return Upload(kind, mode, rows, {"resourceType": "Bundle", "type": "transaction", "entry": entries})


def _check(columns: list[dict[str, Any]], values: dict[str, str]) -> list[str]:
    errors = []
    for col in columns:
        value = values.get(col["name"], "")
        if not value:
            if col["required"]:
                errors.append(f"{col['name']} is required")
            continue
        check = col.get("check")
        if check == "date" and not _valid_date(value):
            errors.append(f"{col['name']} '{value}' is not a date YYYY-MM-DD")
        elif check == "datetime" and _datetime(value) is None:
            errors.append(f"{col['name']} '{value}' is not a date (YYYY-MM-DD [HH:MM])")
        elif check == "gender" and v2_map("0001", _gender_key(value)) is None:
            errors.append(f"{col['name']} '{value}' is not 男/女/male/female/1/2")
        elif check == "number" and _number(value) is None:
            errors.append(f"{col['name']} '{value}' is not a number")
        elif check == "division" and not re.fullmatch(r"\d{6}(\d{3})?", value):
            errors.append(f"{col['name']} '{value}' is not a 6- or 9-digit division code")
        elif check == "resident_id":
            from changbai.identity.residentid import parse

            parsed = parse(value)
            if not parsed.valid:
                errors.append(f"{col['name']}: {'; '.join(parsed.problems)}")
    return errors


def _gender_key(value: str) -> str:
    return {"male": "M", "female": "F", "男": "男", "女": "女"}.get(value.lower(), value)


def _valid_date(value: str) -> bool:
    from datetime import date

    if not _DATE.match(value):
        return False
    try:
        date.fromisoformat(value)
    except ValueError:
        return False
    return True


def _datetime(value: str, tz: str = "+08:00") -> str | None:
    m = _DATETIME.match(value)
    if not m or not _valid_date(m.group(1)):
        return None
    if m.group(2) is None:
        return m.group(1)
    hh, mm, ss = int(m.group(2)), int(m.group(3)), int(m.group(4) or 0)
    if hh > 23 or mm > 59 or ss > 59:
        return None
    return f"{m.group(1)}T{hh:02d}:{mm:02d}:{ss:02d}{tz}"


def _number(value: str) -> int | float | None:
    try:
        d = Decimal(value)
    except InvalidOperation:
        return None
    if not d.is_finite():
        return None
    return int(d) if d == d.to_integral_value() and "." not in value else float(d)


class _Builder:
    def __init__(self, kind: str, facility: str, resident_id_system: str) -> None:
        self.kind = kind
        self.facility = facility
        self.mrn_system = local_system(facility)
        self.resident_id_system = resident_id_system

    def _id(self, *parts: str) -> str:
        return str(uuid.uuid5(NAMESPACE, "|".join((self.facility, *parts))))

    def _patient_ref(self, values: dict[str, str]) -> tuple[str, dict[str, Any]]:
        """A conditional create of the patient by the clinic's number (so results can come before demographics)."""
        pid = values["patient_id"]
        full = f"urn:uuid:{self._id('Patient', pid)}"
        entry = {
            "fullUrl": full,
            "resource": {"resourceType": "Patient", "identifier": [{"system": self.mrn_system, "value": pid}]},
            "request": {"method": "POST", "url": "Patient", "ifNoneExist": f"identifier={self.mrn_system}|{pid}"},
        }
        return full, entry

    def row(self, v: dict[str, str]) -> list[dict[str, Any]]:
        return getattr(self, f"_{self.kind}")(v)

    def _patients(self, v: dict[str, str]) -> list[dict[str, Any]]:
        from changbai.identity.residentid import parse

        identifiers = [{"system": self.mrn_system, "value": v["patient_id"]}]
        if v.get("resident_id"):
            identifiers.append({"system": self.resident_id_system, "value": parse(v["resident_id"]).number})
        patient: dict[str, Any] = {
            "resourceType": "Patient",
            "identifier": identifiers,
            "name": [{"text": v["name"]}],
            "gender": v2_map("0001", _gender_key(v["gender"])),
            "birthDate": v["birth_date"],
        }
        if v.get("phone"):
            patient["telecom"] = [{"system": "phone", "value": v["phone"]}]
        address: dict[str, Any] = {}
        if v.get("address"):
            address["text"] = v["address"]
        if v.get("division_code"):
            address["district"] = v["division_code"]
        if address:
            patient["address"] = [address]
        full = f"urn:uuid:{self._id('Patient', v['patient_id'])}"
        return [
            {
                "fullUrl": full,
                "resource": patient,
                "request": {"method": "PUT", "url": f"Patient?identifier={self.mrn_system}|{v['patient_id']}"},
            }
        ]

    def _observations(self, v: dict[str, str]) -> list[dict[str, Any]]:
        ref, patient = self._patient_ref(v)
        code: dict[str, Any] = {"system": "http://loinc.org", "code": v["code"]}
        if v.get("display"):
            code["display"] = v["display"]
        obs: dict[str, Any] = {
            "resourceType": "Observation",
            "status": "final",
            "code": {"coding": [code]},
            "subject": {"reference": ref},
            "effectiveDateTime": _datetime(v["date"]),
        }
        number = _number(v["value"])
        if number is not None:
            q: dict[str, Any] = {"value": number}
            if v.get("unit"):
                q["unit"] = v["unit"]
                ucum = ucum_unit(v["unit"])
                if ucum:
                    q.update({"system": "http://unitsofmeasure.org", "code": ucum})
            obs["valueQuantity"] = q
        else:
            obs["valueString"] = v["value"]
        obs["id"] = self._id("Observation", v["patient_id"], v["code"], v["date"])
        return [
            patient,
            {
                "fullUrl": f"urn:uuid:{obs['id']}",
                "resource": obs,
                "request": {"method": "PUT", "url": f"Observation/{obs['id']}"},
            },
        ]

    def _immunizations(self, v: dict[str, str]) -> list[dict[str, Any]]:
        ref, patient = self._patient_ref(v)
        coding: dict[str, Any] = {"system": "http://hl7.org/fhir/sid/cvx", "code": v["vaccine_code"]}
        if v.get("vaccine_name"):
            coding["display"] = v["vaccine_name"]
        imm: dict[str, Any] = {
            "resourceType": "Immunization",
            "status": "completed",
            "vaccineCode": {"coding": [coding]},
            "patient": {"reference": ref},
            "occurrenceDateTime": _datetime(v["date"]),
            "primarySource": True,
        }
        if v.get("lot"):
            imm["lotNumber"] = v["lot"]
        if v.get("dose_ml"):
            imm["doseQuantity"] = {
                "value": _number(v["dose_ml"]),
                "unit": "mL",
                "system": "http://unitsofmeasure.org",
                "code": "mL",
            }
        imm["id"] = self._id("Immunization", v["patient_id"], v["vaccine_code"], v["date"])
        return [
            patient,
            {
                "fullUrl": f"urn:uuid:{imm['id']}",
                "resource": imm,
                "request": {"method": "PUT", "url": f"Immunization/{imm['id']}"},
            },
        ]
