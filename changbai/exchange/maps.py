"""Loaders for the exchange data files (data/): v2 table maps, coding systems, units, character sets, events.

The maps are data so that an integration engineer can read and extend them without touching code; each
loader reads its file once.
"""

from __future__ import annotations

import csv
import json
from functools import cache
from pathlib import Path
from typing import Any

DATA = Path(__file__).parent / "data"
V2_TABLE_SYSTEM = "http://terminology.hl7.org/CodeSystem/v2-{}"


def _csv(name: str) -> list[dict[str, str]]:
    with (DATA / name).open(encoding="utf-8", newline="") as fh:
        return list(csv.DictReader(fh))


@cache
def _charsets() -> dict[str, str]:
    return {row["msh18"].strip().upper(): row["codec"].strip() for row in _csv("charsets.csv")}


def charset_codec(msh18: str) -> str | None:
    """Python codec for an MSH-18 value: '' means "not stated" (sniff), None means unsupported."""
    return _charsets().get(msh18.strip().upper())


@cache
def _coding_systems() -> dict[str, str]:
    return {row["v2"].strip().upper(): row["system"].strip() for row in _csv("coding_systems.csv")}


def coding_system(name: str) -> str | None:
    """FHIR system URI for a v2 coding-system name (CWE.3), e.g. LN -> http://loinc.org.

    HL7nnnn and 99zzz-style local names follow rules of their own: HL7 tables become
    terminology.hl7.org v2 code systems; other names are unknown here (the caller keeps them as sent).
    """
    if not name:
        return None
    key = name.strip().upper()
    found = _coding_systems().get(key)
    if found:
        return found
    if key.startswith("HL7") and key[3:].isdigit():
        return V2_TABLE_SYSTEM.format(key[3:].zfill(4))
    if key.startswith("2.16.") or key.startswith("1.2."):
        return f"urn:oid:{name.strip()}"
    return None


@cache
def _tables() -> dict[str, dict[str, Any]]:
    with (DATA / "v2_tables.json").open(encoding="utf-8") as fh:
        return {k: v for k, v in json.load(fh).items() if not k.startswith("_")}


def v2_map(table: str, code: str, default: Any = None) -> Any:
    """The FHIR value for ``code`` of v2 table ``table`` (see data/v2_tables.json), or ``default``."""
    t = _tables()[table]
    if code in t and not code.startswith("_"):
        return t[code]
    upper = code.upper()
    if upper in t:
        return t[upper]
    return t.get("_default", default)


def v2_table_system(table: str) -> str:
    return _tables()[table].get("_system", V2_TABLE_SYSTEM.format(table))


def v2_coding(table: str, code: str) -> dict[str, str] | None:
    """A Coding from a table whose entries are codes or {code, display, system} objects."""
    value = v2_map(table, code)
    if value is None:
        return None
    if isinstance(value, str):
        return {"system": v2_table_system(table), "code": value}
    coding = {"system": value.get("system", v2_table_system(table)), "code": value["code"]}
    if value.get("display"):
        coding["display"] = value["display"]
    return coding


@cache
def _identifier_systems() -> dict[tuple[str, str], str]:
    return {(row["by"], row["value"].upper()): row["system"] for row in _csv("identifier_systems.csv")}


def identifier_system(id_type: str, authority: str, resident_id_system: str) -> str | None:
    """The system for an identifier known by its type (CX.5) or authority name (CX.4.1), or None."""
    table = _identifier_systems()
    found = table.get(("type", id_type.upper())) or table.get(("authority", authority.upper()))
    return found.replace("{resident_id_system}", resident_id_system) if found else None


@cache
def _units() -> dict[str, str]:
    return {row["sent"]: row["ucum"] for row in _csv("units.csv")}


def ucum_unit(unit: str) -> str | None:
    """The UCUM code for a unit as laboratories send it, or None when it is not known to be UCUM."""
    return _units().get(unit.strip())


@cache
def events() -> dict[str, Any]:
    with (DATA / "events.json").open(encoding="utf-8") as fh:
        return json.load(fh)


def handler_kind(message_type: str) -> str | None:
    return events()["types"].get(message_type)


def event_rules(event: str) -> dict[str, Any]:
    return events()["events"].get(event, {})


def supported_version(version: str) -> bool:
    return version in events()["versions"]
