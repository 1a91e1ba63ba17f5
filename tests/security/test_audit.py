"""The audit trail: every access, write, sign-in and denial recorded as a BALP-shaped AuditEvent; the
hash chain proves it untouched (`changbai audit verify`) or names the first row that was changed."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from sqlalchemy import text

from tests.security.conftest import observation


def verify(world) -> subprocess.CompletedProcess:
    env = {**os.environ, "CHANGBAI_DATABASE_URL": world.platform.settings.database_url, "CHANGBAI_LOG_LEVEL": "ERROR"}
    return subprocess.run(
        [sys.executable, "-m", "changbai.cli", "audit", "verify"],
        cwd=world.platform.settings.data_dir.parent,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def busy(world) -> None:
    """Some traffic: reads, a denial, a write."""
    assert world.get("clinA", "Observation/obs1").status_code == 200
    assert world.get("clinB", "Observation/obs1").status_code == 404
    body = observation("audited", "p1", "hospA")
    with world.client("clinA") as c:
        assert c.put("Observation/audited", json=body).status_code == 201


def rows(world) -> list:
    with world.platform.db.engine.connect() as conn:
        return conn.execute(text("SELECT * FROM sec_audit ORDER BY seq")).mappings().all()


def test_untouched_trail_verifies(world):
    busy(world)
    r = verify(world)
    assert r.returncode == 0, r.stderr
    assert "intact" in r.stdout


@pytest.mark.parametrize("tamper", ["alter", "delete", "reorder"])
def test_tampering_is_detected(world, tamper):
    busy(world)
    all_rows = rows(world)
    assert len(all_rows) > 8
    target = all_rows[5]["seq"]
    with world.platform.db.engine.begin() as conn:
        if tamper == "alter":
            conn.execute(text("UPDATE sec_audit SET username = 'someone-else' WHERE seq = :s"), {"s": target})
        elif tamper == "delete":
            conn.execute(text("DELETE FROM sec_audit WHERE seq = :s"), {"s": target})
        else:  # swap the content of two neighbouring rows, hashes and all
            a, b = all_rows[5], all_rows[6]
            cols = [c for c in a if c != "seq"]
            sets = ", ".join(f"{c} = :{c}" for c in cols)
            conn.execute(text(f"UPDATE sec_audit SET {sets} WHERE seq = :seq"), {**dict(b), "seq": a["seq"]})
            conn.execute(text(f"UPDATE sec_audit SET {sets} WHERE seq = :seq"), {**dict(a), "seq": b["seq"]})
    r = verify(world)
    assert r.returncode == 1
    expected = all_rows[6]["seq"] if tamper == "delete" else target
    assert f"BROKEN at row {expected}" in r.stderr


def test_rows_cut_from_the_end_are_detected(world):
    busy(world)
    world.sec.trail.anchor_head()  # what the platform does every few seconds and at shutdown
    all_rows = rows(world)
    assert verify(world).returncode == 0
    with world.platform.db.engine.begin() as conn:  # the chain alone stays valid after this
        conn.execute(text("DELETE FROM sec_audit WHERE seq >= :s"), {"s": all_rows[-2]["seq"]})
    r = verify(world)
    assert r.returncode == 1
    assert f"BROKEN at row {all_rows[-1]['seq']}" in r.stderr and "removed from its end" in r.stderr


def test_resident_sees_who_read_their_record(world):
    busy(world)
    with world.client("resident1") as c:
        bundle = c.get("AuditEvent", params={"patient": "p1"}).json()
        readers = {e["resource"]["agent"][0]["who"]["identifier"]["value"] for e in bundle["entry"]}
        assert {"clinA", "clinB"} <= readers
        # and nothing about anyone else
        assert c.get("AuditEvent", params={"patient": "p2"}).json()["total"] == 0
        assert c.post("AuditEvent", json={"resourceType": "AuditEvent"}).status_code == 405
    denial = next(
        e["resource"] for e in bundle["entry"] if e["resource"]["agent"][0]["who"]["identifier"]["value"] == "clinB"
    )
    assert denial["outcome"] == "4"
    assert denial["entity"][0]["what"]["reference"] == "Patient/p1"
    with world.client("clinA") as c:
        assert c.get("AuditEvent").status_code == 403


def test_operator_searches_by_user_facility_and_time(world):
    busy(world)
    with world.client("operator1") as c:
        by_user = c.get("AuditEvent", params={"agent": "clinA"}).json()
        assert by_user["total"] >= 2
        assert {e["resource"]["agent"][0]["who"]["identifier"]["value"] for e in by_user["entry"]} == {"clinA"}
        writes = c.get("AuditEvent", params={"agent": "clinA", "subtype": "create"}).json()
        write = writes["entry"][0]["resource"]
        assert write["action"] == "C"
        assert any(e["what"]["reference"].startswith("Observation/audited") for e in write["entity"])
        by_facility = c.get("AuditEvent", params={"facility": "hospA", "date": "ge2020-01-01"}).json()
        assert by_facility["total"] >= 2
        assert c.get("AuditEvent", params={"date": "le2000-01-01"}).json()["total"] == 0
        one = c.get(f"AuditEvent/{write['id']}")
        assert one.status_code == 200 and one.json()["id"] == write["id"]
        assert c.get("AuditEvent", params={"nonsense": "1"}).status_code == 400


def test_a_refused_write_leaves_no_write_record(world):
    before = len(rows(world))
    with world.client("regulatorProv") as c:
        r = c.put("Observation/nope", json=observation("nope", "p1", "hospA"))
    assert r.status_code == 403
    after = rows(world)[before:]
    assert [row["category"] for row in after] == ["denied"]
    assert world.get("operator1", "Observation/nope").status_code == 404


def test_the_resident_index_of_a_trail_written_before_it_existed_is_filled_by_the_migration(tmp_path):
    from sqlalchemy import func, select

    from changbai.security import tables as st
    from changbai.store.database import Database, upgrade

    db = Database(f"sqlite:///{tmp_path / 'old.db'}", migrate=False)
    upgrade(db, "0009_web_session")
    blank = {c.name: "" for c in st.audit.c if c.name not in ("seq", "recorded", "flagged")}
    with db.write() as conn:
        conn.execute(
            st.audit.insert(),
            [
                {
                    **blank,
                    "recorded": 1,
                    "flagged": False,
                    "category": "read",
                    "action": "R",
                    "outcome": "0",
                    "patients": "p1 p2",
                },
                {**blank, "recorded": 2, "flagged": False, "category": "create", "action": "C", "outcome": "0"},
                {
                    **blank,
                    "recorded": 3,
                    "flagged": False,
                    "category": "read",
                    "action": "R",
                    "outcome": "0",
                    "patients": "p2",
                },
            ],
        )
    upgrade(db)
    ap = st.audit_patient.c
    with db.read() as conn:
        named = conn.execute(select(ap.patient, func.count()).group_by(ap.patient).order_by(ap.patient)).all()
    assert [tuple(r) for r in named] == [("p1", 1), ("p2", 2)]
    db.dispose()
