"""Patient/[golden id]/$everything is the whole person: the golden record, every linked source record
and everything in each source's compartment, paged, and narrowed by the same read and search steps
(scope, consent) as $everything on one record."""

from __future__ import annotations

import copy

import httpx
import pytest

from changbai.store.pipeline import Context
from tests.conftest import LiveServer, free_port
from tests.identity.test_operations import create, params, registration


def observation(pid: str, text: str) -> dict:
    return {"resourceType": "Observation", "status": "final", "code": {"text": text}, "subject": {"reference": pid}}


def ids(bundle: dict) -> list[str]:
    return [f"{e['resource']['resourceType']}/{e['resource']['id']}" for e in bundle.get("entry", [])]


def every_page(client: httpx.Client, path: str, **query: object) -> list[str]:
    """All entries of a paged $everything, following its next links."""
    out: list[str] = []
    bundle = client.get(path, params=query).json()
    while True:
        out += ids(bundle)
        nxt = next((link["url"] for link in bundle.get("link", []) if link["relation"] == "next"), None)
        if nxt is None:
            return out
        bundle = client.get(nxt).json()


def test_everything_on_the_golden_record_is_the_whole_person(fhir):
    a = create(fhir, registration("hospital-a", "A-1"))
    b = create(fhir, registration("clinic-b", "B-1", name=[{"text": "張偉"}]))  # linked automatically
    c = create(fhir, registration("village-c", "C-1", identifier=[], name=[{"text": "李强"}], birthDate="1962-08-01"))
    for pid, n in ((a["id"], 2), (b["id"], 3), (c["id"], 1)):
        for i in range(n):
            assert fhir.post("/Observation", json=observation(f"Patient/{pid}", f"{pid} {i}")).status_code == 201

    golden = fhir.get(f"/Patient/{a['id']}/$empi-golden").json()
    gid = golden["id"]
    assert gid.startswith("golden-") and gid not in (a["id"], b["id"])
    assert fhir.get(f"/Patient/{gid}/$empi-golden").json()["link"] == golden["link"]

    bundle = fhir.get(f"/Patient/{gid}/$everything").json()
    found = ids(bundle)
    assert found[0] == f"Patient/{gid}" and bundle["entry"][0]["resource"]["link"] == golden["link"]
    assert {f"Patient/{a['id']}", f"Patient/{b['id']}"} <= set(found)
    assert f"Patient/{c['id']}" not in found
    assert sum(1 for x in found if x.startswith("Observation/")) == 5  # both sources' compartments, not c's
    assert len(found) == len(set(found)) == 8

    # Paged: the same set, the golden record once (on page one); one source's $everything is unchanged.
    paged = every_page(fhir, f"/Patient/{gid}/$everything", _count=3)
    assert sorted(paged) == sorted(found)
    own = ids(fhir.get(f"/Patient/{a['id']}/$everything").json())
    assert len(own) == 3 and f"Patient/{b['id']}" not in own

    # An unlink takes the record and its compartment out of the person at once (nothing to rewrite).
    assert fhir.post("/Patient/$empi-unlink", json=params(patient=b["id"])).status_code == 200
    after = ids(fhir.get(f"/Patient/{gid}/$everything").json())
    assert f"Patient/{b['id']}" not in after and len(after) == 4


def test_everything_on_an_unknown_or_merged_away_golden_id_is_not_found(fhir):
    a = create(fhir, registration("hospital-a", "A-1"))
    c = create(fhir, registration("village-c", "C-1", identifier=[], name=[{"text": "李强"}], birthDate="1962-08-01"))
    gone = fhir.get(f"/Patient/{c['id']}/$empi-golden").json()["id"]
    assert fhir.post("/Patient/$empi-merge", json=params(source=c["id"], target=a["id"])).status_code == 200
    assert fhir.get(f"/Patient/{gone}/$everything").status_code == 404  # its records joined a's person
    assert fhir.get("/Patient/golden-nobody/$everything").status_code == 404
    assert fhir.get("/Patient/golden-nobody/$empi-golden").status_code == 404


# ------------------------------------------------------------------------------------------ security on
@pytest.fixture
def secured(tmp_path, database_url):
    """The security tests' small province with the master index installed, and p1 registered a second
    time at hospB (p1b, with its own observation), linked to p1 by a reviewer."""
    from changbai import security
    from changbai.api.app import create_platform
    from changbai.identity.install import install
    from changbai.identity.registry import Registry
    from changbai.security.accounts import add_account
    from tests.security.conftest import ACCOUNTS, WORLD, World, observation, patient, secure_settings

    platform = create_platform(secure_settings(tmp_path, database_url), extensions=[security.install, install])
    sec = platform.security
    for username in ("resident1", "operator1", "clinA", "clinB", "clinC"):  # the readers this test needs
        attrs = dict(ACCOUNTS[username])
        add_account(sec.db, sec.policy, username, attrs.pop("role"), password=f"pw-{username}-secret", **attrs)
    with platform.repo.unit(Context(source="system")) as unit:
        for resource in WORLD:
            unit.update(resource["resourceType"], resource["id"], copy.deepcopy(resource))
        p1b = patient("p1b", "220103", "220102199001011234", "13812345678")
        unit.update("Patient", "p1b", {**p1b, "name": [{"text": "resident p1"}]})
        unit.update("Observation", "obsB", observation("obsB", "p1b", "hospB"))
        unit.update(
            "Encounter",
            "encB",
            {
                "resourceType": "Encounter",
                "id": "encB",
                "status": "finished",
                "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "AMB"},
                "subject": {"reference": "Patient/p1b"},
                "serviceProvider": {"reference": "Organization/hospB"},
            },
        )
        registry = Registry(unit.conn)
        registry.link("p1b", "p1", "reviewer")
        gid = registry.person_of("p1")
    live = LiveServer(platform.build_app(), free_port()).start()
    yield World(platform, live, platform.security), gid
    live.stop()
    platform.db.dispose()


def test_golden_everything_shows_each_reader_exactly_what_each_source_shows(secured):
    from tests.security.test_matrix import consent

    world, gid = secured
    with world.client("resident1") as c:  # hospB may read p1's record except the mental-health condition
        assert c.post("Consent", json=consent("p1", "Organization/hospB", exclude=["PSY"])).status_code == 201

    def visible(user: str, path: str) -> set[str]:
        with world.client(user) as c:
            r = c.get(path)
        assert r.status_code in (200, 404), r.text
        return set(ids(r.json())) if r.status_code == 200 else set()

    for user in ("operator1", "clinA", "clinB", "clinC"):
        whole = visible(user, f"Patient/{gid}/$everything")
        parts = visible(user, "Patient/p1/$everything") | visible(user, "Patient/p1b/$everything")
        assert whole - {f"Patient/{gid}"} == parts, user
        assert (f"Patient/{gid}" in whole) == bool(parts), user
    operator = visible("operator1", f"Patient/{gid}/$everything")
    assert {"Condition/psy1", "Observation/obs1", "Observation/obsB", "Patient/p1b"} <= operator
    clin_b = visible("clinB", f"Patient/{gid}/$everything")
    assert "Observation/obs1" in clin_b and "Condition/psy1" not in clin_b  # the consent's exclusion holds
