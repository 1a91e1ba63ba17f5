"""Blocking keys: only records sharing at least one key are compared.

Each rule is a list of row columns whose values, all present, make one key ("rule-name:value|value").
The rules are data (data/blocking.json) read by both the online index and the batch dedupe, so both
look at the same candidate pairs. Derived columns (name_canon, fuzzy_canon, birth_year, place) are added
by `blocking_row`.
"""

from __future__ import annotations

import json
from functools import lru_cache
from importlib import resources
from typing import Any

from changbai.identity.comparisons import to_row
from changbai.identity.normalise import NormalisedPatient


@lru_cache(maxsize=1)
def rules() -> dict[str, list[str]]:
    text = resources.files("changbai.identity").joinpath("data/blocking.json").read_text(encoding="utf-8")
    return {r["name"]: r["columns"] for r in json.loads(text)["rules"]}


@lru_cache(maxsize=1)
def protected_columns() -> dict[str, str]:
    """Row column -> the protected-field kind (id | phone) its values come from."""
    text = resources.files("changbai.identity").joinpath("data/blocking.json").read_text(encoding="utf-8")
    columns: dict[str, str] = json.loads(text).get("protected", {}).get("columns", {})
    return columns


@lru_cache(maxsize=1)
def protected_rules() -> dict[str, str]:
    """Rule name -> the protected-field kind of its first protected column, for rules that have one."""
    protected = protected_columns()
    out = {}
    for name, columns in rules().items():
        kinds = [protected[c] for c in columns if c in protected]
        if kinds:
            out[name] = kinds[0]
    return out


@lru_cache(maxsize=1)
def training_rules() -> dict[str, list[str]]:
    """The rules EM trains on, one session each (those not marked ``"train": false``)."""
    text = resources.files("changbai.identity").joinpath("data/blocking.json").read_text(encoding="utf-8")
    return {r["name"]: r["columns"] for r in json.loads(text)["rules"] if r.get("train", True)}


def blocking_row(p: NormalisedPatient) -> dict[str, Any]:
    """`to_row` plus the derived columns the blocking rules use."""
    row = to_row(p)
    n = p.name
    row["name_canon"] = min(n.plain, n.alt) if n else None
    row["fuzzy_canon"] = min(n.fuzzy, n.fuzzy_alt) if n else None
    row["birth_year"] = p.birth_date[:4] if p.birth_date else None
    row["place"] = p.county or p.postal_code
    row["initial"] = n.plain[:1] if n else None
    for i, part in enumerate(id_parts(p.id_number), start=1):
        row[f"id_part_{i}"] = part
    return row


def id_parts(number: str | None) -> tuple[str | None, str | None, str | None]:
    """The ID number with each of its thirds left out in turn: one mistyped or swapped digit inside a
    third leaves that key equal. The key without the last third keeps the last character: the leading
    two thirds of a structured number (a resident ID's region and birth month) are shared by many people
    and would make large blocks on their own; with the check character they stay small."""
    if not number or len(number) < 6:
        return None, None, None
    a, b = len(number) // 3, 2 * len(number) // 3
    return f"-{number[a:]}", f"{number[:a]}-{number[b:]}", f"{number[:b]}-{number[-1]}"


def keys(row: dict[str, Any], extra_phones: tuple[str, ...] = ()) -> list[str]:
    """Every blocking key of a row (one per rule whose columns are all present)."""
    out = []
    for name, columns in rules().items():
        values = [row.get(c) for c in columns]
        if all(v not in (None, "") for v in values):
            out.append(f"{name}:" + "|".join(str(v) for v in values))
    for phone in extra_phones:
        out.append(f"phone:{phone}")
    return out


def key_columns(row: dict[str, Any]) -> dict[str, str | None]:
    """One column per rule (bk_<rule>) holding the row's key for it, for SQL blocking."""
    result: dict[str, str | None] = {}
    for name, columns in rules().items():
        values = [row.get(c) for c in columns]
        ok = all(v not in (None, "") for v in values)
        result[f"bk_{name}"] = "|".join(str(v) for v in values) if ok else None
    return result
