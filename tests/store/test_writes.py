"""The batch write (``Unit.put_many``): current rows read and index rows replaced in IN lists longer than
one statement takes, deleted resources written again, and a resource changed by another transaction
since it was read refused rather than overwritten."""

from __future__ import annotations

import pytest

from changbai.errors import Conflict
from changbai.store.pipeline import Context
from changbai.store.repository import _IN_LIST


def patient(id: str, mrn: str) -> dict:
    return {"resourceType": "Patient", "id": id, "identifier": [{"system": "urn:mrn", "value": mrn}]}


def test_a_batch_longer_than_an_in_list_replaces_every_index_row(repo):
    n = _IN_LIST + 7
    with repo.unit() as unit:
        unit.put_many([patient(f"p{i}", f"old{i}") for i in range(n)])
        unit.delete("Patient", "p3")
    with repo.unit() as unit:
        outcomes = unit.put_many([patient(f"p{i}", f"new{i}") for i in range(n)])
    assert [o.status for o in outcomes] == ["created" if i == 3 else "updated" for i in range(n)]
    assert [o.stored.version for o in outcomes] == [3 if i == 3 else 2 for i in range(n)]
    with repo.unit(write=False) as unit:
        for i in (0, 3, _IN_LIST - 1, _IN_LIST, n - 1):
            assert unit.find("Patient", f"identifier=urn:mrn|old{i}") == [], i
            assert unit.find("Patient", f"identifier=urn:mrn|new{i}") == [(f"p{i}", outcomes[i].stored.version)]
        assert unit.search("Patient", [("identifier", "urn:mrn|"), ("_summary", "count")]).total == n


def test_a_resource_changed_since_it_was_read_is_refused(repo):
    # PostgreSQL: another transaction updates the patient after this batch read its row and before it
    # writes; the batch's version check finds the row moved on. (SQLite's writers take turns.)
    if repo.db.is_sqlite:
        pytest.skip("SQLite writers are serialised: nothing can change in between")
    with repo.unit() as unit:
        unit.put_many([patient("p", "A")])

    def meanwhile(conn, ctx, op):
        if ctx.source == "rest":
            with repo.unit(Context(source="other")) as other:
                other.put_many([patient("p", "B")])

    repo.pipeline.add("prepare", "meanwhile", meanwhile)
    with pytest.raises(Conflict), repo.unit() as unit:
        unit.put_many([patient("p", "C")])
    assert repo.read("Patient", "p").resource["identifier"][0]["value"] == "B"
