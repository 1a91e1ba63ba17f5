"""Searches must not reveal a hidden record or its existence: not through _include/_revinclude, chains,
_has, counts (_summary=count, _total), compartments, $everything or history. Each query is also run by
the operator, who sees everything, to show that there was something to hide."""

from __future__ import annotations

import pytest

from tests.security.conftest import consent


def ids(bundle: dict) -> set[str]:
    return {
        f"{e['resource']['resourceType']}/{e['resource']['id']}" for e in bundle.get("entry", []) if "resource" in e
    }


@pytest.fixture
def partial(world):
    """clinB (hospB) may read p1's record except the mental-health condition psy1."""
    with world.client("resident1") as c:
        assert c.post("Consent", json=consent("p1", "Organization/hospB", exclude=["PSY"])).status_code == 201
    return world


def search(world, user: str, path: str, params: dict | list) -> dict:
    with world.client(user) as c:
        r = c.get(path, params=params)
    assert r.status_code == 200, r.text
    return r.json()


def test_has_does_not_reveal_an_excluded_condition(partial):
    q = {"_has:Condition:subject:code": "F32.1"}
    assert ids(search(partial, "operator1", "Patient", q)) == {"Patient/p1"}
    assert ids(search(partial, "clinB", "Patient", q)) == set()
    # the same reader does see p1 otherwise
    assert ids(search(partial, "clinB", "Patient", {"_id": "p1"})) == {"Patient/p1"}


def test_revinclude_leaves_out_hidden_records(partial):
    q = {"_id": "p1", "_revinclude": "Condition:subject"}
    assert "Condition/psy1" in ids(search(partial, "operator1", "Patient", q))
    assert ids(search(partial, "clinB", "Patient", q)) == {"Patient/p1"}


def test_include_leaves_out_hidden_records(world):
    # the facility administrator sees hospA's observation, not the resident it is about
    q = {"_id": "obs1", "_include": "Observation:subject"}
    assert ids(search(world, "operator1", "Observation", q)) == {"Observation/obs1", "Patient/p1"}
    assert ids(search(world, "adminA", "Observation", q)) == {"Observation/obs1"}


def test_chain_cannot_test_hidden_records(world):
    q = {"subject:Patient.name": "resident p1"}
    assert ids(search(world, "operator1", "Observation", q)) == {"Observation/obs1"}
    assert ids(search(world, "adminA", "Observation", q)) == set()
    # a chain through records the reader may see still works
    assert ids(search(world, "clinA", "Observation", q)) == {"Observation/obs1"}


def test_counts_count_only_what_the_reader_sees(partial):
    assert search(partial, "operator1", "Condition", {"_summary": "count"})["total"] == 1
    assert search(partial, "clinB", "Condition", {"_summary": "count"})["total"] == 0
    assert search(partial, "cdc220202", "Observation", {"_summary": "count"})["total"] == 1
    bundle = search(partial, "clinB", "Condition", {"subject": "Patient/p1", "_total": "accurate"})
    assert bundle["total"] == 0 and "entry" not in bundle
    bundle = search(partial, "clinB", "Observation", {"_total": "accurate"})
    assert bundle["total"] == 1 and ids(bundle) == {"Observation/obs1"}


def test_system_search_and_type_lists(world):
    every = ids(search(world, "operator1", "", {"_type": "Observation,Condition,Patient"}))
    assert {"Observation/obs2", "Patient/p2", "Condition/psy1"} <= every
    seen = ids(search(world, "cdc220202", "", {"_type": "Observation,Condition,Patient"}))
    assert seen == {"Observation/obs2", "Patient/p2"}


def test_compartment_and_everything(partial):
    assert "Condition/psy1" in ids(search(partial, "operator1", "Patient/p1/$everything", {}))
    everything = ids(search(partial, "clinB", "Patient/p1/$everything", {}))
    assert "Observation/obs1" in everything and "Condition/psy1" not in everything
    assert ids(search(partial, "clinB", "Patient/p1/Condition", {})) == set()
    with partial.client("clinC") as c:
        assert c.get("Patient/p1/$everything").status_code == 404


def test_history(partial):
    with partial.client("clinB") as c:
        assert c.get("Condition/psy1/_history").json().get("entry") is None
        assert c.get("Condition/psy1/_history/1").status_code == 404
        assert c.get("Condition/_history").status_code == 403
        assert c.get("_history").status_code == 403
        own = c.get("Observation/obs1/_history").json()
        assert [e["resource"]["id"] for e in own["entry"]] == ["obs1"]
    with partial.client("operator1") as c:
        assert len(c.get("Condition/_history").json()["entry"]) == 1


def test_batch_entries_are_checked_one_by_one(world):
    bundle = {
        "resourceType": "Bundle",
        "type": "batch",
        "entry": [
            {"request": {"method": "GET", "url": "Observation/obs1"}},
            {"request": {"method": "GET", "url": "Observation/obs2"}},
            {"request": {"method": "GET", "url": "Observation?_summary=count"}},
        ],
    }
    with world.client("clinA") as c:
        r = c.post("", json=bundle)
    statuses = [e["response"]["status"] for e in r.json()["entry"]]
    assert statuses[0].startswith("200") and statuses[1].startswith("404")
    assert r.json()["entry"][2]["resource"]["total"] == 1
