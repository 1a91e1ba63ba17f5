"""The durable delivery queue: fed from the outbox, drained in order per subscription.

The feeder reads outbox rows after its checkpoint, asks the store's own search whether each changed
resource matches a subscription's criteria (the criteria search plus ``_id``: there is no second
matcher), and writes the owed notifications and the new checkpoint in one transaction, so a change is
queued exactly once. A deletion is owed to the subscriptions that were told of the resource before.

The deliverer sends each subscription's notifications strictly in queue order (hence in order per
resource); a failure holds that subscription back with exponential backoff (others go on), and after the
give-up window the notification becomes a dead letter, which an operator can replay.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import urlencode

from sqlalchemy import and_, func, insert, select, update

from changbai import logs
from changbai.errors import ChangbaiError
from changbai.exchange.federation import cursors
from changbai.exchange.federation import tables as ft
from changbai.exchange.subscriptions import tables as st
from changbai.exchange.subscriptions.channels import DeliveryFailed, RestHook, WebSocketHub
from changbai.exchange.subscriptions.model import Sub, endpoint_allowed, parse
from changbai.store import schema
from changbai.store.pipeline import Context
from changbai.store.repository import Repository, Unit

log = logs.get(__name__)

FEEDER = "subscriptions"
LIVE = "requested,active"  # Subscription.status values that are served
GONE = "the subscription is no longer active (or its endpoint host is not allowed)"
BATCH = 500
_D = st.delivery.c
_O = schema.outbox.c


def now_ms() -> int:
    return int(time.time() * 1000)


def load_active(unit: Unit, hosts: str = "*") -> dict[str, Sub]:
    """Live subscriptions (requested or active), each with the outbox seq of its creation."""
    subs: dict[str, Sub] = {}
    offset = 0
    while True:
        query = [("status", LIVE), ("_count", "1000"), ("_offset", str(offset))]
        page = unit.search("Subscription", query)
        for m in page.matches:
            try:
                sub = parse(m.resource)
            except ChangbaiError as exc:
                logs.event(log, "subscription unusable", subscription=m.id, error=exc.message)
                continue
            if not endpoint_allowed(sub, hosts):
                logs.event(log, "subscription endpoint host not allowed", subscription=m.id, endpoint=sub.endpoint)
                continue
            first = unit.conn.execute(
                select(func.min(_O.seq)).where(_O.rtype == "Subscription", _O.id == m.id)
            ).scalar()
            sub.since = int(first or 0)
            subs[sub.id] = sub
        if not page.has_more:
            return subs
        offset += 1000


def matches(unit: Unit, sub: Sub, rtype: str, id: str) -> bool:
    """The store's search, restricted to the changed resource's id, decides."""
    return bool(unit.find(rtype, urlencode([*sub.params, ("_id", id)])))


class Feeder:
    def __init__(self, repo: Repository, hosts: str = "*") -> None:
        self.repo = repo
        self.hosts = hosts
        self.subs: dict[str, Sub] | None = None

    def step(self) -> int:
        after = int(cursors.get(self.repo.db, FEEDER).seq)
        owed: list[dict[str, Any]] = []
        with self.repo.unit(Context(source="system"), write=False) as u:
            rows = u.conn.execute(select(schema.outbox).where(_O.seq > after).order_by(_O.seq).limit(BATCH)).all()
            if not rows:
                return 0
            if self.subs is None:
                self.subs = load_active(u, self.hosts)
            told: set[tuple[str, str, str]] = set()
            for row in rows:
                if row.rtype == "Subscription":
                    self.subs = load_active(u, self.hosts)
                for sub in self.subs.values():
                    if sub.rtype != row.rtype or row.seq <= sub.since or row.action not in sub.interactions:
                        continue
                    if row.action == "delete":
                        hit = (sub.id, row.rtype, row.id) in told or _was_told(u, sub.id, row.rtype, row.id)
                    else:
                        hit = matches(u, sub, row.rtype, row.id)
                    if hit:
                        told.add((sub.id, row.rtype, row.id))
                        owed.append(_owed(sub.id, row))
        with self.repo.db.write() as conn:
            moved = conn.execute(
                update(ft.cursor).where(ft.cursor.c.name == FEEDER, ft.cursor.c.seq == after).values(seq=rows[-1].seq)
            )
            if moved.rowcount == 1 and owed:
                conn.execute(insert(st.delivery), owed)
        return len(rows)


def _was_told(unit: Unit, sub_id: str, rtype: str, id: str) -> bool:
    q = select(_D.seq).where(_D.subscription == sub_id, _D.rtype == rtype, _D.id == id).limit(1)
    return unit.conn.execute(q).first() is not None


def _owed(sub_id: str, row: Any) -> dict[str, Any]:
    now = now_ms()
    return {
        "subscription": sub_id,
        "event": row.seq,
        "rtype": row.rtype,
        "id": row.id,
        "version": row.version,
        "action": row.action,
        "status": "pending",
        "attempts": 0,
        "next_attempt": now,
        "created": now,
    }


class Deliverer:
    def __init__(
        self,
        repo: Repository,
        hub: WebSocketHub,
        retry_seconds: float,
        max_backoff_seconds: float,
        give_up_seconds: float,
        base_url: Callable[[], str],
        hosts: str = "*",
    ) -> None:
        self.repo = repo
        self.hosts = hosts
        self.hub = hub
        self.rest = RestHook()
        self.retry_ms = int(retry_seconds * 1000)
        self.max_backoff_ms = int(max_backoff_seconds * 1000)
        self.give_up_ms = int(give_up_seconds * 1000)
        self.base_url = base_url
        self.counts: dict[str, int] = {}  # events sent per subscription since start (backport numbering)
        self.last_sent: dict[str, float] = {}
        self._beat_checked = 0.0

    def step(self) -> int:
        now = now_ms()
        with self.repo.db.read() as conn:
            heads = conn.execute(
                select(_D.subscription, func.min(_D.seq)).where(_D.status == "pending").group_by(_D.subscription)
            ).all()
        done = 0
        for sub_id, _head in heads:
            done += self._drain(sub_id, now)
        self._heartbeats()
        return done

    def _current(self, sub_id: str) -> Sub | None:
        with self.repo.unit(Context(source="system"), write=False) as u:
            if not u.exists("Subscription", sub_id):
                return None
            resource = u.read("Subscription", sub_id).resource or {}
        if resource.get("status") not in ("requested", "active"):
            return None
        try:
            sub = parse(resource)
        except ChangbaiError:
            return None
        return sub if endpoint_allowed(sub, self.hosts) else None

    def _drain(self, sub_id: str, now: int) -> int:
        with self.repo.db.read() as conn:
            rows = conn.execute(
                select(st.delivery).where(_D.subscription == sub_id, _D.status == "pending").order_by(_D.seq).limit(100)
            ).all()
        if not rows or rows[0].next_attempt > now:
            return 0
        sub = self._current(sub_id)
        done = 0
        for row in rows:
            if sub is None:
                self._mark(row.seq, status="dead", last_error=GONE)
                continue
            try:
                self._send(sub, row)
            except DeliveryFailed as exc:
                if self._failed(row, str(exc)):
                    continue  # dead-lettered: the rest of the queue may go on
                return done
            self._mark(row.seq, status="delivered", delivered_at=now_ms(), attempts=row.attempts + 1, last_error=None)
            done += 1
        return done

    def _failed(self, row: Any, error: str) -> bool:
        now = now_ms()
        attempts = row.attempts + 1
        if now - row.created >= self.give_up_ms:
            self._mark(row.seq, status="dead", attempts=attempts, last_error=error)
            logs.event(log, "notification dead-lettered", subscription=row.subscription, event=row.event, error=error)
            return True
        backoff = min(self.max_backoff_ms, self.retry_ms * 2 ** min(attempts - 1, 30))
        self._mark(row.seq, attempts=attempts, next_attempt=now + backoff, last_error=error)
        return False

    def _mark(self, seq: int, **values: Any) -> None:
        with self.repo.db.write() as conn:
            conn.execute(update(st.delivery).where(and_(_D.seq == seq, _D.status == "pending")).values(**values))

    def _send(self, sub: Sub, row: Any) -> None:
        resource = None
        if row.action != "delete" and (sub.payload or sub.content == "full-resource"):
            with self.repo.unit(Context(source="system"), write=False) as u:
                resource = u.vread(row.rtype, row.id, str(row.version)).resource
        if sub.channel == "websocket":
            self.hub.ping(sub.id)
        elif sub.topic:
            self.counts[sub.id] = self.counts.get(sub.id, 0) + 1
            self.rest.send(sub, row.event, ("POST", "", self._bundle(sub, "event-notification", row, resource)))
        elif sub.payload:
            path = f"{row.rtype}/{row.id}"
            self.rest.send(
                sub, row.event, ("DELETE", path, None) if row.action == "delete" else ("PUT", path, resource)
            )
        else:
            self.rest.send(sub, row.event, ("POST", "", None))
        self.last_sent[sub.id] = time.monotonic()

    def _bundle(self, sub: Sub, kind: str, row: Any, resource: dict[str, Any] | None) -> dict[str, Any]:
        """An R4B-backport notification: SubscriptionStatus (as Parameters on R4), then the focus."""
        base = self.base_url().rstrip("/")
        params: list[dict[str, Any]] = [
            {"name": "subscription", "valueReference": {"reference": f"{base}/Subscription/{sub.id}"}},
            {"name": "topic", "valueCanonical": sub.topic},
            {"name": "status", "valueCode": "active"},
            {"name": "type", "valueCode": kind},
        ]
        entries: list[dict[str, Any]] = []
        if row is not None:
            params.append({"name": "events-since-subscription-start", "valueString": str(row.event)})
            event: list[dict[str, Any]] = [{"name": "event-number", "valueString": str(row.event)}]
            if sub.content != "empty":
                event.append({"name": "focus", "valueReference": {"reference": f"{base}/{row.rtype}/{row.id}"}})
            params.append({"name": "notification-event", "part": event})
            if resource is not None:
                entries.append(
                    {
                        "fullUrl": f"{base}/{row.rtype}/{row.id}",
                        "resource": resource,
                        "request": {"method": "PUT", "url": f"{row.rtype}/{row.id}"},
                        "response": {"status": "200"},
                    }
                )
        status = {
            "resourceType": "Parameters",
            "meta": {
                "profile": [
                    "http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition/backport-subscription-status-r4"
                ]
            },
            "parameter": params,
        }
        return {
            "resourceType": "Bundle",
            "type": "history",
            "timestamp": _instant(),
            "entry": [
                {
                    "fullUrl": f"urn:uuid:status-{sub.id}-{row.event if row else 'hb'}",
                    "resource": status,
                    "request": {"method": "GET", "url": f"Subscription/{sub.id}/$status"},
                    "response": {"status": "200"},
                },
                *entries,
            ],
        }

    def _heartbeats(self) -> None:
        """Topic subscriptions with a heartbeat period hear from us at least that often (best effort)."""
        if time.monotonic() - self._beat_checked < 1.0:
            return
        self._beat_checked = time.monotonic()
        with self.repo.unit(Context(source="system"), write=False) as u:
            page = u.search("Subscription", [("status", LIVE), ("_count", "1000")])
        for m in page.matches:
            try:
                sub = parse(m.resource)
            except ChangbaiError:
                continue
            if not (sub.heartbeat and sub.topic and sub.channel == "rest-hook"):
                continue
            if not endpoint_allowed(sub, self.hosts):
                continue
            last = self.last_sent.setdefault(sub.id, time.monotonic())
            if time.monotonic() - last < sub.heartbeat:
                continue
            self.last_sent[sub.id] = time.monotonic()
            try:
                self.rest.send(sub, 0, ("POST", "", self._bundle(sub, "heartbeat", None, None)))
            except DeliveryFailed as exc:
                logs.event(log, "heartbeat failed", subscription=sub.id, error=str(exc))

    def close(self) -> None:
        self.rest.close()


def _instant() -> str:
    from changbai.fhir.values import now_instant

    return now_instant()[0]


class SubscriptionWorker:
    """Two threads in the platform process: feeding the queue, and delivering it."""

    def __init__(self, feeder: Feeder, deliverer: Deliverer, poll_seconds: float = 0.2) -> None:
        self.feeder = feeder
        self.deliverer = deliverer
        self.poll = poll_seconds
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._loop, args=(feeder.step, "feed"), name="changbai-sub-feed", daemon=True),
            threading.Thread(
                target=self._loop, args=(deliverer.step, "deliver"), name="changbai-sub-deliver", daemon=True
            ),
        ]

    def start(self) -> None:
        cursors.get(self.feeder.repo.db, FEEDER)
        for t in self._threads:
            t.start()

    def stop(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(timeout=15)
        self.deliverer.close()

    def _loop(self, step: Callable[[], int], name: str) -> None:
        while not self._stop.is_set():
            try:
                busy = step()
            except Exception:
                log.exception(f"subscription {name} step failed")
                busy = 0
                self._stop.wait(1.0)
            if not busy:
                self._stop.wait(self.poll)
