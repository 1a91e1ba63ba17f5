"""Estimating the model from data (EM), and the pair/cluster helpers shared by fit and evaluation.

u comes from random pairs (nearly all non-matches, so their level frequencies are u); m and the share of
matches among blocked pairs come from EM over the blocked candidate pairs with u held fixed — the
procedure Splink documents, done here with numpy so the shipped model can be refitted in seconds.
"""

from __future__ import annotations

import random
from collections import defaultdict
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from changbai.identity import blocking
from changbai.identity.comparisons import compare_rows
from changbai.identity.model import MatchModel, blank


def blocked_pairs(
    rows: Sequence[dict[str, Any]], max_block: int = 2000, only: str | None = None
) -> list[tuple[int, int]]:
    """Index pairs (i < j) sharing at least one blocking key (of rule ``only``, when given)."""
    groups: dict[str, list[int]] = defaultdict(list)
    prefix = f"{only}:" if only else ""
    for i, row in enumerate(rows):
        for k in blocking.keys(row):
            if k.startswith(prefix):
                groups[k].append(i)
    pairs: set[tuple[int, int]] = set()
    for members in groups.values():
        if 1 < len(members) <= max_block:
            for x in range(len(members)):
                for y in range(x + 1, len(members)):
                    pairs.add((members[x], members[y]))
    return sorted(pairs)


def vectors(rows: Sequence[dict[str, Any]], pairs: Iterable[tuple[int, int]]) -> np.ndarray:
    out = [compare_rows(rows[i], rows[j]) for i, j in pairs]
    return np.array(out, dtype=np.int64).reshape(len(out), -1)


def random_pairs(n: int, count: int, seed: int = 1) -> list[tuple[int, int]]:
    rng = random.Random(seed)
    pairs: set[tuple[int, int]] = set()
    while len(pairs) < min(count, n * (n - 1) // 2):
        i, j = rng.randrange(n), rng.randrange(n)
        if i != j:
            pairs.add((min(i, j), max(i, j)))
    return sorted(pairs)


def fit(
    rows: Sequence[dict[str, Any]],
    model: MatchModel | None = None,
    n_random: int = 200_000,
    version: str = "fitted",
    seed: int = 1,
) -> MatchModel:
    """Fit a model on ``rows`` (blocking rows), the way Splink trains:

    1. u from random pairs;
    2. m by EM once per blocking rule, over the pairs that rule finds, ignoring the fields the rule
       forces to agree (they say nothing there), u held fixed; each field's m is the mean over the
       sessions that estimated it;
    3. the share of matches among all blocked pairs by EM with m and u fixed, turned into the prior
       of two random records matching.
    """
    model = model or blank(version)
    model.version = version
    model.estimate_u(vectors(rows, random_pairs(len(rows), n_random, seed)))
    start_m = {f.field: list(f.m) for f in model.fields}
    estimates: dict[str, list[list[float]]] = defaultdict(list)
    sessions = []
    for rule, columns in blocking.training_rules().items():
        pairs = blocked_pairs(rows, only=rule)
        if len(pairs) < 50:
            continue
        ignore = frozenset(fields_using(columns))
        for f in model.fields:
            f.m = list(start_m[f.field])
        model._tables = None
        share, iterations = model.fit_em(vectors(rows, pairs), fix_u=True, ignore=ignore)
        sessions.append({"rule": rule, "pairs": len(pairs), "match_share": round(share, 4), "iterations": iterations})
        for f in model.fields:
            if f.field not in ignore:
                estimates[f.field].append(f.m)
    for f in model.fields:
        if estimates[f.field]:
            f.m = [float(x) for x in np.mean(np.array(estimates[f.field]), axis=0)]
        else:
            f.m = start_m[f.field]
    model._tables = None
    pairs = blocked_pairs(rows)
    share, _ = model.fit_em(vectors(rows, pairs), fix_u=True, fix_m=True)
    n = len(rows)
    model.prior = min(max(share * len(pairs) / (n * (n - 1) / 2), 1e-9), 0.5)
    model.trained_on.update(
        {
            "lambda_blocked": round(share, 6),
            "records": n,
            "blocked_pairs": len(pairs),
            "random_pairs": n_random,
            "em_sessions": sessions,
        }
    )
    return model


#: Which compared field each blocking column belongs to (a rule on it makes that field agree).
_COLUMN_FIELD = {
    "id_number": "id_number",
    "id_part_1": "id_number",
    "id_part_2": "id_number",
    "id_part_3": "id_number",
    "phone": "household",
    "address": "household",
    "place": "household",
    "name_canon": "name",
    "name_ko": "name",
    "fuzzy_canon": "name",
    "surname": "name",
    "initial": "name",
    "birth_date": "birth_date",
    "birth_year": "birth_date",
    "sex": "sex",
}


def fields_using(columns: Iterable[str]) -> set[str]:
    return {_COLUMN_FIELD[c] for c in columns if c in _COLUMN_FIELD}


def clusters(keys: Sequence[str], links: Iterable[tuple[int, int]]) -> list[list[str]]:
    """Connected components of the linked pairs (singletons included), each sorted, largest first."""
    parent = list(range(len(keys)))

    def find(x: int) -> int:
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for i, j in links:
        ri, rj = find(i), find(j)
        if ri != rj:
            parent[max(ri, rj)] = min(ri, rj)
    groups: dict[int, list[str]] = defaultdict(list)
    for i, k in enumerate(keys):
        groups[find(i)].append(k)
    return sorted((sorted(g) for g in groups.values()), key=lambda g: (-len(g), g[0]))
