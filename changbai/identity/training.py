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


def blocked_pairs(rows: Sequence[dict[str, Any]], max_block: int = 2000) -> list[tuple[int, int]]:
    """Index pairs (i < j) sharing at least one blocking key."""
    groups: dict[str, list[int]] = defaultdict(list)
    for i, row in enumerate(rows):
        for k in blocking.keys(row):
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
    pairs = set()
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
    """Fit a model on ``rows`` (blocking rows): u from random pairs, m and prior by EM on blocked pairs."""
    model = model or blank(version)
    model.version = version
    model.estimate_u(vectors(rows, random_pairs(len(rows), n_random, seed)))
    pairs = blocked_pairs(rows)
    vecs = vectors(rows, pairs)
    iterations = model.fit_em(vecs, fix_u=False)
    n = len(rows)
    model.prior = min(max(model.trained_on["lambda_blocked"], 1e-6), 1 - 1e-6)
    model.trained_on.update(
        {"records": n, "blocked_pairs": len(pairs), "random_pairs": n_random, "em_iterations": iterations}
    )
    return model


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
