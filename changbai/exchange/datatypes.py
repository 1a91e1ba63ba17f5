"""HL7 v2 data types (TS/DTM, CX, XPN, XAD, XTN, CWE, XCN, SN, PL) -> FHIR R4 data types.

Each converter takes one parsed repetition (components -> subcomponents, see er7.Rep) and returns a FHIR
value or None when the repetition carries nothing. Code translation goes through :class:`Coder`, which
knows the sending facility and the ConceptMap hook, and collects the codes it could not map.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any

from changbai.exchange.er7 import Rep
from changbai.exchange.maps import coding_system, identifier_system, ucum_unit, v2_map

#: The resident ID (居民身份证号码) system unless the platform's settings name another.
RESIDENT_ID_SYSTEM = "urn:oid:2.16.156.10011.1.3"

#: ``translate(system, code, facility) -> Coding | None``: the ConceptMap hook for local codes; ``system``
#: is the local system URI the code is kept under (see local_code_system).
Translate = Callable[[str, str, str], "dict[str, Any] | None"]

#: Where identifiers and codes from an authority/system we cannot name get their system URI.
LOCAL_SYSTEM = "https://changbai.example/fhir/sid/v2/{}"


#: A facility's own code list (the terminology module's local code maps use the same URI).
LOCAL_CODES = "https://changbai.example/fhir/CodeSystem/local/{}"


def local_code_system(system_name: str, facility: str) -> str:
    """The system of a code the v2 message calls local: names 'L', '99zzz' (HL7's local-table convention)
    or none are the sending facility's own list; any other unknown name is kept as a named system."""
    name = system_name.strip()
    if not name or name.upper() == "L" or name.startswith("99"):
        return LOCAL_CODES.format(re.sub(r"[^A-Za-z0-9.-]+", "-", facility).strip("-") or "unknown")
    return local_system(name)


def local_system(name: str) -> str:
    """A platform-local system URI for a v2 name (assigning authority, local coding system)."""
    return LOCAL_SYSTEM.format(re.sub(r"[^A-Za-z0-9._~-]+", "-", name).strip("-") or "unknown")


UCUM = "http://unitsofmeasure.org"

_TS = re.compile(r"^(\d{4})(\d{2})?(\d{2})?(\d{2})?(\d{2})?(\d{2})?(\.\d{1,4})?([+-]\d{4})?$")


class BadValue(ValueError):
    """A value that does not have the shape its data type requires (mapped to ERR code 102)."""


def c(rep: Rep | None, n: int, sub: int = 1) -> str:
    """Component ``n`` (1-based), subcomponent ``sub`` of a repetition; '' when absent."""
    if not rep or n > len(rep):
        return ""
    subs = rep[n - 1]
    return subs[sub - 1].strip() if sub <= len(subs) else ""


def ts_to_datetime(value: str, default_tz: str = "") -> str | None:
    """v2 TS/DTM -> FHIR dateTime, keeping the precision sent. Raises BadValue for a malformed value.

    FHIR needs a zone when there is a time; a time without one gets ``default_tz`` (the platform's
    zone) or is cut to the date when no default is given.
    """
    value = value.strip()
    if not value:
        return None
    m = _TS.match(value)
    if not m:
        raise BadValue(f"'{value}' is not a date/time (YYYY[MM[DD[HH[MM[SS[.S]]]]]][+/-ZZZZ])")
    y, mo, d, h, mi, s, frac, tz = m.groups()
    if (mo and not 1 <= int(mo) <= 12) or (d and not 1 <= int(d) <= 31) or (h and int(h) > 23) or (mi and int(mi) > 59):
        raise BadValue(f"'{value}' is not a valid date/time")
    out = y
    if mo:
        out += f"-{mo}"
    if d:
        out += f"-{d}"
    if not h:
        return out
    zone = f"{tz[:3]}:{tz[3:]}" if tz else default_tz
    if not zone:
        return out
    out += f"T{h}:{mi or '00'}:{s or '00'}{frac or ''}"
    return out + zone


def ts_to_date(value: str) -> str | None:
    dt = ts_to_datetime(value)
    return dt[:10] if dt else None


def decimal_value(text: str) -> int | float | None:
    """A v2 NM as a JSON number (int when integral, so 72 stays 72), or None when not numeric."""
    text = text.strip()
    if not text:
        return None
    try:
        d = Decimal(text)
    except InvalidOperation:
        return None
    if not d.is_finite():
        return None
    return int(d) if d == d.to_integral_value() and "." not in text else float(d)


@dataclass
class Coder:
    """Turns v2 coded values into FHIR codings for one sending facility."""

    facility: str
    translate: Translate | None = None
    unmapped: list[dict[str, str]] = field(default_factory=list)

    def coding(self, code: str, display: str, system_name: str, where: str) -> list[dict[str, Any]]:
        if not code and not display:
            return []
        system = coding_system(system_name)
        out: list[dict[str, Any]] = []
        if system is None:
            local = local_code_system(system_name, self.facility)
            original: dict[str, Any] = {"system": local, "code": code} if code else {}
            translated = self.translate(local, code, self.facility) if self.translate and code else None
            if translated:
                out.append(dict(translated))
            elif code and system_name:  # a bare table value (IS/ID) is not reported as unmapped
                self.unmapped.append(
                    {"where": where, "system": system_name, "code": code, "display": display, "facility": self.facility}
                )
            if original:
                if display:
                    original["display"] = display
                out.append(original)
            return out
        coding: dict[str, Any] = {"system": system}
        if code:
            coding["code"] = code
        if display:
            coding["display"] = display
        return [coding] if code else []

    def concept(self, rep: Rep | None, where: str) -> dict[str, Any] | None:
        """CE/CWE/CNE -> CodeableConcept (both triplets; text from CWE.9 or the first display)."""
        if not rep:
            return None
        codings = self.coding(c(rep, 1), c(rep, 2), c(rep, 3), where)
        codings += self.coding(c(rep, 4), c(rep, 5), c(rep, 6), where)
        text = c(rep, 9) or c(rep, 2) or c(rep, 5)
        if not codings and not text:
            return None
        cc: dict[str, Any] = {}
        if codings:
            cc["coding"] = codings
        if text:
            cc["text"] = text
        return cc


def authority_system(hd_ns: str, hd_uid: str, hd_type: str) -> str:
    """An identifier system from an HD (namespace^universal id^type): OIDs become urn:oid, UUIDs urn:uuid,
    a URI is kept, anything else is a platform-local system named after the namespace."""
    uid_type = hd_type.upper()
    if hd_uid:
        if uid_type == "ISO" or re.fullmatch(r"[0-2](\.\d+)+", hd_uid):
            return f"urn:oid:{hd_uid}"
        if uid_type == "UUID":
            return f"urn:uuid:{hd_uid}"
        if uid_type in ("URI", "URL") or "://" in hd_uid:
            return hd_uid
    return local_system(hd_ns or hd_uid)


def cx_identifier(
    rep: Rep, default_authority: str = "", resident_id_system: str = RESIDENT_ID_SYSTEM
) -> dict[str, Any] | None:
    """CX -> Identifier: value CX.1, system from the assigning authority CX.4 (or CX.6), type CX.5.

    National identifiers known by type or authority (data/identifier_systems.csv: the resident ID
    number, ...) get their national system, so that the master index can match on them."""
    value = c(rep, 1)
    if not value:
        return None
    ns, uid, uidt = c(rep, 4, 1), c(rep, 4, 2), c(rep, 4, 3)
    if not (ns or uid):
        ns, uid, uidt = c(rep, 6, 1), c(rep, 6, 2), c(rep, 6, 3)
    id_type = c(rep, 5)
    system = identifier_system(id_type, ns, resident_id_system)
    if system is None:
        system = authority_system(ns, uid, uidt) if (ns or uid) else authority_system(default_authority, "", "")
    ident: dict[str, Any] = {"value": value, "system": system}
    if id_type:
        display = v2_map("0203", id_type)
        coding = {"system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": id_type}
        if isinstance(display, str):
            coding["display"] = display
        ident["type"] = {"coding": [coding]}
        if id_type == "MR":
            ident["use"] = "usual"
    start, end = c(rep, 7), c(rep, 8)
    if start or end:
        period = {k: v for k, v in (("start", _soft_dt(start)), ("end", _soft_dt(end))) if v}
        if period:
            ident["period"] = period
    return ident


def _soft_dt(value: str) -> str | None:
    try:
        return ts_to_datetime(value)
    except BadValue:
        return None


def xpn_name(rep: Rep) -> dict[str, Any] | None:
    """XPN -> HumanName. A Chinese name sent whole in XPN.1 stays as family + text."""
    family = c(rep, 1)
    given = [g for g in (c(rep, 2), c(rep, 3)) if g]
    if not family and not given:
        return None
    name: dict[str, Any] = {}
    if family:
        name["family"] = family
    if given:
        name["given"] = given
    if c(rep, 4):
        name["suffix"] = [c(rep, 4)]
    if c(rep, 5):
        name["prefix"] = [c(rep, 5)]
    use = v2_map("0200", c(rep, 7)) if c(rep, 7) else None
    if use:
        name["use"] = use
    return name


def xad_address(rep: Rep) -> dict[str, Any] | None:
    """XAD -> Address (XAD.9 county code goes to district: GB/T 2260 codes in Chinese messages)."""
    lines = [x for x in (c(rep, 1), c(rep, 2)) if x]
    addr: dict[str, Any] = {}
    if lines:
        addr["line"] = lines
    for key, n in (("city", 3), ("state", 4), ("postalCode", 5), ("country", 6), ("district", 9)):
        if c(rep, n):
            addr[key] = c(rep, n)
    if not addr:
        return None
    kind = v2_map("0190", c(rep, 7)) if c(rep, 7) else None
    if isinstance(kind, dict):
        addr.update(kind)
    return addr


def xtn_telecom(rep: Rep, default_use: str | None = None) -> dict[str, Any] | None:
    """XTN -> ContactPoint: value from XTN.1, or e-mail XTN.4, or the number parts XTN.5-8."""
    equip = c(rep, 3)
    value = c(rep, 1)
    if c(rep, 4) and (equip in ("Internet", "X.400") or not value):
        value = c(rep, 4)
    if not value:
        parts = [c(rep, 5) and f"+{c(rep, 5)}", c(rep, 6), c(rep, 7), c(rep, 8) and f"ext. {c(rep, 8)}"]
        value = " ".join(p for p in parts if p)
    if not value:
        return None
    cp: dict[str, Any] = {"system": v2_map("0202", equip) or ("email" if "@" in value else "phone"), "value": value}
    use = v2_map("0201", c(rep, 2)) if c(rep, 2) else default_use
    if use:
        cp["use"] = use
    return cp


def xcn_reference(rep: Rep | None) -> dict[str, Any] | None:
    """XCN -> a Reference to a practitioner by identifier and display (no Practitioner is invented)."""
    if not rep:
        return None
    ident, family, given = c(rep, 1), c(rep, 2), c(rep, 3)
    display = " ".join(x for x in (c(rep, 6), given, family) if x)
    if not ident and not display:
        return None
    ref: dict[str, Any] = {"type": "Practitioner"}
    if ident:
        ns, uid, uidt = c(rep, 9, 1), c(rep, 9, 2), c(rep, 9, 3)
        ref["identifier"] = {"value": ident}
        if ns or uid:
            ref["identifier"]["system"] = authority_system(ns, uid, uidt)
    if display:
        ref["display"] = display
    return ref


def pl_display(rep: Rep | None) -> str:
    """PL (point of care^room^bed^facility^status^type^building^floor) as readable text."""
    if not rep:
        return ""
    parts = [c(rep, 4), c(rep, 7), c(rep, 8), c(rep, 1), c(rep, 2), c(rep, 3)]
    return " ".join(p for p in parts if p)


def quantity(value: str, unit_rep: Rep | None) -> dict[str, Any] | None:
    """NM + unit (CWE) -> Quantity; the UCUM code is set only when the unit is known UCUM."""
    number = decimal_value(value)
    if number is None:
        return None
    q: dict[str, Any] = {"value": number}
    unit, unit_text, unit_sys = c(unit_rep, 1), c(unit_rep, 2), c(unit_rep, 3)
    if unit or unit_text:
        q["unit"] = unit_text or unit
        code = unit if unit_sys.upper() == "UCUM" else ucum_unit(unit or unit_text)
        if code:
            q["system"] = UCUM
            q["code"] = code
    return q


_COMPARATORS = {"<", "<=", ">", ">="}


def structured_numeric(rep: Rep, unit_rep: Rep | None) -> dict[str, Any] | None:
    """SN (comparator^num1^separator^num2) -> {'valueQuantity'|'valueRange'|'valueRatio': ...}."""
    comp, n1, sep, n2 = c(rep, 1), c(rep, 2), c(rep, 3), c(rep, 4)
    if sep == "-" and n1 and n2:
        low, high = quantity(n1, unit_rep), quantity(n2, unit_rep)
        if low and high:
            return {"valueRange": {"low": low, "high": high}}
    if sep in (":", "/") and n1 and n2:
        num, den = quantity(n1, None), quantity(n2, None)
        if num and den:
            return {"valueRatio": {"numerator": num, "denominator": den}}
    q = quantity(n1, unit_rep)
    if q is None:
        return None
    if comp in _COMPARATORS:
        q["comparator"] = comp
    return {"valueQuantity": q}


def reference_range(text: str, unit_rep: Rep | None) -> dict[str, Any] | None:
    """OBX-7 ("3.5-5.0", ">10", "<5", or words) -> Observation.referenceRange entry."""
    text = text.strip()
    if not text:
        return None
    m = re.fullmatch(r"\s*(-?[\d.]+)\s*[-~–]\s*(-?[\d.]+)\s*", text)
    if m:
        low, high = quantity(m.group(1), unit_rep), quantity(m.group(2), unit_rep)
        if low and high:
            return {"low": low, "high": high, "text": text}
    m = re.fullmatch(r"\s*([<>]=?)\s*(-?[\d.]+)\s*", text)
    if m:
        q = quantity(m.group(2), unit_rep)
        if q:
            return {"high" if m.group(1).startswith("<") else "low": q, "text": text}
    return {"text": text}
