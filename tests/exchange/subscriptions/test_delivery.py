"""Subscriptions as an outside system sees them: a real receiver on a loopback port that fails, is slow
and is down, and still ends with every notification, once in effect, in order per resource."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from changbai.settings import Settings
from tests.conftest import ROOT, LiveServer, free_port
from tests.exchange.federation.nodes import wait_until
from tests.exchange.subscriptions.receiver import Receiver


@contextmanager
def _server(tmp_path: Path, database_url: str, **values: Any) -> Iterator[tuple[LiveServer, httpx.Client]]:
    from changbai.api.app import create_platform

    port = free_port()
    settings = Settings(
        data_dir=tmp_path / "var",
        database_url=database_url,
        base_url=f"http://127.0.0.1:{port}/fhir",
        subscription_retry_seconds=0.1,
        subscription_max_backoff_seconds=0.8,
        **values,
    )
    platform = create_platform(settings)
    live = LiveServer(platform.build_app(), port).start()
    with httpx.Client(base_url=live.fhir, timeout=30) as client:
        yield live, client
    live.stop()
    platform.db.dispose()


@pytest.fixture
def node(tmp_path: Path) -> Iterator[tuple[LiveServer, httpx.Client]]:
    with _server(tmp_path, f"sqlite:///{tmp_path / 'sub.db'}") as pair:
        yield pair


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver().up()
    yield r
    r.down()


def rest_hook(receiver: Receiver, criteria: str, payload: bool = True) -> dict[str, Any]:
    channel: dict[str, Any] = {"type": "rest-hook", "endpoint": receiver.url, "header": ["Authorization: Bearer abc"]}
    if payload:
        channel["payload"] = "application/fhir+json"
    return {
        "resourceType": "Subscription",
        "status": "requested",
        "reason": "test",
        "criteria": criteria,
        "channel": channel,
    }


def female(i: int) -> dict[str, Any]:
    return {"resourceType": "Patient", "gender": "female", "name": [{"family": "李", "given": [f"P{i}"]}]}


def test_notifications_survive_failing_slow_and_down_receiver(node, receiver) -> None:  # type: ignore[no-untyped-def]
    live, c = node
    r = c.post("/Subscription", json=rest_hook(receiver, "Patient?gender=female"))
    assert r.status_code == 201
    expected: list[tuple[str, int]] = []  # (id, version) the receiver must end up with, in order per id

    def write(n: int, ids: list[str]) -> None:
        for i in range(n):
            if ids and i % 2:
                pid = ids[i % len(ids)]
                current = c.get(f"/Patient/{pid}").json()
                current["active"] = not current.get("active", False)
                out = c.put(f"/Patient/{pid}", json=current)
            else:
                out = c.post("/Patient", json=female(i))
                ids.append(out.json()["id"])
            expected.append((out.json()["id"], int(out.json()["meta"]["versionId"])))
        c.post("/Patient", json={"resourceType": "Patient", "gender": "male"})  # matches nothing

    ids: list[str] = []
    write(6, ids)  # receiver fine
    wait_until(lambda: len(receiver.got()) >= len(expected), 20, "first notifications")

    receiver.mode = "fail"
    write(6, ids)
    wait_until(lambda: receiver.refused >= 3, 20, "the receiver to refuse retries")
    status = httpx.get(f"{live.url}/subscriptions/status").json()
    assert status["queueDepth"] > 0 and "500" in (status["subscriptions"][0]["lastError"] or "")
    receiver.mode = "slow"
    write(4, ids)
    wait_until(lambda: len(receiver.got()) >= len(expected) - 2, 30, "slow deliveries")

    receiver.down()
    write(6, ids)
    time.sleep(1.5)  # several refused connections, backing off
    receiver.mode = "ok"
    receiver.up()
    deleted = ids[0]
    assert c.delete(f"/Patient/{deleted}").status_code == 200
    wait_until(
        lambda: any(g["method"] == "DELETE" for g in receiver.got()) and len(receiver.got()) >= len(expected) + 1,
        30,
        "every notification after the receiver came back",
    )
    got = receiver.got()
    # Exactly once in effect: each (id, version) arrived; repeats only ever of the same event.
    puts = [(g["body"]["id"], int(g["body"]["meta"]["versionId"])) for g in got if g["method"] == "PUT"]
    assert sorted(set(puts)) == sorted(set(expected))
    events = [g["event"] for g in got]
    assert len(set(events)) == len(expected) + 1
    # In order per resource: versions never go backwards, and the deletion comes last.
    for pid in ids:
        versions = [v for i, v in puts if i == pid]
        assert versions == sorted(versions)
    assert [g["method"] for g in got if g["path"].endswith(f"/Patient/{deleted}")][-1] == "DELETE"
    assert all(g["authorization"] == "Bearer abc" for g in got)
    assert httpx.get(f"{live.url}/subscriptions/status").json()["queueDepth"] == 0


def test_dead_letters_are_listed_and_replayed(tmp_path: Path, receiver: Receiver) -> None:
    db = f"sqlite:///{tmp_path / 'dead.db'}"
    with _server(tmp_path, db, subscription_give_up_seconds=0.5) as (live, c):
        sub = c.post("/Subscription", json=rest_hook(receiver, "Observation?code=http://loinc.org|8480-6")).json()
        receiver.down()
        obs = {
            "resourceType": "Observation",
            "status": "final",
            "code": {"coding": [{"system": "http://loinc.org", "code": "8480-6"}]},
        }
        for _ in range(3):
            assert c.post("/Observation", json=obs).status_code == 201
        wait_until(
            lambda: len(httpx.get(f"{live.url}/subscriptions/dead-letters").json()["deadLetters"]) == 3,
            20,
            "three dead letters",
        )
        dead = httpx.get(f"{live.url}/subscriptions/dead-letters").json()["deadLetters"]
        assert {d["subscription"] for d in dead} == {sub["id"]} and all("Connect" in d["lastError"] for d in dead)
        receiver.up()
        r = httpx.post(f"{live.url}/subscriptions/dead-letters/replay", json={"ids": [dead[0]["id"]]})
        assert r.json() == {"replayed": 1}
        wait_until(lambda: len(receiver.got()) == 1, 20, "the replayed notification")
        assert httpx.post(f"{live.url}/subscriptions/dead-letters/replay", json={"ids": "x"}).status_code == 400
    # The command line sees the same list, and replays the rest.
    env = {"CHANGBAI_LOG_LEVEL": "WARNING", "PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"}
    out = subprocess.run(
        [sys.executable, "-m", "changbai.cli", "subscriptions", "--database", db, "dead-letters"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert out.returncode == 0 and "2 dead letter(s)" in out.stdout, out.stderr
    out = subprocess.run(
        [sys.executable, "-m", "changbai.cli", "subscriptions", "--database", db, "replay"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert out.returncode == 0 and "2 notification(s)" in out.stdout, out.stderr
