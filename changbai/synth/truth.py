"""Readers of a generated province's ground truth, for the modules measured against it: identity
(which Patient records are the same person), public health (outbreaks, cases), insurance (abusive claims)."""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from changbai.errors import InvalidInput
from changbai.synth.province import GROUND_TRUTH


@dataclass(frozen=True)
class AbusiveClaim:
    claim: str  # Claim id (for a split admission: the readmission's claim; related_claim is the first's)
    pattern: str  # duplicate_billing | drug_not_matching_diagnosis | over_quantity | split_admission
    encounter: str
    person: str
    related_claim: str
    detail: str


def _rows(out_dir: Path, name: str) -> list[dict[str, str]]:
    path = Path(out_dir) / GROUND_TRUTH / name
    if not path.exists():
        raise InvalidInput(f"no ground truth at {path}: generate a province there first (changbai synth)")
    with open(path, encoding="utf-8", newline="") as f:
        return list(csv.DictReader(f))


def person_of_patient(out_dir: Path) -> dict[str, str]:
    """Patient id -> person id, for every Patient record (primary and duplicates)."""
    return {r["patient_id"]: r["person_id"] for r in _rows(out_dir, "patient-records.csv")}


def same_person_pairs(out_dir: Path) -> set[tuple[str, str]]:
    """All pairs of Patient ids (sorted within the pair) that are the same person: the true matches."""
    by_person: dict[str, list[str]] = {}
    for patient, person in person_of_patient(out_dir).items():
        by_person.setdefault(person, []).append(patient)
    pairs: set[tuple[str, str]] = set()
    for ids in by_person.values():
        ids.sort()
        pairs.update((a, b) for i, a in enumerate(ids) for b in ids[i + 1 :])
    return pairs


def persons(out_dir: Path) -> list[dict[str, str]]:
    """The persons behind the records (true resident ID, name, birth, household, place ...)."""
    return _rows(out_dir, "persons.csv")


def outbreaks(out_dir: Path) -> list[dict[str, Any]]:
    """Injected outbreaks: id, disease, icd10, place, start, end, size, cases (Condition ids)."""
    path = Path(out_dir) / GROUND_TRUTH / "outbreaks.json"
    if not path.exists():
        raise InvalidInput(f"no ground truth at {path}: generate a province there first (changbai synth)")
    data: list[dict[str, Any]] = json.loads(path.read_text(encoding="utf-8"))
    return data


def infectious_cases(out_dir: Path) -> list[dict[str, str]]:
    """Every notifiable-disease case (sporadic and outbreak) with its county, township and onset."""
    return _rows(out_dir, "infectious-cases.csv")


def abusive_claims(out_dir: Path) -> list[AbusiveClaim]:
    return [
        AbusiveClaim(r["claim_id"], r["pattern"], r["encounter_id"], r["person_id"], r["related_claim_id"], r["detail"])
        for r in _rows(out_dir, "claims-abuse.csv")
    ]
