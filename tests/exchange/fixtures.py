"""A platform with only the core installed, for the HL7 v2 / CDA intake tests.

Other modules' extensions (federation, subscriptions, ...) are theirs to test; the intake needs only the
store and the transaction path, so its tests do not depend on the state of those modules."""

from __future__ import annotations

from collections.abc import Iterator
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
