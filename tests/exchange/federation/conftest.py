"""Fixtures of the federation tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.exchange.federation.jetstream import delete_stream, new_stream


@pytest.fixture
def stream() -> Iterator[str]:
    """A fresh JetStream stream name for one test (skipped when no NATS server is reachable); its
    subjects never overlap another test's, and it is deleted afterwards."""
    name = new_stream()
    yield name
    delete_stream(name)
