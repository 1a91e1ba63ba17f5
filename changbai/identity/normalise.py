"""A FHIR Patient reduced to the comparable facts the matcher uses (`NormalisedPatient`).

Only one value per field is compared (the primary name, mobile number and home address), so that the
online matcher (Python) and the batch dedupe (Splink SQL) compute exactly the same comparison vector;
the other names and numbers still feed the blocking keys.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from changbai.identity import residentid
from changbai.identity.chinese import has_han
from changbai.identity.divisions import divisions
from changbai.identity.names import NameKeys, name_keys
from changbai.identity.phones import normalise_mobile, normalise_phone
from changbai.settings import get_settings

#: Identifier types (v2 table 0203) that mean a national person number.
_NATIONAL_TYPES = {"NNCHN", "NI", "CZ"}


@dataclass(frozen=True)
class NormalisedPatient:
    key: str
    id_number: str | None = None
    id_valid: bool = False
    id_problems: tuple[str, ...] = ()
    name: NameKeys | None = None
    other_names: tuple[NameKeys, ...] = ()
    name_ko: str | None = None  # the name in hangul, when one is recorded (Korean-Chinese residents)
    birth_date: str | None = None  # YYYY-MM-DD (or YYYY-MM / YYYY when partial)
    sex: str | None = None  # male | female
    phone: str | None = None
    other_phones: tuple[str, ...] = ()
    province: str | None = None
    city: str | None = None
    county: str | None = None
    township: str | None = None
    address: str | None = None  # the address below the parsed divisions, simplified, no spaces
    postal_code: str | None = None
    warnings: tuple[str, ...] = field(default=(), compare=False)

    @property
    def usable(self) -> bool:
        """Enough to look for the person: an ID number, or a name with a birth date or phone."""
        return bool(self.id_number or (self.name and (self.birth_date or self.phone)) or self.phone)


def normalise_patient(
    patient: dict[str, Any], key: str | None = None, id_systems: Iterable[str] = ()
) -> NormalisedPatient:
    """Normalise a FHIR Patient. ``id_systems`` adds identifier systems compared as the person number
    (besides the resident ID system, which comes from settings)."""
    warnings: list[str] = []
    rid, other_id = _resident_id(patient.get("identifier") or [], set(id_systems), warnings)
    names = [k for k in (name_keys(_name_text(n)) for n in _ordered_names(patient.get("name") or [])) if k]
    phones = _phones(patient.get("telecom") or [])
    addr = _home_address(patient.get("address") or [])
    parsed = divisions().parse(_address_text(addr)) if addr else None
    birth = patient.get("birthDate") or (rid.birth_date if rid and rid.valid else None)
    if rid and rid.valid and patient.get("birthDate") and rid.birth_date != patient["birthDate"][:10]:
        warnings.append("birthDate differs from the resident ID's birth date")
    sex = patient.get("gender") if patient.get("gender") in ("male", "female") else None
    if sex is None and rid and rid.valid:
        sex = rid.sex
    address_rest = None
    if parsed is not None:
        address_rest = re.sub(r"[\s,，]", "", parsed.rest).lower() or None
    return NormalisedPatient(
        key=key or str(patient.get("id") or ""),
        id_number=rid.number if rid else other_id,
        id_valid=bool(rid and rid.valid),
        id_problems=rid.problems if rid else (),
        name=names[0] if names else None,
        other_names=tuple(names[1:]),
        name_ko=next((k.text for k in names if k.script == "hangul"), None),
        birth_date=birth[:10] if birth else None,
        sex=sex,
        phone=phones[0] if phones else None,
        other_phones=tuple(phones[1:]),
        province=parsed.province if parsed else None,
        city=parsed.city if parsed else None,
        county=parsed.county if parsed else None,
        township=parsed.township if parsed else None,
        address=address_rest,
        postal_code=(addr or {}).get("postalCode") or None,
        warnings=tuple(warnings),
    )


def _resident_id(
    identifiers: list[dict[str, Any]], extra_systems: set[str], warnings: list[str]
) -> tuple[residentid.ResidentId | None, str | None]:
    """The resident ID (by system, type or by validating value) and, failing that, an extra-system number."""
    system = get_settings().resident_id_system
    declared, recognised, other = None, None, None
    for ident in identifiers:
        value = str(ident.get("value") or "").strip()
        if not value:
            continue
        codes = {c.get("code") for c in (ident.get("type") or {}).get("coding") or []}
        if ident.get("system") == system or codes & _NATIONAL_TYPES:
            declared = declared or residentid.parse(value)
        elif residentid.looks_like(value):
            parsed = residentid.parse(value)
            if parsed.valid:
                recognised = recognised or parsed
        elif ident.get("system") in extra_systems and other is None:
            other = re.sub(r"\s", "", value)
    found = declared or recognised
    if found is not None and not found.valid:
        warnings.append(f"invalid resident ID {found.given!r}: {'; '.join(found.problems)}")
    return found, other


def _ordered_names(names: list[dict[str, Any]]) -> list[dict[str, Any]]:
    rank = {"official": 0, "usual": 1, None: 2}
    return sorted(names, key=lambda n: rank.get(n.get("use"), 3))


def _name_text(name: dict[str, Any]) -> str:
    family = name.get("family") or ""
    given = " ".join(name.get("given") or [])
    if family or given:
        return f"{family}{given}" if has_han(family + given) else f"{family} {given}".strip()
    return name.get("text") or ""


def _phones(telecom: list[dict[str, Any]]) -> list[str]:
    mobiles, others = [], []
    for t in telecom:
        if t.get("system") not in (None, "phone", "sms"):
            continue
        value = str(t.get("value") or "")
        mobile = normalise_mobile(value)
        if mobile:
            mobiles.append(mobile)
        elif (phone := normalise_phone(value)) is not None:
            others.append(phone)
    return list(dict.fromkeys(mobiles + others))


def _home_address(addresses: list[dict[str, Any]]) -> dict[str, Any] | None:
    if not addresses:
        return None
    rank = {"home": 0, None: 1}
    return sorted(addresses, key=lambda a: rank.get(a.get("use"), 2))[0]


def _address_text(addr: dict[str, Any]) -> str:
    parts = [addr.get("state"), addr.get("city"), addr.get("district"), *(addr.get("line") or [])]
    text = "".join(p for p in parts if p)
    return text or addr.get("text") or ""
