"""Resident identity numbers (公民身份号码, GB 11643-1999) and their older 15-digit form.

18 digits: 6-digit region (GB/T 2260) + birth date YYYYMMDD + 3-digit sequence (odd for men, even for
women) + an ISO 7064 MOD 11-2 check character (0-9 or X).
"""

from __future__ import annotations

_WEIGHTS = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
_CHECK = "10X98765432"


def check_char(first17: str) -> str:
    """The MOD 11-2 check character of the first 17 digits."""
    total = sum(int(c) * w for c, w in zip(first17, _WEIGHTS, strict=True))
    return _CHECK[total % 11]


def make(region: str, birth_date: str, sequence: int) -> str:
    """An 18-digit number from a region code, an ISO birth date and a sequence 0-999."""
    body = f"{region}{birth_date.replace('-', '')}{sequence:03d}"
    return body + check_char(body)


def is_valid(number: str) -> bool:
    """Format and check character (not whether the region or date exist)."""
    if len(number) != 18 or not number[:17].isdigit():
        return False
    return number[17] == check_char(number[:17])


def sex_of(number: str) -> str:
    """'male' or 'female' from the parity of the sequence's last digit (18- or 15-digit numbers)."""
    digit = int(number[16] if len(number) == 18 else number[14])
    return "male" if digit % 2 else "female"


def to_15(number: str) -> str:
    """The pre-1999 15-digit form: region + YYMMDD + sequence, no check character."""
    return number[:6] + number[8:17]
