"""The Fellegi–Sunter match model: per field and level an m and a u probability, a prior, thresholds.

The model is a JSON file (data/model.json) that an operator can read: each level's m ("how often a true
match shows this") and u ("how often a random non-match shows this"), the resulting weight, and the
thresholds. Both the online matcher and the batch dedupe (Splink) take their parameters from it, so this
file is the one source of truth; `fit` re-estimates it from a store's own data by EM.

Weights: w = log2(prior / (1 - prior)) + Σ log2(m / u) over the fields present in both records;
probability = 2^w / (1 + 2^w).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from changbai.errors import InvalidInput
from changbai.identity.comparisons import COMPARISONS, MISSING

_FLOOR = 1e-6  # no level is ever impossible: keeps weights finite


@dataclass
class Thresholds:
    #: At or above: link automatically (match-grade "probable", or "certain" with an equal valid ID).
    auto_link: float = 0.99
    #: At or above (and below auto_link): a possible match, queued for review.
    review: float = 0.5


@dataclass
class FieldParams:
    field: str
    levels: list[str]
    m: list[float]
    u: list[float]

    def weights(self) -> list[float]:
        return [math.log2(max(m, _FLOOR) / max(u, _FLOOR)) for m, u in zip(self.m, self.u, strict=True)]


@dataclass
class MatchModel:
    version: str
    prior: float
    fields: list[FieldParams]
    thresholds: Thresholds = field(default_factory=Thresholds)
    description: str = ""
    trained_on: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._tables: list[np.ndarray] | None = None

    # -- scoring -----------------------------------------------------------------------------------
    def weight_tables(self) -> list[np.ndarray]:
        """Per field, the weight of each level, with one extra slot (index -1) of 0 for missing."""
        if self._tables is None:
            self._tables = [np.array([*f.weights(), 0.0]) for f in self.fields]
        return self._tables

    @property
    def prior_weight(self) -> float:
        return math.log2(self.prior / (1 - self.prior))

    def weight(self, vector: list[int]) -> float:
        tables = self.weight_tables()
        return self.prior_weight + sum(float(t[g]) for t, g in zip(tables, vector, strict=True))

    def weights(self, vectors: np.ndarray) -> np.ndarray:
        """Match weights of many comparison vectors at once (rows of level indices, -1 missing)."""
        total = np.full(len(vectors), self.prior_weight)
        for j, table in enumerate(self.weight_tables()):
            total += table[vectors[:, j]]
        return total

    @staticmethod
    def probability(weight: float | np.ndarray) -> Any:
        return 1.0 / (1.0 + np.power(2.0, -np.asarray(weight, dtype=float)))

    # -- estimation --------------------------------------------------------------------------------
    def estimate_u(self, vectors: np.ndarray) -> None:
        """u from comparison vectors of random pairs (almost all non-matches)."""
        for j, f in enumerate(self.fields):
            f.u = _frequencies(vectors[:, j], len(f.levels), np.ones(len(vectors)))
        self._tables = None

    def fit_em(self, vectors: np.ndarray, *, fix_u: bool = True, max_iter: int = 100, tol: float = 1e-6) -> int:
        """Estimate m (and u unless ``fix_u``) and the share of matches among ``vectors`` by EM.

        ``vectors`` are the comparison vectors of the blocked candidate pairs. Returns the iterations
        run. The prior learned is the share among candidate pairs; the model's ``prior`` is then set to
        the share among all pairs, ``λ_blocked * n_blocked / n_all`` when ``trained_on`` says n_all.
        """
        lam = 0.5
        iterations = 0
        while iterations < max_iter:
            iterations += 1
            self._tables = None
            w = self.weights(vectors) - self.prior_weight + math.log2(lam / (1 - lam))
            resp = 1.0 / (1.0 + np.power(2.0, -w))
            new_lam = float(resp.mean())
            delta = abs(new_lam - lam)
            for j, f in enumerate(self.fields):
                new_m = _frequencies(vectors[:, j], len(f.levels), resp)
                delta = max(delta, max(abs(a - b) for a, b in zip(new_m, f.m, strict=True)))
                f.m = new_m
                if not fix_u:
                    f.u = _frequencies(vectors[:, j], len(f.levels), 1.0 - resp)
            lam = min(max(new_lam, 1e-9), 1 - 1e-9)
            if delta < tol:
                break
        self._tables = None
        self.trained_on["lambda_blocked"] = lam
        return iterations

    # -- file form ---------------------------------------------------------------------------------
    def to_json(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "description": self.description,
            "prior": self.prior,
            "thresholds": {"auto_link": self.thresholds.auto_link, "review": self.thresholds.review},
            "trained_on": self.trained_on,
            "fields": [
                {
                    "field": f.field,
                    "levels": [
                        {"name": n, "m": round(m, 8), "u": round(u, 8), "weight": round(w, 3)}
                        for n, m, u, w in zip(f.levels, f.m, f.u, f.weights(), strict=True)
                    ],
                }
                for f in self.fields
            ],
        }

    def save(self, path: Path) -> None:
        path.write_text(json.dumps(self.to_json(), ensure_ascii=False, indent=2) + "\n", encoding="utf-8")


def _frequencies(column: np.ndarray, n_levels: int, weights: np.ndarray) -> list[float]:
    present = column != MISSING
    counts = np.bincount(column[present], weights=weights[present], minlength=n_levels)[:n_levels]
    total = counts.sum()
    if total <= 0:
        return [1.0 / n_levels] * n_levels
    return [max(float(c / total), _FLOOR) for c in counts]


def from_json(data: dict[str, Any]) -> MatchModel:
    """Load a model, checking that its fields and levels are exactly the comparisons this code makes."""
    try:
        fields = [
            FieldParams(
                f["field"],
                [lv["name"] for lv in f["levels"]],
                [float(lv["m"]) for lv in f["levels"]],
                [float(lv["u"]) for lv in f["levels"]],
            )
            for f in data["fields"]
        ]
        expected = [(c.field, [lv.name for lv in c.levels]) for c in COMPARISONS]
        if [(f.field, f.levels) for f in fields] != expected:
            raise InvalidInput(f"match model {data.get('version')!r}: fields/levels differ from the comparisons")
        prior = float(data["prior"])
        if not 0 < prior < 1:
            raise InvalidInput("match model: prior must be between 0 and 1")
        t = data.get("thresholds") or {}
        thresholds = Thresholds(float(t.get("auto_link", 0.99)), float(t.get("review", 0.5)))
        if not 0 < thresholds.review <= thresholds.auto_link < 1:
            raise InvalidInput("match model: need 0 < review <= auto_link < 1")
        return MatchModel(
            version=str(data["version"]),
            prior=prior,
            fields=fields,
            thresholds=thresholds,
            description=str(data.get("description", "")),
            trained_on=dict(data.get("trained_on") or {}),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise InvalidInput(f"match model is malformed: {exc}") from exc


def load(path: Path | str | None = None) -> MatchModel:
    """The shipped model (data/model.json) or the one at ``path``."""
    if path is None:
        text = resources.files("changbai.identity").joinpath("data/model.json").read_text(encoding="utf-8")
    else:
        text = Path(path).read_text(encoding="utf-8")
    return from_json(json.loads(text))


def blank(version: str = "untrained", prior: float = 1e-4) -> MatchModel:
    """A model with neutral starting values for EM: m favours the first levels, u the last."""
    fields = []
    for c in COMPARISONS:
        n = len(c.levels)
        m = [0.9 * (0.5**i) for i in range(n)]
        u = [0.01 * (2**i) for i in range(n)]
        u[-1] = 1.0
        fields.append(FieldParams(c.field, [lv.name for lv in c.levels], _norm(m), _norm(u)))
    return MatchModel(version=version, prior=prior, fields=fields)


def _norm(values: list[float]) -> list[float]:
    total = sum(values)
    return [v / total for v in values]
