"""The other ways to subscribe: websocket (R4 bind and the bind-with-token flow), topic-based
notifications per the R4B backport (history bundles, filters, heartbeat), and criteria refused when
written rather than discovered at delivery."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.sync.client import connect

from tests.exchange.federation.nodes import wait_until
from tests.exchange.subscriptions.receiver import Receiver
from tests.exchange.subscriptions.test_delivery import _server

BACKPORT = "http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition/"
TOPIC = "https://changbai.example.org/fhir/SubscriptionTopic/patient-change"


@pytest.fixture
def node(tmp_path: Path) -> Iterator[tuple[Any, httpx.Client]]:
    with _server(tmp_path, f"sqlite:///{tmp_path / 'ch.db'}") as pair:
        yield pair


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver().up()
    yield r
    r.down()


def test_websocket_bind_with_token_gets_pings(node) -> None:  # type: ignore[no-untyped-def]
    live, c = node
    sub = c.post(
        "/Subscription",
        json={
            "resourceType": "Subscription",
            "status": "requested",
            "reason": "ward monitor",
            "criteria": "Encounter?status=in-progress",
            "channel": {"type": "websocket"},
        },
    ).json()
    token = c.get(f"/Subscription/{sub['id']}/$get-ws-binding-token").json()
    values = {p["name"]: next(v for k, v in p.items() if k.startswith("value")) for p in token["parameter"]}
    assert values["websocket-url"] == f"ws://127.0.0.1:{live.port}/subscriptions/ws"
    with connect(values["websocket-url"], open_timeout=10) as ws:
        ws.send("bind-with-token not-a-token")
        assert ws.recv(timeout=10).startswith("error")
        ws.send(f"bind-with-token {values['token']}")
        assert ws.recv(timeout=10) == f"bound {sub['id']}"
        enc = {"resourceType": "Encounter", "status": "in-progress", "class": {"code": "AMB"}}
        assert c.post("/Encounter", json=enc).status_code == 201
        assert ws.recv(timeout=15) == f"ping {sub['id']}"
        # A finished encounter does not match the criteria: no ping for it, the next match pings again.
        assert c.post("/Encounter", json={**enc, "status": "finished"}).status_code == 201
        assert c.post("/Encounter", json=enc).status_code == 201
        assert ws.recv(timeout=15) == f"ping {sub['id']}"
    # The R4 form binds by id.
    with connect(values["websocket-url"], open_timeout=10) as ws:
        ws.send(f"bind {sub['id']}")
        assert ws.recv(timeout=10) == f"bound {sub['id']}"


def test_topic_subscription_gets_backport_bundles_and_heartbeats(node, receiver) -> None:  # type: ignore[no-untyped-def]
    _, c = node
    sub = c.post(
        "/Subscription",
        json={
            "resourceType": "Subscription",
            "status": "requested",
            "reason": "registry feed",
            "criteria": TOPIC,
            "_criteria": {
                "extension": [{"url": BACKPORT + "backport-filter-criteria", "valueString": "Patient?gender=male"}]
            },
            "channel": {
                "type": "rest-hook",
                "endpoint": receiver.url,
                "payload": "application/fhir+json",
                "_payload": {
                    "extension": [{"url": BACKPORT + "backport-payload-content", "valueCode": "full-resource"}]
                },
                "extension": [{"url": BACKPORT + "backport-heartbeat-period", "valueUnsignedInt": 1}],
            },
        },
    )
    assert sub.status_code == 201, sub.text
    c.post("/Patient", json={"resourceType": "Patient", "gender": "female"})
    male = c.post("/Patient", json={"resourceType": "Patient", "gender": "male"}).json()

    def events() -> list[dict[str, Any]]:
        out = []
        for g in receiver.got():
            status = g["body"]["entry"][0]["resource"]
            kind = next(p["valueCode"] for p in status["parameter"] if p["name"] == "type")
            out.append({"kind": kind, "bundle": g["body"], "status": status})
        return out

    wait_until(lambda: any(e["kind"] == "event-notification" for e in events()), 15, "an event notification")
    wait_until(lambda: any(e["kind"] == "heartbeat" for e in events()), 15, "a heartbeat")
    notes = [e for e in events() if e["kind"] == "event-notification"]
    assert len(notes) == 1  # the female patient does not pass the filter
    bundle = notes[0]["bundle"]
    assert bundle["type"] == "history" and bundle["entry"][1]["resource"]["id"] == male["id"]
    topic = next(p["valueCanonical"] for p in notes[0]["status"]["parameter"] if p["name"] == "topic")
    assert topic == TOPIC


@pytest.mark.parametrize(
    "criteria,channel,fragment",
    [
        ("NoSuchType?x=1", {"type": "rest-hook", "endpoint": "http://127.0.0.1:9/h"}, "criteria"),
        ("Patient?gender=male", {"type": "email", "endpoint": "mailto:a@b"}, "channel.type"),
        ("Patient?gender=male", {"type": "rest-hook", "endpoint": "ftp://x"}, "endpoint"),
        ("Patient?nosuchparam=1", {"type": "rest-hook", "endpoint": "http://127.0.0.1:9/h"}, "nosuchparam"),
    ],
)
def test_unservable_subscriptions_are_refused(node, criteria: str, channel: dict[str, Any], fragment: str) -> None:  # type: ignore[no-untyped-def]
    _, c = node
    r = c.post(
        "/Subscription",
        json={
            "resourceType": "Subscription",
            "status": "requested",
            "reason": "x",
            "criteria": criteria,
            "channel": channel,
        },
    )
    assert r.status_code == 400 and r.json()["resourceType"] == "OperationOutcome"
    assert fragment in r.text


def test_only_allowed_receiver_hosts_are_served(tmp_path: Path, receiver: Receiver) -> None:
    with _server(tmp_path, f"sqlite:///{tmp_path / 'hosts.db'}", subscription_hosts="localhost") as (live, c):
        for host, token in (("127.0.0.1", "Bearer not-allowed"), ("localhost", "Bearer allowed")):
            sub = {
                "resourceType": "Subscription",
                "status": "active",
                "reason": "x",
                "criteria": "Patient?gender=other",
                "channel": {
                    "type": "rest-hook",
                    "endpoint": receiver.url.replace("127.0.0.1", host),
                    "header": [f"Authorization: {token}"],
                },
            }
            assert c.post("/Subscription", json=sub).status_code == 201
        c.post("/Patient", json={"resourceType": "Patient", "gender": "other"})
        wait_until(lambda: len(receiver.got()) >= 1, 15, "the allowed receiver's notification")
        time.sleep(0.5)
        assert [g["authorization"] for g in receiver.got()] == ["Bearer allowed"]
        assert httpx.get(f"{live.url}/subscriptions/status").json()["queueDepth"] == 0
