"""Comparison of two normalised patients, field by field, into levels — once in Python, once in SQL.

Each field has an ordered list of levels; a pair gets the first level whose condition holds, or -1
("missing") when either side lacks the field (missing carries no evidence either way). The Python
functions serve the online matcher; the SQL conditions, written over the flat row of `to_row`, give
Splink exactly the same levels for the batch dedupe (tests/identity/test_batch.py checks they agree).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from rapidfuzz.distance import OSA, JaroWinkler

from changbai.identity.chinese import ascii_key
from changbai.identity.names import shape_key
from changbai.identity.normalise import NormalisedPatient

MISSING = -1


def to_row(p: NormalisedPatient) -> dict[str, Any]:
    """The flat row (one column per compared key) that the SQL conditions and blocking keys read."""
    n = p.name
    return {
        "unique_id": p.key,
        "id_number": p.id_number,
        # valid: a resident ID that validates; invalid: one that does not; other: a number of another
        # configured person-identifier system, which has no check to pass or fail.
        "id_status": None if not p.id_number else "valid" if p.id_valid else "invalid" if p.id_problems else "other",
        "name_text": n.text if n else None,
        "name_script": n.script if n else None,
        "name_ko": p.name_ko,
        "name_shape": shape_key(n.text) if n and n.script == "han" else None,
        "name_tones": (n.tones or None) if n else None,
        "name_plain": n.plain if n else None,
        "name_alt": n.alt if n else None,
        "name_fuzzy": n.fuzzy if n else None,
        "name_fuzzy_alt": n.fuzzy_alt if n else None,
        "surname": n.surname if n else None,
        "birth_date": p.birth_date.replace("-", "") if p.birth_date else None,
        "sex": p.sex,
        "phone": p.phone,
        "province": p.province,
        "city": p.city,
        "county": p.county,
        "township": p.township,
        "address": ascii_key(p.address) or None if p.address else None,
        "postal_code": p.postal_code,
    }


Row = dict[str, Any]


@dataclass(frozen=True)
class Level:
    name: str
    test: Callable[[Row, Row], bool]
    sql: str


@dataclass(frozen=True)
class Comparison:
    field: str
    present: Callable[[Row], bool]
    present_sql: str  # condition over one side, with {s} for l / r
    levels: tuple[Level, ...]

    def level(self, a: Row, b: Row) -> int:
        if not (self.present(a) and self.present(b)):
            return MISSING
        for i, level in enumerate(self.levels):
            if level.test(a, b):
                return i
        return len(self.levels) - 1


def _jw(a: str, b: str) -> float:
    return JaroWinkler.similarity(a, b)


def _name_jw(a: Row, b: Row) -> float:
    return max(_jw(a["name_plain"], b["name_plain"]), _jw(a["name_plain"], b["name_alt"]))


_NAME_JW_SQL = (
    "greatest(jaro_winkler_similarity(l.name_plain, r.name_plain), jaro_winkler_similarity(l.name_plain, r.name_alt))"
)


def _eq(a: Row, b: Row, col: str) -> bool:
    return a[col] is not None and a[col] == b[col]


def _place_compatible(a: Row, b: Row) -> bool:
    """Not known to be in different counties (or postcodes)."""
    return all(a[c] is None or b[c] is None or a[c] == b[c] for c in ("county", "postal_code"))


_PLACE_COMPATIBLE_SQL = (
    "(l.county IS NULL OR r.county IS NULL OR l.county = r.county) AND "
    "(l.postal_code IS NULL OR r.postal_code IS NULL OR l.postal_code = r.postal_code)"
)


def _address_close(a: Row, b: Row) -> bool:
    return (
        a["address"] is not None
        and b["address"] is not None
        and _jw(a["address"], b["address"]) >= 0.9
        and _place_compatible(a, b)
    )


_ADDRESS_CLOSE_SQL = f"jaro_winkler_similarity(l.address, r.address) >= 0.9 AND {_PLACE_COMPATIBLE_SQL}"


def _swap_md(a: str, b: str) -> bool:
    return len(a) == 8 and len(b) == 8 and a[:4] == b[:4] and a[4:6] == b[6:8] and a[6:8] == b[4:6]


COMPARISONS: tuple[Comparison, ...] = (
    Comparison(
        "id_number",
        lambda r: bool(r["id_number"]),
        "{s}.id_number IS NOT NULL",
        (
            Level(
                "exact-valid",
                lambda a, b: a["id_number"] == b["id_number"] and a["id_status"] == b["id_status"] == "valid",
                "l.id_number = r.id_number AND l.id_status = 'valid' AND r.id_status = 'valid'",
            ),
            Level(
                "exact-other",
                lambda a, b: a["id_number"] == b["id_number"] and a["id_status"] == b["id_status"] == "other",
                "l.id_number = r.id_number AND l.id_status = 'other' AND r.id_status = 'other'",
            ),
            Level("exact-unverified", lambda a, b: a["id_number"] == b["id_number"], "l.id_number = r.id_number"),
            Level(
                "one-typo",
                lambda a, b: OSA.distance(a["id_number"], b["id_number"]) <= 1,
                "damerau_levenshtein(l.id_number, r.id_number) <= 1",
            ),
            Level(
                "different-valid",
                lambda a, b: a["id_status"] == b["id_status"] == "valid",
                "l.id_status = 'valid' AND r.id_status = 'valid'",
            ),
            Level("different", lambda a, b: True, "ELSE"),
        ),
    ),
    Comparison(
        "name",
        lambda r: bool(r["name_plain"]),
        "{s}.name_plain IS NOT NULL",
        (
            Level("exact", lambda a, b: a["name_text"] == b["name_text"], "l.name_text = r.name_text"),
            Level(
                "homophone-tones",
                lambda a, b: bool(a["name_tones"]) and a["name_tones"] == b["name_tones"],
                "l.name_tones = r.name_tones",
            ),
            Level(
                "pinyin",
                lambda a, b: a["name_plain"] in (b["name_plain"], b["name_alt"]),
                "l.name_plain IN (r.name_plain, r.name_alt)",
            ),
            Level("same-hangul", lambda a, b: _eq(a, b, "name_ko"), "l.name_ko = r.name_ko"),
            Level(
                "fuzzy-pinyin-or-shape",
                lambda a, b: (
                    a["name_fuzzy"] in (b["name_fuzzy"], b["name_fuzzy_alt"])
                    or (a["name_shape"] is not None and a["name_shape"] == b["name_shape"])
                ),
                "l.name_fuzzy IN (r.name_fuzzy, r.name_fuzzy_alt) OR l.name_shape = r.name_shape",
            ),
            Level(
                "close-latin",
                lambda a, b: "latin" in (a["name_script"], b["name_script"]) and _name_jw(a, b) >= 0.94,
                f"'latin' IN (l.name_script, r.name_script) AND {_NAME_JW_SQL} >= 0.94",
            ),
            # Two Han names this close that are not homophones differ by a real character: in Chinese
            # records that is more often a sibling (长林/长兰) than a slip, hence its own level.
            Level("close-han", lambda a, b: _name_jw(a, b) >= 0.94, f"{_NAME_JW_SQL} >= 0.94"),
            Level("same-surname", lambda a, b: a["surname"] == b["surname"], "l.surname = r.surname"),
            Level("similar", lambda a, b: _name_jw(a, b) >= 0.82, f"{_NAME_JW_SQL} >= 0.82"),
            Level("different", lambda a, b: True, "ELSE"),
        ),
    ),
    Comparison(
        "birth_date",
        lambda r: bool(r["birth_date"]),
        "{s}.birth_date IS NOT NULL",
        (
            Level("exact", lambda a, b: a["birth_date"] == b["birth_date"], "l.birth_date = r.birth_date"),
            Level(
                "one-typo-or-swap",
                lambda a, b: (
                    OSA.distance(a["birth_date"], b["birth_date"]) <= 1 or _swap_md(a["birth_date"], b["birth_date"])
                ),
                "damerau_levenshtein(l.birth_date, r.birth_date) <= 1 OR (length(l.birth_date) = 8 AND "
                "length(r.birth_date) = 8 AND substr(l.birth_date, 1, 4) = substr(r.birth_date, 1, 4) AND "
                "substr(l.birth_date, 5, 2) = substr(r.birth_date, 7, 2) AND "
                "substr(l.birth_date, 7, 2) = substr(r.birth_date, 5, 2))",
            ),
            Level(
                "two-typos",
                lambda a, b: OSA.distance(a["birth_date"], b["birth_date"]) <= 2,
                "damerau_levenshtein(l.birth_date, r.birth_date) <= 2",
            ),
            Level("different", lambda a, b: True, "ELSE"),
        ),
    ),
    Comparison(
        "sex",
        lambda r: bool(r["sex"]),
        "{s}.sex IS NOT NULL",
        (
            Level("equal", lambda a, b: a["sex"] == b["sex"], "l.sex = r.sex"),
            Level("different", lambda a, b: True, "ELSE"),
        ),
    ),
    Comparison(
        "household",
        lambda r: bool(r["phone"] or r["address"] or r["county"] or r["city"] or r["postal_code"]),
        "({s}.phone IS NOT NULL OR {s}.address IS NOT NULL OR {s}.county IS NOT NULL OR {s}.city IS NOT NULL "
        "OR {s}.postal_code IS NOT NULL)",
        (
            Level(
                "phone-and-address",
                lambda a, b: _eq(a, b, "phone") and _address_close(a, b),
                f"l.phone = r.phone AND {_ADDRESS_CLOSE_SQL}",
            ),
            Level("phone", lambda a, b: _eq(a, b, "phone"), "l.phone = r.phone"),
            Level(
                "same-address",
                lambda a, b: _eq(a, b, "address") and _place_compatible(a, b),
                f"l.address = r.address AND {_PLACE_COMPATIBLE_SQL}",
            ),
            Level("close-address", _address_close, _ADDRESS_CLOSE_SQL),
            Level(
                "similar-address",
                lambda a, b: (
                    a["address"] is not None and b["address"] is not None and _jw(a["address"], b["address"]) >= 0.8
                ),
                "jaro_winkler_similarity(l.address, r.address) >= 0.8",
            ),
            Level("same-township", lambda a, b: _eq(a, b, "township"), "l.township = r.township"),
            Level(
                "same-county-or-postcode",
                lambda a, b: _eq(a, b, "county") or _eq(a, b, "postal_code"),
                "l.county = r.county OR l.postal_code = r.postal_code",
            ),
            Level("different", lambda a, b: True, "ELSE"),
        ),
    ),
)

BY_FIELD = {c.field: c for c in COMPARISONS}


def compare_rows(a: Row, b: Row) -> list[int]:
    """The comparison vector of two rows (one level index per field, -1 when missing)."""
    return [c.level(a, b) for c in COMPARISONS]


def compare(a: NormalisedPatient, b: NormalisedPatient) -> list[int]:
    return compare_rows(to_row(a), to_row(b))
