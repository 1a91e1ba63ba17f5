"""Every break-the-glass access is open for review until a reviewer (a role with the service
security.break-glass-review: the auditor, the platform operator) records an outcome and a comment; over
the API and the CLI, each step in the audit trail."""

from __future__ import annotations

import os
import subprocess
import sys

import httpx


def call(world, user: str, method: str, path: str, **kw) -> httpx.Response:
    headers = {"authorization": f"Bearer {world.token(user)}"}
    return httpx.request(method, f"{world.server.url}{path}", headers=headers, timeout=60, **kw)


def break_glass(world, user: str, patient: str, reason: str) -> None:
    r = call(world, user, "POST", "/auth/break-glass", json={"patient": patient, "reason": reason})
    assert r.status_code == 200, r.text


def test_break_the_glass_review_over_the_api(world):
    break_glass(world, "clinC", "p1", "unconscious in the emergency room")
    assert world.get("clinC", "Observation/obs1").status_code == 200

    listed = call(world, "auditor1", "GET", "/auth/break-glass")
    assert listed.status_code == 200, listed.text
    [event] = listed.json()["events"]
    assert (event["username"], event["patient"], event["review"]) == ("clinC", "p1", None)
    assert event["reason"] == "unconscious in the emergency room" and event["reads"] >= 1

    # only reviewers list and review; bad reviews are refused and change nothing
    assert call(world, "clinA", "GET", "/auth/break-glass").status_code == 403
    review = f"/auth/break-glass/{event['id']}/review"
    assert call(world, "clinA", "POST", review, json={"outcome": "justified", "comment": "fine"}).status_code == 403
    assert call(world, "auditor1", "POST", review, json={"outcome": "ok", "comment": "fine"}).status_code == 400
    assert call(world, "auditor1", "POST", review, json={"outcome": "justified"}).status_code == 400
    assert call(world, "auditor1", "POST", review, content=b"not json").status_code == 400
    unknown = {"outcome": "justified", "comment": "looks fine"}
    assert call(world, "auditor1", "POST", "/auth/break-glass/999999/review", json=unknown).status_code == 404
    assert call(world, "auditor1", "GET", "/auth/break-glass", params={"status": "nonsense"}).status_code == 400
    assert len(call(world, "auditor1", "GET", "/auth/break-glass").json()["events"]) == 1

    done = call(
        world, "auditor1", "POST", review, json={"outcome": "justified", "comment": "ER record confirms the patient"}
    )
    assert done.status_code == 200, done.text
    assert done.json()["review"]["outcome"] == "justified" and done.json()["review"]["reviewer"] == "auditor1"
    again = call(world, "auditor1", "POST", review, json={"outcome": "not-justified", "comment": "changed my mind"})
    assert again.status_code == 409
    assert call(world, "auditor1", "GET", "/auth/break-glass").json()["events"] == []
    [reviewed] = call(world, "operator1", "GET", "/auth/break-glass", params={"status": "reviewed"}).json()["events"]
    assert reviewed["review"]["comment"] == "ER record confirms the patient"

    # the review, the listings and the refusals are in the audit trail, which still verifies
    with world.client("operator1") as c:
        events = c.get("AuditEvent", params={"subtype": "review"}).json()
    [row] = [e["resource"] for e in events.get("entry", [])]
    assert row["agent"][0]["who"]["identifier"]["value"] == "auditor1"
    assert "justified" in row["outcomeDesc"] and "clinC" in row["outcomeDesc"]
    with world.client("operator1") as c:
        denied = c.get("AuditEvent", params={"agent": "clinA", "subtype": "denied"}).json()
    assert denied["total"] >= 2
    assert world.sec.trail.verify().ok


def test_break_the_glass_review_on_the_command_line(world, tmp_path):
    break_glass(world, "clinA", "p2", "referred at night, records needed")
    settings = world.platform.settings
    env = {
        **os.environ,
        "CHANGBAI_DATABASE_URL": settings.database_url,
        "CHANGBAI_DATA_DIR": str(settings.data_dir),
        "CHANGBAI_LOG_LEVEL": "ERROR",
    }

    def cli(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "changbai.cli", "break-glass", *args],
            env=env,
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=120,
        )

    listed = cli("list", "--as", "auditor1")
    assert listed.returncode == 0, listed.stderr
    assert "clinA" in listed.stdout and "p2" in listed.stdout and "referred at night" in listed.stdout
    event_id = call(world, "auditor1", "GET", "/auth/break-glass").json()["events"][0]["id"]
    refused = cli("review", str(event_id), "--outcome", "justified", "--comment", "ok then", "--as", "clinB")
    assert refused.returncode != 0 and "does not review" in refused.stderr and "Traceback" not in refused.stderr
    verdict = ("--outcome", "not-justified", "--comment", "no referral found")
    done = cli("review", str(event_id), *verdict, "--as", "auditor1")
    assert done.returncode == 0, done.stderr
    [reviewed] = call(world, "auditor1", "GET", "/auth/break-glass", params={"status": "reviewed"}).json()["events"]
    assert reviewed["review"] == {**reviewed["review"], "outcome": "not-justified", "reviewer": "auditor1"}
    assert world.sec.trail.verify().ok
