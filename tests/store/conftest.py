from __future__ import annotations

import pytest

from changbai.store.database import Database
from changbai.store.repository import Repository


@pytest.fixture
def repo(database_url):
    db = Database(database_url)
    yield Repository(db)
    db.dispose()
