"""Shared fixtures of the terminology tests: the shipped content, in memory."""

from __future__ import annotations

import pytest

from changbai.terminology.binding import shipped_source
from changbai.terminology.source import InMemorySource


@pytest.fixture(scope="session")
def shipped() -> InMemorySource:
    return shipped_source()
