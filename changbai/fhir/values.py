"""Value semantics shared by indexing and search: date ranges, string normalisation, number precision.

FHIR dates are ranges: "2020-03" means the whole of March 2020. Both the stored values and the search
arguments become [low, high] intervals in milliseconds since the epoch (UTC), and the search prefixes
compare intervals as the specification says. Times without a zone are taken as UTC.
"""

from __future__ import annotations

import calendar
import re
import unicodedata
from datetime import UTC, datetime, timedelta
from decimal import Decimal, InvalidOperation
from functools import lru_cache

from changbai.errors import InvalidInput

_DATE = re.compile(
    r"(?P<y>\d{4})(?:-(?P<m>\d{2})(?:-(?P<d>\d{2})(?:T(?P<H>\d{2})(?::(?P<M>\d{2})(?::(?P<S>\d{2})(?:\.(?P<f>\d+))?)?)?"
    r"(?P<tz>Z|[+-]\d{2}:\d{2})?)?)?)?$"
)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
MIN_MS = -62135596800000  # 0001-01-01
MAX_MS = 253402300799999  # 9999-12-31T23:59:59.999


@lru_cache(maxsize=65536)
def date_range(value: str) -> tuple[int, int]:
    """The [low, high] interval in epoch milliseconds that a FHIR date/dateTime/instant covers. Cached:
    validation and indexing both read every date, and records share their dates."""
    m = _DATE.match(value.strip())
    if not m:
        raise InvalidInput(f"'{value}' is not a valid date")
    y = int(m["y"])
    try:
        if m["m"] is None:
            low = datetime(y, 1, 1, tzinfo=UTC)
            high = datetime(y + 1, 1, 1, tzinfo=UTC) if y < 9999 else None
        elif m["d"] is None:
            mo = int(m["m"])
            low = datetime(y, mo, 1, tzinfo=UTC)
            high = low + timedelta(days=calendar.monthrange(y, mo)[1])
        elif m["H"] is None:
            low = datetime(y, int(m["m"]), int(m["d"]), tzinfo=UTC)
            high = low + timedelta(days=1)
        else:
            sec = int(m["S"] or 0)
            frac = m["f"] or ""
            micro = int((frac + "000000")[:6]) if frac else 0
            low = datetime(y, int(m["m"]), int(m["d"]), int(m["H"]), int(m["M"] or 0), min(sec, 59), micro, tzinfo=UTC)
            tz = m["tz"]
            if tz and tz != "Z":
                sign = 1 if tz[0] == "+" else -1
                low -= sign * timedelta(hours=int(tz[1:3]), minutes=int(tz[4:6]))
            if m["S"] is None:
                step = timedelta(minutes=1) if m["M"] else timedelta(hours=1)
            elif frac:
                step = timedelta(microseconds=max(1, 10 ** (6 - min(len(frac), 6))))
            else:
                step = timedelta(seconds=1)
            high = low + step
    except ValueError as exc:
        raise InvalidInput(f"'{value}' is not a valid date: {exc}") from None
    low_ms = _ms(low)
    high_ms = (_ms(high) - 1) if high is not None else MAX_MS
    return low_ms, max(low_ms, high_ms)


def _ms(dt: datetime) -> int:
    delta = dt - _EPOCH
    return (delta.days * 86400 + delta.seconds) * 1000 + delta.microseconds // 1000


def ms_to_instant(ms: int) -> str:
    dt = _EPOCH + timedelta(milliseconds=ms)
    return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{dt.microsecond // 1000:03d}Z"


def now_instant() -> tuple[str, int]:
    """The current instant as FHIR text (millisecond precision, UTC) and as epoch milliseconds."""
    now = datetime.now(UTC)
    ms = _ms(now)
    return ms_to_instant(ms), ms


@lru_cache(maxsize=65536)
def normalise_string(value: str) -> str:
    """Case- and accent-insensitive form used by string search (the spec's default matching). Cached:
    indexing folds the same displays and names over and over."""
    if value.isascii():
        return " ".join(value.lower().split())
    decomposed = unicodedata.normalize("NFKD", value)
    stripped = "".join(c for c in decomposed if not unicodedata.combining(c))
    return " ".join(stripped.casefold().split())


def number_range(text: str) -> tuple[Decimal, Decimal, Decimal]:
    """A number with its implicit precision range: "100" is [99.5, 100.5), "1e2" likewise."""
    try:
        value = Decimal(text)
    except InvalidOperation:
        raise InvalidInput(f"'{text}' is not a valid number") from None
    if not value.is_finite():
        raise InvalidInput(f"'{text}' is not a valid number")
    exponent = value.as_tuple().exponent
    assert isinstance(exponent, int)
    half = Decimal(5) * Decimal(10) ** (exponent - 1)
    return value, value - half, value + half
