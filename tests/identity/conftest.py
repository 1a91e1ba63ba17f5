"""A platform with the master index installed, served over real HTTP, on each backend."""

from __future__ import annotations

import httpx
import pytest

from changbai.identity.install import install
from tests.conftest import LiveServer, free_port


@pytest.fixture
def empi_platform(settings):
    from changbai.api.app import create_platform

    p = create_platform(settings, extensions=[install])
    yield p
    p.db.dispose()


@pytest.fixture
def fhir(empi_platform):
    live = LiveServer(empi_platform.build_app(), free_port()).start()
    with httpx.Client(base_url=live.fhir, timeout=60, headers={"accept": "application/fhir+json"}) as c:
        yield c
    live.stop()
