"""The operator's commands on the node's machine: setup, users, token, keys; and the demo accounts."""

from __future__ import annotations

import os
import subprocess
import sys

import httpx
import pytest

from tests.conftest import LiveServer, free_port


def changbai(tmp_path, database_url, *args):
    env = {**os.environ, "CHANGBAI_DATABASE_URL": database_url, "CHANGBAI_LOG_LEVEL": "ERROR"}
    return subprocess.run(
        [sys.executable, "-m", "changbai.cli", *args],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)  # accounts on PostgreSQL: test_oauth.py
def test_setup_users_and_token(tmp_path, database_url):
    first = changbai(tmp_path, database_url, "setup")
    assert first.returncode == 0 and "admin" in first.stdout and "Password" in first.stdout
    again = changbai(tmp_path, database_url, "setup")
    assert again.returncode == 0 and "already set up" in again.stdout  # the password is shown only once
    added = changbai(
        tmp_path, database_url, "users", "add", "dr-wang", "--role", "clinician", "--organization", "hospA"
    )
    assert added.returncode == 0 and "password:" in added.stdout
    bad = changbai(tmp_path, database_url, "users", "add", "x", "--role", "king")
    assert bad.returncode == 2 and "Unknown role" in bad.stderr and "Traceback" not in bad.stderr
    listed = changbai(tmp_path, database_url, "users", "list")
    assert "| dr-wang | user | clinician | hospA |" in listed.stdout

    from changbai.api.app import create_platform
    from tests.security.conftest import secure_settings

    settings = secure_settings(tmp_path, database_url)
    platform = create_platform(settings)
    live = LiveServer(platform.build_app(), free_port()).start()
    try:
        token = changbai(tmp_path, database_url, "token", "dr-wang", "--audience", live.fhir).stdout.strip()
        r = httpx.get(f"{live.fhir}/Observation", headers={"authorization": f"Bearer {token}"})
        assert r.status_code == 200
        assert changbai(tmp_path, database_url, "keys", "rotate").returncode == 0
        platform.security.keys.load()
        assert httpx.get(f"{live.fhir}/Observation", headers={"authorization": f"Bearer {token}"}).status_code == 200
        unknown = changbai(tmp_path, database_url, "token", "nobody")
        assert unknown.returncode == 2 and "No account" in unknown.stderr
    finally:
        live.stop()
        platform.db.dispose()


def test_demo_accounts_cover_every_role(world):
    from changbai.security import create_demo_accounts

    accounts = create_demo_accounts(world.platform)
    # child platform nodes are enrolled by `changbai federation children add`, not given demo accounts
    assert {role for _, _, role in accounts} == set(world.sec.policy.roles) - {"node"}
    username, password, _ = next(a for a in accounts if a[2] == "clinician")
    from changbai.security.accounts import authenticate

    assert authenticate(world.sec.db, username, password)["role"] == "clinician"


def test_the_demo_clinician_sees_the_demo_resident_of_the_synthetic_province(tmp_path):
    """The demo accounts are bound to a real encounter's facility, doctor and resident, so a newcomer
    signing in as the clinician sees a record (the province's first Organization is an insurer)."""
    from changbai.api.app import create_platform
    from changbai.security import create_demo_accounts
    from changbai.security.accounts import get_account
    from changbai.store.bulk import load_directory
    from changbai.synth import generate
    from tests.security.conftest import secure_settings

    generate(tmp_path / "province", 15, 5)
    platform = create_platform(secure_settings(tmp_path, f"sqlite:///{tmp_path / 'demo.db'}"))
    live = LiveServer(platform.build_app(), free_port()).start()
    try:
        assert load_directory(platform.repo, tmp_path / "province", workers=0).errors == []
        create_demo_accounts(platform)
        sec = platform.security
        clinician = get_account(sec.db, "demo-clinician")
        resident = get_account(sec.db, "demo-resident")["patient"]
        scope = " ".join(str(s) for s in sec.policy.role("clinician").scopes)
        token = sec.issue_token(clinician, scope, live.fhir)[0]
        r = httpx.get(f"{live.fhir}/Patient/{resident}", headers={"authorization": f"Bearer {token}"})
        assert r.status_code == 200, r.text
        found = httpx.get(
            f"{live.fhir}/Encounter", params={"_summary": "count"}, headers={"authorization": f"Bearer {token}"}
        )
        assert found.json()["total"] > 0  # the facility's own encounters
    finally:
        live.stop()
        platform.db.dispose()
