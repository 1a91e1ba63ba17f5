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
