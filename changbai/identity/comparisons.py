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

from changbai.identity.names import shape_key
from changbai.identity.normalise import NormalisedPatient

MISSING = -1


def to_row(p: NormalisedPatient) -> dict[str, Any]:
    """The flat row (one column per compared key) that the SQL conditions and blocking keys read."""
    n = p.name
    return {
        "unique_id": p.key,
        "id_number": p.id_number,
        "id_valid": p.id_valid,
        "name_text": n.text if n else None,
        "name_script": n.script if n else None,
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
        "address": p.address,
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
                lambda a, b: a["id_number"] == b["id_number"] and a["id_valid"] and b["id_valid"],
                "l.id_number = r.id_number AND l.id_valid AND r.id_valid",
            ),
            Level("exact-unverified", lambda a, b: a["id_number"] == b["id_number"], "l.id_number = r.id_number"),
            Level(
                "one-typo",
                lambda a, b: OSA.distance(a["id_number"], b["id_number"]) <= 1,
                "damerau_levenshtein(l.id_number, r.id_number) <= 1",
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
            Level(
                "fuzzy-pinyin-or-shape",
                lambda a, b: (
                    a["name_fuzzy"] in (b["name_fuzzy"], b["name_fuzzy_alt"])
                    or (a["name_shape"] is not None and a["name_shape"] == b["name_shape"])
                ),
                "l.name_fuzzy IN (r.name_fuzzy, r.name_fuzzy_alt) OR l.name_shape = r.name_shape",
            ),
            Level("close", lambda a, b: _name_jw(a, b) >= 0.94, f"{_NAME_JW_SQL} >= 0.94"),
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
                "length(r.birth_date) = 8 AND l.birth_date[1:4] = r.birth_date[1:4] AND "
                "l.birth_date[5:6] = r.birth_date[7:8] AND l.birth_date[7:8] = r.birth_date[5:6])",
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
        "phone",
        lambda r: bool(r["phone"]),
        "{s}.phone IS NOT NULL",
        (
            Level("exact", lambda a, b: a["phone"] == b["phone"], "l.phone = r.phone"),
            Level(
                "one-typo",
                lambda a, b: OSA.distance(a["phone"], b["phone"]) <= 1,
                "damerau_levenshtein(l.phone, r.phone) <= 1",
            ),
            Level("different", lambda a, b: True, "ELSE"),
        ),
    ),
    Comparison(
        "locality",
        lambda r: bool(r["county"] or r["city"]),
        "({s}.county IS NOT NULL OR {s}.city IS NOT NULL)",
        (
            Level(
                "same-township",
                lambda a, b: a["township"] is not None and a["township"] == b["township"],
                "l.township = r.township",
            ),
            Level(
                "same-county",
                lambda a, b: a["county"] is not None and a["county"] == b["county"],
                "l.county = r.county",
            ),
            Level("same-city", lambda a, b: a["city"] is not None and a["city"] == b["city"], "l.city = r.city"),
            Level("different", lambda a, b: True, "ELSE"),
        ),
    ),
    Comparison(
        "address",
        lambda r: bool(r["address"]),
        "{s}.address IS NOT NULL",
        (
            Level("exact", lambda a, b: a["address"] == b["address"], "l.address = r.address"),
            Level(
                "close",
                lambda a, b: _jw(a["address"], b["address"]) >= 0.9,
                "jaro_winkler_similarity(l.address, r.address) >= 0.9",
            ),
            Level(
                "similar",
                lambda a, b: _jw(a["address"], b["address"]) >= 0.75,
                "jaro_winkler_similarity(l.address, r.address) >= 0.75",
            ),
            Level("different", lambda a, b: True, "ELSE"),
        ),
    ),
    Comparison(
        "postal_code",
        lambda r: bool(r["postal_code"]),
        "{s}.postal_code IS NOT NULL",
        (
            Level("exact", lambda a, b: a["postal_code"] == b["postal_code"], "l.postal_code = r.postal_code"),
            Level(
                "one-typo",
                lambda a, b: OSA.distance(a["postal_code"], b["postal_code"]) <= 1,
                "damerau_levenshtein(l.postal_code, r.postal_code) <= 1",
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
