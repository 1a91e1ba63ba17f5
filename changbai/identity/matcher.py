"""Online matching: find a new or changed Patient's candidates through the blocking index and score them.

Decisions follow the model's thresholds: ``auto-link`` at or above ``auto_link``, ``review`` (possible
match, to the review queue) at or above ``review``, else ``no-match``. An ID number that does not
validate as a resident ID may still raise a score, but never decides an automatic link: when the pair
agrees on an unverified number, the auto-link decision is taken on the weight *without* that field.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Protocol

from changbai.errors import InvalidInput
from changbai.identity import blocking
from changbai.identity.comparisons import COMPARISONS, MISSING, compare_rows
from changbai.identity.model import MatchModel, load
from changbai.identity.normalise import NormalisedPatient

_ID = [c.field for c in COMPARISONS].index("id_number")
_ID_LEVELS = [lv.name for lv in COMPARISONS[_ID].levels]


@dataclass(frozen=True)
class MatchResult:
    key: str  # the candidate's key
    probability: float
    weight: float
    decision: str  # auto-link | review | no-match
    grade: str  # FHIR match-grade: certain | probable | possible | certainly-not
    levels: dict[str, str]  # field -> level name ("missing" when absent)

    def to_json(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "probability": round(self.probability, 6),
            "weight": round(self.weight, 3),
            "decision": self.decision,
            "grade": self.grade,
            "levels": self.levels,
        }


class CandidateIndex(Protocol):
    def add(self, row: dict[str, Any], keys: list[str]) -> None: ...
    def remove(self, key: str) -> None: ...
    def lookup(self, keys: list[str], exclude: str | None = None) -> list[dict[str, Any]]: ...


class MemoryIndex:
    """Blocking key -> record keys, and record key -> row, all in memory."""

    def __init__(self, max_block: int = 2000) -> None:
        self.rows: dict[str, dict[str, Any]] = {}
        self.blocks: dict[str, set[str]] = {}
        self.keys_of: dict[str, list[str]] = {}
        self.max_block = max_block

    def add(self, row: dict[str, Any], keys: list[str]) -> None:
        self.remove(row["unique_id"])
        self.rows[row["unique_id"]] = row
        self.keys_of[row["unique_id"]] = keys
        for k in keys:
            self.blocks.setdefault(k, set()).add(row["unique_id"])

    def remove(self, key: str) -> None:
        for k in self.keys_of.pop(key, []):
            self.blocks.get(k, set()).discard(key)
        self.rows.pop(key, None)

    def lookup(self, keys: list[str], exclude: str | None = None) -> list[dict[str, Any]]:
        found: set[str] = set()
        for k in keys:
            members = self.blocks.get(k)
            if members and len(members) <= self.max_block:  # a huge block (a clinic's phone) says nothing
                found |= members
        found.discard(exclude or "")
        return [self.rows[f] for f in sorted(found)]

    def __len__(self) -> int:
        return len(self.rows)


class Matcher:
    """The online matcher: model + candidate index."""

    def __init__(self, model: MatchModel | None = None, index: CandidateIndex | None = None) -> None:
        self.model = model or load()
        self.index: CandidateIndex = index if index is not None else MemoryIndex()

    def add(self, patient: NormalisedPatient) -> None:
        row = blocking.blocking_row(patient)
        self.index.add(row, blocking.keys(row, patient.other_phones))

    def add_all(self, patients: Iterable[NormalisedPatient]) -> None:
        for p in patients:
            self.add(p)

    def remove(self, key: str) -> None:
        self.index.remove(key)

    def candidates(self, patient: NormalisedPatient) -> list[dict[str, Any]]:
        """Rows of indexed records sharing a blocking key with ``patient`` (itself excluded)."""
        row = blocking.blocking_row(patient)
        return self.index.lookup(blocking.keys(row, patient.other_phones), exclude=patient.key or None)

    def score(self, a: NormalisedPatient, b: NormalisedPatient) -> MatchResult:
        return self._score(blocking.blocking_row(a), blocking.blocking_row(b))

    def match(self, patient: NormalisedPatient, minimum: str = "review", limit: int | None = None) -> list[MatchResult]:
        """Scored candidates, best first, at or above ``minimum`` (review | auto-link | any)."""
        if not patient.usable:
            raise InvalidInput(
                "nothing usable to match on: give a resident ID, a phone number, or a name with a birth date",
                expression="Patient",
            )
        row = blocking.blocking_row(patient)
        return self.scored(row, blocking.keys(row, patient.other_phones), minimum, limit)

    def scored(
        self, row: dict[str, Any], keys: list[str], minimum: str = "review", limit: int | None = None
    ) -> list[MatchResult]:
        """:meth:`match` for a record whose blocking row and keys are already computed."""
        candidates = self.index.lookup(keys, exclude=row["unique_id"] or None)
        results = [self._score(row, c) for c in candidates]
        floor = {"any": 0.0, "review": self.model.thresholds.review, "auto-link": self.model.thresholds.auto_link}
        results = [r for r in results if r.probability >= floor[minimum]]
        results.sort(key=lambda r: (-r.weight, r.key))
        return results[:limit] if limit else results

    def _score(self, a: dict[str, Any], b: dict[str, Any]) -> MatchResult:
        vector = compare_rows(a, b)
        model = self.model
        weight = model.weight(vector)
        probability = float(model.probability(weight))
        deciding = probability
        if vector[_ID] == _ID_LEVELS.index("exact-unverified"):
            without = list(vector)
            without[_ID] = MISSING
            deciding = float(model.probability(model.weight(without)))
        levels = {
            c.field: ("missing" if g == MISSING else c.levels[g].name) for c, g in zip(COMPARISONS, vector, strict=True)
        }
        decision = decide(model, probability, deciding, levels, (a.get("name_script"), b.get("name_script")))
        grade = {"auto-link": "probable", "review": "possible", "no-match": "certainly-not"}[decision]
        if decision == "auto-link" and levels["id_number"] == "exact-valid":
            grade = "certain"
        return MatchResult(str(b["unique_id"]), probability, weight, decision, grade, levels)


def decide(
    model: MatchModel,
    probability: float,
    deciding: float,
    levels: dict[str, str],
    scripts: tuple[str | None, str | None] = (None, None),
) -> str:
    """auto-link | review | no-match from the thresholds, then capped by the model's guards."""
    t = model.thresholds
    decision = "auto-link" if deciding >= t.auto_link else "review" if probability >= t.review else "no-match"
    rank = {"no-match": 0, "review": 1, "auto-link": 2}
    for guard in model.guards:
        if guard.applies(levels, scripts) and rank[guard.cap] < rank[decision]:
            decision = guard.cap
    return decision
