"""Resident identity card numbers (居民身份证号码, GB 11643-1999) and the old 15-digit numbers.

An 18-digit number is: 6-digit region (GB/T 2260) + birth date YYYYMMDD + 3-digit sequence (odd = male)
+ an ISO 7064 MOD 11-2 check character (0-9 or X). A 15-digit number (issued before 1999) has a 2-digit
year and no check character; it converts to 18 digits by inserting "19" and computing the check.

Retired region codes: a number keeps the region code of the place and time it was issued, and many
county codes have been retired since (九台市 220181 became 九台区 220113). A number whose province is
known but whose 6-digit code is not in today's division table is therefore *valid*, with the warning
``region-unlisted`` and its region resolved to the nearest listed ancestor; an unknown province is invalid.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date

from changbai.identity.divisions import divisions

_WEIGHTS = [pow(2, 17 - i, 11) for i in range(17)]
_CHECK = "10X98765432"
_SHAPE = re.compile(r"^(\d{17}[\dX]|\d{15})$")


@dataclass(frozen=True)
class ResidentId:
    given: str  # as written
    number: str  # 18-digit form when it could be made, else the cleaned input
    valid: bool
    problems: tuple[str, ...] = ()
    warnings: tuple[str, ...] = ()
    region: str | None = None  # the listed division the number's region resolves to
    birth_date: str | None = None  # YYYY-MM-DD
    sex: str | None = None  # male | female
    converted: bool = False  # came as a 15-digit number


def check_character(first17: str) -> str:
    """ISO 7064 MOD 11-2 check character of the first 17 digits."""
    total = sum(int(d) * w for d, w in zip(first17, _WEIGHTS, strict=True))
    return _CHECK[total % 11]


def clean(value: str) -> str:
    """Strip spaces and dashes, full-width digits to ASCII, lower-case x to X."""
    value = value.translate({0x3000: None}).strip()
    value = "".join(chr(ord(c) - 0xFEE0) if "０" <= c <= "９" or c in "ｘＸ" else c for c in value)
    return re.sub(r"[\s\-]", "", value).upper()


def parse(value: str, today: date | None = None) -> ResidentId:
    """Validate a resident ID number; an invalid one is returned with ``valid=False`` and its problems."""
    today = today or date.today()
    number = clean(value)
    if not _SHAPE.match(number):
        return ResidentId(value, number, False, ("not 15 or 18 digits (the 18th may be X)",))
    converted = len(number) == 15
    if converted:
        number = number[:6] + "19" + number[6:]
        number += check_character(number)
    problems: list[str] = []
    warnings: list[str] = []
    if check_character(number[:17]) != number[17]:
        problems.append("wrong check digit")
    region, region_problem = _region(number[:6])
    if region_problem == "unknown":
        problems.append(f"unknown region {number[:6]}")
    elif region_problem:
        warnings.append(region_problem)
    birth = _birth_date(number[6:14], today)
    if birth is None:
        problems.append(f"impossible birth date {number[6:14]}")
    sex = "male" if int(number[16]) % 2 else "female"
    return ResidentId(
        given=value,
        number=number,
        valid=not problems,
        problems=tuple(problems),
        warnings=tuple(warnings),
        region=region,
        birth_date=birth.isoformat() if birth else None,
        sex=sex,
        converted=converted,
    )


def _region(code: str) -> tuple[str | None, str | None]:
    table = divisions()
    if table.get(code):
        return code, None
    for ancestor in (code[:4] + "00", code[:2] + "0000"):
        if table.get(ancestor):
            return ancestor, "region-unlisted"
    return None, "unknown"


def _birth_date(text: str, today: date) -> date | None:
    try:
        born = date(int(text[:4]), int(text[4:6]), int(text[6:8]))
    except ValueError:
        return None
    if born > today or born.year < 1870:
        return None
    return born


def looks_like(value: str) -> bool:
    """True when the value has the shape of a resident ID (so an unknown system may still be one)."""
    return bool(_SHAPE.match(clean(value)))
