"""A platform with only the core installed, for the HL7 v2 / CDA intake tests.

Other modules' extensions (federation, subscriptions, ...) are theirs to test; the intake needs only the
store and the transaction path, so its tests do not depend on the state of those modules."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from changbai.settings import Settings


@pytest.fixture
def core_platform(settings: Settings) -> Iterator[Any]:
    from changbai.api.app import create_platform

    p = create_platform(settings, extensions=[])
    yield p
    p.db.dispose()


def search(platform: Any, rtype: str, query: str = "") -> list[tuple[str, int, dict[str, Any]]]:
    """(id, version, resource) of every match of a FHIR search (all pages' worth, up to 1000)."""
    from urllib.parse import parse_qsl

    params = [*parse_qsl(query, keep_blank_values=True), ("_count", "1000")]
    with platform.repo.unit(write=False) as unit:
        return [(m.id, m.version, m.resource) for m in unit.search(rtype, params).matches]


@pytest.fixture
def other_platform(request: pytest.FixtureRequest, settings: Settings, tmp_path: Path) -> Iterator[Any]:
    """A second core platform on its own empty database of the same backend (to compare two ways of
    feeding the same messages)."""
    from changbai.api.app import create_platform
    from tests.conftest import _fresh_pg

    if settings.database_url.startswith("sqlite"):
        url = f"sqlite:///{tmp_path / 'other.db'}"
    else:
        url = _fresh_pg(request.getfixturevalue("postgres_url"))
    p = create_platform(Settings(data_dir=tmp_path / "other", database_url=url, mllp_port=0), extensions=[])
    yield p
    p.db.dispose()  # a PostgreSQL database made here is dropped with the others at the session's end


#: the resource types the HL7 v2 mappers write
KINDS = (
    *("Patient", "Encounter", "Observation", "DiagnosticReport", "Immunization", "ServiceRequest", "Appointment"),
    *("MedicationRequest", "MedicationDispense", "DocumentReference", "ChargeItem", "Condition"),
    *("AllergyIntolerance", "RelatedPerson", "Coverage"),
)


def snapshot(platform: Any) -> dict[str, list[tuple[str, int, dict[str, Any]]]]:
    """Every resource the intake can write: type -> (id, version, content without meta), in id order."""
    out = {}
    for rtype in KINDS:
        rows = [(i, v, {k: x for k, x in r.items() if k != "meta"}) for i, v, r in search(platform, rtype)]
        out[rtype] = sorted(rows, key=lambda row: row[0])
    return out
