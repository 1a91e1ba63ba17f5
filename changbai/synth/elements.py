"""Small builders for FHIR R4 data types (Reference, CodeableConcept, Quantity, Money, dates) used by
every part of the generator. Dates are day numbers (``date.toordinal()``) until they are written."""

from __future__ import annotations

from datetime import date
from functools import cache
from typing import Any

from changbai.synth import systems

TZ = "+08:00"


@cache
def day(ordinal: int) -> str:
    """ISO date of a day number."""
    return date.fromordinal(ordinal).isoformat()


def instant(ordinal: int, minute_of_day: int) -> str:
    """A dateTime in China Standard Time."""
    return f"{day(ordinal)}T{minute_of_day // 60:02d}:{minute_of_day % 60:02d}:00{TZ}"


def ordinal(iso: str) -> int:
    return date.fromisoformat(iso).toordinal()


def ref(rtype: str, rid: str, display: str | None = None) -> dict[str, Any]:
    r: dict[str, Any] = {"reference": f"{rtype}/{rid}"}
    if display:
        r["display"] = display
    return r


def coding(system: str, code: str, display: str | None = None) -> dict[str, Any]:
    c = {"system": system, "code": code}
    if display:
        c["display"] = display
    return c


def concept(system: str, code: str, display: str | None = None, text: str | None = None) -> dict[str, Any]:
    cc: dict[str, Any] = {"coding": [coding(system, code, display)]}
    if text:
        cc["text"] = text
    return cc


def quantity(value: float, unit: str, code: str | None = None) -> dict[str, Any]:
    return {"value": value, "unit": unit, "system": systems.UCUM, "code": code or unit}


def money(value: float) -> dict[str, Any]:
    return {"value": round(value, 2), "currency": "CNY"}


def icd10(code: str, display: str) -> dict[str, Any]:
    return {"coding": [{"system": systems.ICD10, "code": code, "display": display}], "text": display}
