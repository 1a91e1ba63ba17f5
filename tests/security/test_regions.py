"""Scope follows the resident's address: an officer of an area sees the records of residents who live
there (and records held there). When a resident moves, the Patient's new address relabels it in the
transaction that writes it, and what each area's officers see changes with it, record by record and in
searches and counts; a move that is rolled back changes nothing."""

from __future__ import annotations

import copy
import os
import subprocess
import sys

from sqlalchemy import text

from changbai.api.app import create_platform
from changbai.errors import NotFound
from changbai.settings import Settings
from changbai.store.pipeline import Context
from tests.security.conftest import address, observation, org, patient, secure_settings


def moved(resource: dict, county: str) -> dict:
    out = copy.deepcopy(resource)
    out["address"] = [address(county, "home")]
    return out


def sees(world, user: str) -> tuple[int, int, int]:
    """(status of the record, status of the resident, how many of the resident's records a search counts)"""
    with world.client(user) as c:
        obs = c.get("Observation/obs3").status_code
        pat = c.get("Patient/p3").status_code
        count = c.get("Observation", params={"subject": "Patient/p3", "_summary": "count"}).json()["total"]
    return obs, pat, count


def test_scope_follows_the_residents_address(world):
    # p3 lives in Changchun (county 220103) and is treated at hospC in Jilin city (county 220202)
    p3 = patient("p3", "220103", "220103197007071234", "13700001111")
    with world.platform.repo.unit(Context(source="system")) as unit:
        unit.update("Patient", "p3", copy.deepcopy(p3))
        unit.update("Observation", "obs3", observation("obs3", "p3", "hospC"))
    assert sees(world, "cdcCity220100") == (200, 200, 1)  # lives in the city
    assert sees(world, "cdc220202") == (200, 404, 1)  # the record is held there, the resident lives elsewhere
    assert sees(world, "cdc220102") == (404, 404, 0)

    # p3 moves to county 220102 (same city): the county officer there now sees p3 and p3's records
    with world.client("operator1") as c:
        assert c.put("Patient/p3", json=moved(p3, "220102")).status_code == 200
    assert sees(world, "cdc220102") == (200, 200, 1)
    assert sees(world, "cdcCity220100") == (200, 200, 1)

    # p3 moves to Jilin city: Changchun's officers lose sight of p3, Jilin city's county keeps the record
    with world.client("operator1") as c:
        assert c.put("Patient/p3", json=moved(p3, "220202")).status_code == 200
    assert sees(world, "cdc220102") == (404, 404, 0)
    assert sees(world, "cdcCity220100") == (404, 404, 0)
    assert sees(world, "cdc220202") == (200, 200, 1)

    # a move in a transaction that fails is rolled back with everything else: nothing changes
    bundle = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {"resource": moved(p3, "220102"), "request": {"method": "PUT", "url": "Patient/p3"}},
            {"request": {"method": "DELETE", "url": "Observation/obs3"}, "resource": None},
            {"resource": {"resourceType": "Observation"}, "request": {"method": "POST", "url": "Observation"}},
        ],
    }
    bundle["entry"][1].pop("resource")
    with world.client("operator1") as c:
        r = c.post("", json=bundle)
        assert r.status_code >= 400, r.text
    assert sees(world, "cdc220102") == (404, 404, 0)
    assert sees(world, "cdc220202") == (200, 200, 1)


def test_relabel_recomputes_labels_written_before(tmp_path, database_url):
    """`changbai relabel`: records written with security off get their labels; a record labelled the old way
    (the resident's former home copied onto it) loses the stale codes; a second run changes nothing."""
    off = create_platform(Settings(data_dir=tmp_path / "var", database_url=database_url, security=False, mllp_port=0))
    stale = observation("obs-old", "p9", "hospC")
    region = "https://changbai.example/fhir/CodeSystem/access-region"
    stale["meta"] = {"security": [{"system": region, "code": c} for c in ("220103", "220100", "220000")]}
    with off.repo.unit(Context(source="system")) as unit:
        for resource in (
            org("hospA", "220102"),
            org("hospC", "220202"),
            patient("p9", "220202", "220202198001011234", "13600001111"),
            observation("obs9", "p9", "hospA"),
            stale,
        ):
            unit.update(resource["resourceType"], resource["id"], resource)
    off.db.dispose()

    platform = create_platform(secure_settings(tmp_path, database_url))
    sec = platform.security

    def visible(role: str, rid: str, **claims: str) -> bool:
        p = sec.principal({"sub": "t", "role": role, "scope": "user/*.rs", **claims})
        try:
            with platform.repo.unit(Context(principal=p), write=False) as unit:
                unit.read("Observation", rid)
            return True
        except NotFound:
            return False

    assert not visible("clinician", "obs9", organization="hospA")  # no labels yet
    assert visible("public_health", "obs-old", region="220100")  # the stale home codes of p9's old city

    env = {
        **os.environ,
        "CHANGBAI_DATABASE_URL": database_url,
        "CHANGBAI_DATA_DIR": str(tmp_path / "var"),
        "CHANGBAI_LOG_LEVEL": "ERROR",
        "CHANGBAI_SECURITY": "on",
    }
    run = [sys.executable, "-m", "changbai.cli", "relabel"]
    done = subprocess.run(run, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "relabelled 5 records" in done.stdout

    assert visible("clinician", "obs9", organization="hospA")
    assert not visible("public_health", "obs-old", region="220100")
    assert visible("public_health", "obs-old", region="220202")  # held there, and p9 lives there
    again = subprocess.run(run, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0 and "relabelled 0 records" in again.stdout
    # the ID number written in clear while security was off is now protected at rest
    with platform.db.read() as conn:
        stored = conn.execute(
            text("SELECT content FROM resource_version WHERE rtype = 'Patient' AND id = 'p9' ORDER BY version DESC")
        ).scalar()
    assert "220202198001011234" not in stored and "bidx:" in stored
    platform.db.dispose()
