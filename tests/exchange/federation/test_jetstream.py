"""Upward replication over the real NATS JetStream server (CHANGBAI_FEDERATION_TRANSPORT=jetstream), in
process: a county and a province platform, each with its own SQLite file and security on. The county's
parent URL leads nowhere: its batches reach the province only through the stream.

What a user relies on: every change arrives once, in order per resource, whatever the batch size; a batch
resent after a crash before the checkpoint is dropped by the server; a batch the province refuses (scope,
signature) waits with the reason in the operator view, and nothing after it jumps ahead.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from joserfc.jwk import ECKey

from changbai.exchange.federation import cursors
from changbai.exchange.federation.credentials import load_or_create_key, public_jwks
from changbai.exchange.federation.enrol import register_child
from changbai.exchange.federation.jetstream import JetStreamTransport, subject
from changbai.exchange.federation.node import node_from_settings
from changbai.exchange.federation.operations import link_status, live_status
from changbai.exchange.federation.policy import load_policy
from changbai.exchange.federation.replicate import collect
from changbai.exchange.federation.worker import UPLINK, UplinkWorker
from changbai.settings import Settings
from changbai.store.pipeline import Context
from tests.exchange.federation.jetstream import NATS_URL, histories, js_call, messages_on
from tests.exchange.federation.nodes import wait_until


class Pair:
    """A province and one county (``county-a``) federated through ``stream``."""

    def __init__(self, tmp_path: Path, stream: str, scopes: str | None = None) -> None:
        from changbai.api.app import create_platform

        common: dict[str, Any] = {
            "mllp_port": 0,
            "security": True,
            "federation_transport": "jetstream",
            "nats_url": NATS_URL,
            "nats_stream": stream,
            "nats_ack_wait_seconds": 5,
            "federation_poll_seconds": 0.05,
        }
        self.stream = stream
        self.province = create_platform(
            Settings(
                data_dir=tmp_path / "prov",
                database_url=f"sqlite:///{tmp_path / 'prov.db'}",
                node_id="prov",
                node_tier="province",
                **common,
            )
        )
        key = load_or_create_key(tmp_path / "county" / "keys" / "node-client.json")
        register_child(self.province.db, "county-a", public_jwks(key), scopes=scopes)
        self.county = create_platform(
            Settings(
                data_dir=tmp_path / "county",
                database_url=f"sqlite:///{tmp_path / 'county.db'}",
                node_id="county-a",
                node_tier="county",
                parent_url="http://127.0.0.1:9/fhir",  # nothing listens: only the stream carries batches
                **common,
            )
        )
        self.started: list[Any] = []

    def start(self, *platforms: Any) -> None:
        for p in platforms or (self.province, self.county):
            for hook in p.on_startup:
                hook()
            self.started.append(p)

    def stop(self, p: Any) -> None:
        for hook in reversed(p.on_shutdown):
            hook()
        self.started.remove(p)

    def close(self) -> None:
        for p in list(reversed(self.started)):
            self.stop(p)
        for p in (self.county, self.province):
            p.db.dispose()

    def status(self, p: Any) -> dict[str, Any]:
        links = link_status(p.repo, node_from_settings(p.settings), live_status(p))["links"]
        return {link["name"]: link for link in links}

    def stream_last_seq(self) -> int:
        async def last(js: Any) -> int:
            return int((await js.stream_info(self.stream)).state.last_seq)

        return int(js_call(last))


@pytest.fixture
def pair(tmp_path: Path, stream: str) -> Iterator[Pair]:
    p = Pair(tmp_path, stream)
    yield p
    p.close()


def patient(i: int, **extra: Any) -> dict[str, Any]:
    return {"resourceType": "Patient", "name": [{"family": "李", "given": [f"p{i}"]}], **extra}


def write(platform: Any, resources: list[dict[str, Any]]) -> list[str]:
    """Each resource written in its own transaction at a node; returns their ids."""
    ids = []
    for r in resources:
        with platform.repo.unit(Context(source="cli")) as u:
            ids.append(u.create(r).stored.id)
    return ids


def change_some(platform: Any, ids: list[str]) -> None:
    """Updates (several per resource) and deletes, each its own transaction."""
    for round_ in range(3):
        for n, pid in enumerate(ids[: 12 - 3 * round_]):
            with platform.repo.unit(Context(source="cli")) as u:
                u.update("Patient", pid, {**patient(n), "id": pid, "active": bool(round_ % 2)})
    for pid in ids[-3:]:
        with platform.repo.unit(Context(source="cli")) as u:
            u.delete("Patient", pid)


def converged(pair: Pair, timeout: float = 60) -> None:
    state: dict[str, Any] = {}

    def same() -> bool:
        state["county"], state["prov"] = histories(pair.county), histories(pair.province)
        return bool(state["county"] == state["prov"])

    try:
        wait_until(same, timeout, "the province to hold every version of the county, in order")
    except AssertionError:
        c, p = state["county"], state["prov"]
        differ = [k for k in c if c[k] != p.get(k)][:3]
        raise AssertionError(f"{len(c)} vs {len(p)} resources; differ {differ}; {pair.status(pair.province)}") from None


class Killed(BaseException):
    """The process ends here (nothing after it runs)."""


class CrashAfterSend:
    """The node dies once JetStream has stored the batch and before the checkpoint is written."""

    deduplicates = True

    def __init__(self, inner: JetStreamTransport) -> None:
        self.inner = inner

    def send(self, changes: list[Any]) -> None:
        self.inner.send(changes)
        raise Killed("after the publish, before the checkpoint")


def test_changes_arrive_once_in_order_and_a_resend_is_dropped(pair: Pair) -> None:
    pair.start()
    ids = write(pair.county, [patient(i) for i in range(20)])
    change_some(pair.county, ids)
    converged(pair)
    assert messages_on(pair.stream, subject(pair.stream, "county-a")) == 0  # all acknowledged, none left
    link = pair.status(pair.province)["from:county-a"]
    assert link["failuresInARow"] == 0 and link["transport"] == "jetstream"

    # A batch bigger than the server's max_payload (1 MB) travels as several messages, all applied.
    before = pair.stream_last_seq()
    narrative = {"status": "generated", "div": f'<div xmlns="http://www.w3.org/1999/xhtml">{"病历" * 2500}</div>'}
    with pair.county.repo.unit(Context(source="cli")) as u:
        u.put_many([{**patient(i, text=narrative), "id": f"big-{i}"} for i in range(150)])
    converged(pair)
    assert pair.stream_last_seq() - before >= 2

    # The county dies after publishing a batch and before its checkpoint; more is written meanwhile.
    pair.stop(pair.county)
    county_node = node_from_settings(pair.county.settings)
    policy = load_policy("whole-record")
    transport = JetStreamTransport(NATS_URL, pair.stream, "county-a", load_or_create_key(_key(pair)))
    write(pair.county, [patient(100 + i) for i in range(5)])
    crashing = UplinkWorker(pair.county.repo, county_node, policy, CrashAfterSend(transport))
    checkpoint = cursors.get(pair.county.db, UPLINK).seq
    received = pair.status(pair.province)["from:county-a"]["sent"]
    with pytest.raises(Killed):
        crashing.step()
    assert cursors.get(pair.county.db, UPLINK).seq == checkpoint
    stored = pair.stream_last_seq()
    write(pair.county, [patient(200 + i) for i in range(5)])
    # After the restart the same batch goes again (same ids): the server drops it; then the new writes.
    restarted = UplinkWorker(pair.county.repo, county_node, policy, transport)
    while restarted.step():
        pass
    transport.close()
    assert pair.stream_last_seq() == stored + 1
    converged(pair)
    # The province was handed each of the 10 changes once: the resent batch never reached it.
    assert pair.status(pair.province)["from:county-a"]["sent"] - received == 10
    pending, _ = collect(pair.county.repo, county_node, policy, cursors.get(pair.county.db, UPLINK).seq, 10)
    assert pending == []


def _key(pair: Pair) -> Path:
    return Path(pair.county.settings.data_dir) / "keys" / "node-client.json"


def test_a_refused_batch_waits_and_nothing_jumps_ahead(tmp_path: Path, stream: str) -> None:
    pair = Pair(tmp_path, stream, scopes="system/Patient.cud")  # this county may send Patients only
    try:
        obs = {"resourceType": "Observation", "status": "final", "code": {"text": "bp"}}
        write(pair.county, [patient(1), obs])  # one batch with an Observation: refused whole
        pair.start()
        wait_until(
            lambda: pair.status(pair.province).get("from:county-a", {}).get("failuresInARow", 0) >= 2,
            30,
            "the province to refuse the batch twice",
        )
        write(pair.county, [patient(2)])  # a later batch, allowed on its own, must wait behind it
        time.sleep(2)
        link = pair.status(pair.province)["from:county-a"]
        assert "system/Observation" in link["lastError"]
        assert histories(pair.province) == {}  # nothing applied, neither the refused batch nor the next
        assert messages_on(stream, subject(stream, "county-a")) == 2  # both wait in the stream
        # The county's link is fine: its batches are safe in the stream; the view says how many wait.
        uplink = pair.status(pair.county)["uplink"]
        assert uplink["failuresInARow"] == 0 and uplink["awaitingParent"] == 2

        # A batch for another registered child, signed with a key the province does not know: refused,
        # audited, never applied.
        register_child(pair.province.db, "county-b", public_jwks(ECKey.generate_key("P-384", private=True)))
        stranger = ECKey.generate_key("P-384", private=True, auto_kid=True)
        forged = JetStreamTransport(NATS_URL, stream, "county-b", stranger)
        changes, _ = collect(
            pair.county.repo, node_from_settings(pair.county.settings), load_policy("whole-record"), 0, 1
        )
        forged.send(changes)
        forged.close()
        wait_until(
            lambda: "does not verify" in (pair.status(pair.province).get("from:county-b", {}).get("lastError") or ""),
            30,
            "the forged batch to be refused",
        )
        assert histories(pair.province) == {}
        trail, _ = pair.province.security.trail.search([], 50, 0)
        assert any(r["category"] == "denied" and "does not verify" in r["detail"] for r in trail)
    finally:
        pair.close()
