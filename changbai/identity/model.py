"""The Fellegi–Sunter match model: per field and level an m and a u probability, a prior, thresholds.

The model is a JSON file (data/model.json) that an operator can read: each level's m ("how often a true
match shows this") and u ("how often a random non-match shows this"), the resulting weight, and the
thresholds. Both the online matcher and the batch dedupe (Splink) take their parameters from it, so this
file is the one source of truth; `fit` re-estimates it from a store's own data by EM.

Weights: w = log2(prior / (1 - prior)) + Σ log2(m / u) over the fields present in both records;
probability = 2^w / (1 + 2^w).
"""

from __future__ import annotations

import dataclasses
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
    #: level -> m fixed by domain knowledge (EM leaves it; the other levels share the rest).
    fixed_m: dict[str, float] = dataclasses.field(default_factory=dict)

    def set_m(self, m: list[float]) -> None:
        if not self.fixed_m:
            self.m = m
            return
        fixed = {self.levels.index(k): v for k, v in self.fixed_m.items()}
        free = sum(x for i, x in enumerate(m) if i not in fixed)
        rest = 1.0 - sum(fixed.values())
        self.m = [fixed[i] if i in fixed else max(x / free * rest, _FLOOR) for i, x in enumerate(m)]

    def weights(self) -> list[float]:
        return [math.log2(max(m, _FLOOR) / max(u, _FLOOR)) for m, u in zip(self.m, self.u, strict=True)]


@dataclass
class Guard:
    """A pattern of levels that caps the decision (e.g. possible twins go to review, never auto-link).

    It applies when, for every field in ``when``, the pair's level is one of those listed, and for no
    field in ``unless`` it is one of those listed."""

    name: str
    when: dict[str, list[str]]
    unless: dict[str, list[str]]
    cap: str  # review | no-match
    why: str = ""
    #: When set, the guard applies only if both records' name scripts are listed (None = no name).
    name_scripts: list[str | None] | None = None

    def applies(self, levels: dict[str, str], scripts: tuple[str | None, str | None] = (None, None)) -> bool:
        if self.name_scripts is not None and not all(s in self.name_scripts for s in scripts):
            return False
        return all(levels.get(f) in allowed for f, allowed in self.when.items()) and not any(
            levels.get(f) in listed for f, listed in self.unless.items()
        )


@dataclass
class MatchModel:
    version: str
    prior: float
    fields: list[FieldParams]
    thresholds: Thresholds = field(default_factory=Thresholds)
    guards: list[Guard] = field(default_factory=list)
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

    def fit_em(
        self,
        vectors: np.ndarray,
        *,
        fix_u: bool = True,
        fix_m: bool = False,
        ignore: frozenset[str] = frozenset(),
        max_iter: int = 100,
        tol: float = 1e-6,
    ) -> tuple[float, int]:
        """Estimate m (unless ``fix_m``), u (unless ``fix_u``) and the share of matches among ``vectors``.

        ``vectors`` are comparison vectors of blocked pairs; fields in ``ignore`` (those the blocking
        rule made agree) neither inform nor get estimated. Returns (share of matches, iterations).
        """
        active = [j for j, f in enumerate(self.fields) if f.field not in ignore]
        lam = 0.5
        iterations = 0
        while iterations < max_iter:
            iterations += 1
            tables = self.weight_tables()
            w = np.full(len(vectors), math.log2(lam / (1 - lam)))
            for j in active:
                w += tables[j][vectors[:, j]]
            resp = 1.0 / (1.0 + np.power(2.0, -w))
            new_lam = min(max(float(resp.mean()), 1e-9), 1 - 1e-9)
            delta = abs(new_lam - lam)
            lam = new_lam
            for j in active:
                f = self.fields[j]
                if not fix_m:
                    old_m = f.m
                    f.set_m(_frequencies(vectors[:, j], len(f.levels), resp))
                    delta = max(delta, max(abs(a - b) for a, b in zip(old_m, f.m, strict=True)))
                if not fix_u:
                    f.u = _frequencies(vectors[:, j], len(f.levels), 1.0 - resp)
            self._tables = None
            if delta < tol:
                break
        return lam, iterations

    # -- file form ---------------------------------------------------------------------------------
    def to_json(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "description": self.description,
            "prior": self.prior,
            "thresholds": {"auto_link": self.thresholds.auto_link, "review": self.thresholds.review},
            "guards": [
                {"name": g.name, "why": g.why, "when": g.when, "unless": g.unless, "cap": g.cap}
                | ({"name_scripts": g.name_scripts} if g.name_scripts is not None else {})
                for g in self.guards
            ],
            "trained_on": self.trained_on,
            "fields": [
                {
                    "field": f.field,
                    "levels": [
                        {"name": n, "m": round(m, 8), "u": round(u, 8), "weight": round(w, 3)}
                        | ({"fixed_m": True} if n in f.fixed_m else {})
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
                {lv["name"]: float(lv["m"]) for lv in f["levels"] if lv.get("fixed_m")},
            )
            for f in data["fields"]
        ]
        guards = [
            Guard(
                g["name"],
                dict(g.get("when") or {}),
                dict(g.get("unless") or {}),
                g["cap"],
                g.get("why", ""),
                g.get("name_scripts"),
            )
            for g in data.get("guards") or []
        ]
        for g in guards:
            if g.cap not in ("review", "no-match"):
                raise InvalidInput(f"match model: guard {g.name!r} caps at {g.cap!r}, not review or no-match")
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
            guards=guards,
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


def policy() -> dict[str, Any]:
    """The hand-edited part of the model: description, thresholds, guards, m values fixed by knowledge."""
    text = resources.files("changbai.identity").joinpath("data/model_policy.json").read_text(encoding="utf-8")
    return dict(json.loads(text))


def blank(version: str = "untrained", prior: float = 1e-4) -> MatchModel:
    """The policy with neutral starting values for EM: m favours the first levels, u the last."""
    rules = policy()
    fields = []
    for c in COMPARISONS:
        n = len(c.levels)
        names = [lv.name for lv in c.levels]
        u = [0.01 * (2**i) for i in range(n)]
        u[-1] = 1.0
        params = FieldParams(c.field, names, [], _norm(u), dict(rules.get("fixed_m", {}).get(c.field, {})))
        params.set_m(_norm([0.9 * (0.5**i) for i in range(n)]))
        fields.append(params)
    data = {
        "version": version,
        "prior": prior,
        "description": rules.get("description", ""),
        "thresholds": rules.get("thresholds", {}),
        "guards": rules.get("guards", []),
        "fields": [
            {
                "field": f.field,
                "levels": [
                    {"name": n, "m": m, "u": u} | ({"fixed_m": True} if n in f.fixed_m else {})
                    for n, m, u in zip(f.levels, f.m, f.u, strict=True)
                ],
            }
            for f in fields
        ],
    }
    return from_json(data)


def _norm(values: list[float]) -> list[float]:
    total = sum(values)
    return [v / total for v in values]
