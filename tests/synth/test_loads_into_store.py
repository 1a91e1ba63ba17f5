"""A generated province goes through the platform's one write pipeline (validation, indexing) with no
rejection — what `changbai load` and `changbai demo` rely on."""

from __future__ import annotations

from pathlib import Path

import orjson

from changbai.store.database import Database
from changbai.store.repository import Repository
from changbai.synth import generate

LOAD_ORDER = [
    "CodeSystem",
    "Organization",
    "Location",
    "Practitioner",
    "PractitionerRole",
    "Patient",
    "RelatedPerson",
    "Coverage",
    "CareTeam",
    "Appointment",
    "Encounter",
    "Condition",
    "ServiceRequest",
    "Observation",
    "DiagnosticReport",
    "MedicationRequest",
    "MedicationDispense",
    "Immunization",
    "Claim",
]


def test_province_loads_into_the_store_without_rejection(tmp_path: Path):
    out = tmp_path / "province"
    counts = generate(out, 60, 2)
    assert set(counts) <= set(LOAD_ORDER)
    repo = Repository(Database(f"sqlite:///{tmp_path / 'changbai.db'}"))
    loaded = 0
    for rtype in LOAD_ORDER:
        path = out / f"{rtype}.ndjson"
        if not path.exists():
            continue
        batch = [orjson.loads(line) for line in path.read_bytes().splitlines()]
        with repo.unit() as unit:
            outcomes = unit.put_many(batch)
        loaded += len(outcomes)
    assert loaded == sum(counts.values())
    with repo.unit(write=False) as unit:
        patient = unit.read("Patient", "pat-1")
    assert patient.resource["identifier"][0]["system"] == "urn:oid:2.16.156.10011.1.3"
