"""Mainland mobile numbers: +86 / 0086 prefixes, spaces, dashes and brackets removed; 1[3-9] + 9 digits."""

from __future__ import annotations

import re

_MOBILE = re.compile(r"^1[3-9]\d{9}$")


def normalise_mobile(value: str) -> str | None:
    """The 11-digit mobile number, or None when ``value`` is not a mainland mobile number."""
    digits = re.sub(r"[\s\-().（）]", "", value.strip())
    digits = "".join(chr(ord(c) - 0xFEE0) if "０" <= c <= "９" or c == "＋" else c for c in digits)
    for prefix in ("+86", "0086", "86"):
        if digits.startswith(prefix) and len(digits) == len(prefix) + 11:
            digits = digits[len(prefix) :]
            break
    return digits if _MOBILE.match(digits) else None


def normalise_phone(value: str) -> str | None:
    """A mobile number if it is one, else the digits of a landline (area code kept), else None."""
    mobile = normalise_mobile(value)
    if mobile:
        return mobile
    digits = re.sub(r"\D", "", value)
    if digits.startswith("86") and len(digits) > 11:
        digits = "0" + digits[2:]
    return digits if len(digits) >= 7 else None
