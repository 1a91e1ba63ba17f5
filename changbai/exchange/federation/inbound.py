"""The parent's side of the JetStream transport: batches from its children, taken from the stream.

One durable pull consumer per child registered here (``changbai federation children add``; the registry
is read again every few seconds, with security on or off), each with at most one batch unacknowledged, so
a child's batches apply strictly in the order it published them and one child's trouble never holds up
another's. A batch goes through the router's ``$replicate`` like one posted over HTTP — with security on,
as the child's principal once its signature verifies against the child's registered key — so the scope
check, the one write path and the audit are the same. Then:

- 2xx: the apply has committed; the message is acknowledged (a crash before the ack gets it delivered
  again, and the per-origin versions skip it);
- anything else: the message is handed back with a growing delay and the link waits (nothing is dropped),
  as an HTTP child keeps its checkpoint when refused. The operator view shows the failure.

A long apply tells JetStream it is still working, so the batch is not handed out twice meanwhile.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import nats.errors
import orjson
from nats.aio.msg import Msg
from nats.js import JetStreamContext, api

from changbai import logs
from changbai.errors import ChangbaiError
from changbai.exchange.federation import cursors
from changbai.exchange.federation.credentials import SIGNATURE_HEADER, verify_batch
from changbai.exchange.federation.enrol import children
from changbai.exchange.federation.jetstream import NATS_ERRORS, check_stream, connect, durable, ensure_stream, subject
from changbai.exchange.federation.node import Node
from changbai.store.pipeline import Context

if TYPE_CHECKING:
    from changbai.api.app import Platform

log = logs.get(__name__)

#: Cursor rows (federation_cursor) of inbound links are named ``from:<child>``.
PREFIX = "from:"
REFRESH_SECONDS = 5.0
FETCH_SECONDS = 5.0
MAX_BACKOFF = 5.0


class JetStreamReceiver:
    def __init__(self, platform: Platform, node: Node) -> None:
        settings = platform.settings
        self.platform = platform
        self.node = node
        self.url = settings.nats_url
        self.stream = check_stream(settings.nats_stream)
        self.ack_wait = max(1.0, settings.nats_ack_wait_seconds)
        self.base_url = settings.base_url.rstrip("/") or node.origin_url
        #: per child: what the operator view shows beyond the cursor row (batches waiting, delay)
        self.links: dict[str, dict[str, Any]] = {}
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="changbai-replicate-in")  # one apply at a time
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping: asyncio.Event | None = None
        self._inflight: set[asyncio.Future[Any]] = set()
        self._stop_requested = threading.Event()
        self._thread = threading.Thread(target=self._run, name="changbai-jetstream-in", daemon=True)

    # ------------------------------------------------------------------------------------ lifecycle
    def start(self) -> None:
        self._thread.start()
        logs.event(log, "jetstream receiver started", node=self.node.id, stream=self.stream, url=self.url)

    def stop(self) -> None:
        self._stop_requested.set()  # seen by _main if it has not yet made its loop and event
        loop, stopping = self._loop, self._stopping
        if loop is not None and stopping is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(stopping.set)
        self._thread.join(timeout=15)
        self._pool.shutdown(wait=True)

    def _run(self) -> None:
        asyncio.run(self._main())

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stopping = asyncio.Event()
        if self._stop_requested.is_set():
            return
        failures = 0
        while not self._stopping.is_set():
            try:
                nc = await connect(self.url, f"changbai receiver {self.node.id}")
            except NATS_ERRORS as exc:
                failures += 1
                logs.event(log, "jetstream receiver cannot connect", url=self.url, error=str(exc), failures=failures)
                await self._sleep(min(MAX_BACKOFF, 0.25 * 2 ** min(failures, 8)))
                continue
            failures = 0
            try:
                await self._serve(nc.jetstream(timeout=10), nc)
            except NATS_ERRORS as exc:
                logs.event(log, "jetstream receiver lost its connection", error=f"{type(exc).__name__}: {exc}")
            finally:
                if self._inflight:  # let a batch being applied finish and be acknowledged
                    await asyncio.wait(self._inflight, timeout=self.ack_wait)
                with contextlib.suppress(*NATS_ERRORS):
                    await nc.close()
            await self._sleep(0.5)

    async def _sleep(self, seconds: float) -> None:
        assert self._stopping is not None
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), seconds)

    async def _serve(self, js: JetStreamContext, nc: Any) -> None:
        """Keep one consumer task per registered, active child while connected."""
        assert self._stopping is not None
        await ensure_stream(js, self.stream)
        tasks: dict[str, asyncio.Task[None]] = {}
        try:
            while not self._stopping.is_set() and not nc.is_closed:
                loop = asyncio.get_running_loop()
                registered = await loop.run_in_executor(None, children, self.platform.db)
                wanted = {c["node"] for c in registered if c["active"]}
                for child in wanted - tasks.keys():
                    tasks[child] = asyncio.create_task(self._consume(js, child))
                for child in tasks.keys() - wanted:
                    tasks.pop(child).cancel()
                for child, task in list(tasks.items()):
                    if task.done():  # its subscription failed: the next round starts it again
                        tasks.pop(child)
                        if not task.cancelled() and task.exception() is not None:
                            logs.event(log, "jetstream consumer stopped", child=child, error=repr(task.exception()))
                await self._sleep(REFRESH_SECONDS)
        finally:
            for task in tasks.values():
                task.cancel()
            await asyncio.gather(*tasks.values(), return_exceptions=True)

    # ------------------------------------------------------------------------------------ one child
    async def _consume(self, js: JetStreamContext, child: str) -> None:
        config = api.ConsumerConfig(
            durable_name=durable(self.node.id, child),
            description=f"Changbai: batches from child node {child}",
            deliver_policy=api.DeliverPolicy.ALL,
            ack_policy=api.AckPolicy.EXPLICIT,
            ack_wait=self.ack_wait,
            max_ack_pending=1,  # strictly one batch at a time: the child's order is kept
            max_deliver=-1,  # never give up on a batch
            filter_subject=subject(self.stream, child),
        )
        name = config.durable_name or ""
        try:
            sub = await js.pull_subscribe(config.filter_subject or "", name, self.stream, config=config)
        except NATS_ERRORS as exc:  # e.g. another parent consumes this child already (work queue)
            error = f"no JetStream consumer {name} for '{child}': {type(exc).__name__}: {exc}"
            await asyncio.get_running_loop().run_in_executor(self._pool, self._failed, child, error)
            await asyncio.sleep(MAX_BACKOFF)
            return
        failures = 0
        while True:
            try:
                msgs = await sub.fetch(1, timeout=FETCH_SECONDS)
            except nats.errors.TimeoutError:
                await self._note_waiting(js, child)
                continue
            handling = asyncio.ensure_future(self._handle(child, msgs[0], failures))
            self._inflight.add(handling)
            handling.add_done_callback(self._inflight.discard)
            failures = await asyncio.shield(handling)  # a stop lets the batch finish and be acknowledged

    async def _note_waiting(self, js: JetStreamContext, child: str) -> None:
        with contextlib.suppress(*NATS_ERRORS):
            info = await js.consumer_info(self.stream, durable(self.node.id, child))
            self.links[child] = {"pending": int(info.num_pending or 0) + int(info.num_ack_pending or 0)}

    async def _handle(self, child: str, msg: Msg, failures: int) -> int:
        """Apply one batch, then acknowledge it or hand it back; returns the failures in a row."""
        loop = asyncio.get_running_loop()
        meta = msg.metadata
        applying = loop.run_in_executor(self._pool, self._apply, child, meta.sequence.stream, msg.data, msg.headers)
        while True:
            done, _ = await asyncio.wait({applying}, timeout=self.ack_wait / 3)
            if done:
                break
            with contextlib.suppress(*NATS_ERRORS):
                await msg.in_progress()  # still applying: not yet due for redelivery
        ok = applying.result()
        delay = (datetime.now(UTC) - meta.timestamp).total_seconds() if meta.timestamp else None
        self.links[child] = {"pending": int(meta.num_pending or 0) + (0 if ok else 1), "delaySeconds": delay}
        if ok:
            try:
                await msg.ack_sync(timeout=5)
            except NATS_ERRORS as exc:  # delivered again later and skipped then: harmless
                logs.event(log, "jetstream ack lost", child=child, error=f"{type(exc).__name__}: {exc}")
            return 0
        with contextlib.suppress(*NATS_ERRORS):
            await msg.nak(delay=min(MAX_BACKOFF, 0.25 * 2 ** min(failures + 1, 8)))
        return failures + 1

    def _apply(self, child: str, stream_seq: int, data: bytes, headers: dict[str, str] | None) -> bool:
        """The batch through the router's $replicate as the child (in the apply thread); True once committed."""
        headers = headers or {}
        msg_id = headers.get("Nats-Msg-Id", "")
        name = PREFIX + child
        try:
            ctx = Context(source="federation", request_id=msg_id or None, base_url=self.base_url)
            ctx.principal = self._principal(child, msg_id, data, headers.get(SIGNATURE_HEADER, ""))
            try:
                body = orjson.loads(data)
            except orjson.JSONDecodeError as exc:
                raise ChangbaiError(f"batch {msg_id} from '{child}' is not JSON: {exc}", status=400) from None
            from changbai.api.router import FhirRequest

            request = FhirRequest("POST", "$replicate", headers={"content-type": "application/fhir+json"}, body=body)
            resp = self.platform.router.handle(request, ctx)
            if resp.status // 100 != 2:
                issues = (resp.body or {}).get("issue") or [{}]
                raise ChangbaiError(f"{resp.status}: {issues[0].get('diagnostics', '')}"[:1000], status=resp.status)
            applied = {p["name"]: p.get("valueInteger", 0) for p in (resp.body or {}).get("parameter", [])}
            cursors.get(self.platform.db, name)
            cursors.advance(self.platform.db, name, stream_seq, sum(applied.values()))
            return True
        except Exception as exc:  # a refusal, a bug or a database hiccup: the batch waits, the link shows why
            error = exc.message if isinstance(exc, ChangbaiError) else f"{type(exc).__name__}: {exc}"
            if not isinstance(exc, ChangbaiError):
                log.exception("jetstream batch failed", extra={"fields": {"child": child, "batch": msg_id}})
            self._failed(child, f"batch {msg_id} waits: {error}")
            return False

    def _failed(self, child: str, error: str) -> None:
        """A failure of this child's link, in the log and in the operator view."""
        logs.event(log, "jetstream link from a child failed", child=child, error=error)
        with contextlib.suppress(Exception):
            cursors.get(self.platform.db, PREFIX + child)
            cursors.failed(self.platform.db, PREFIX + child, error)

    def _principal(self, child: str, msg_id: str, data: bytes, signature: str) -> Any:
        """With security on: the child's node client, once the batch's signature verifies (a refusal is
        audited); with security off, nobody (as an HTTP request with security off)."""
        sec = self.platform.security
        if sec is None:
            return None
        try:
            account = verify_batch(sec.db, child, msg_id, data, signature)
        except ChangbaiError as exc:
            from changbai.security import audit

            sec.trail.record([audit.event("denied", "4", username=child, detail=f"jetstream: {exc.message}")])
            raise
        role = sec.policy.role(account["role"])
        scope = account["scopes"] or " ".join(str(s) for s in role.scopes if s.context == "system")
        claims = {"sub": child, "role": account["role"], "scope": scope, "kind": "client", "client_id": child}
        for key in ("organization", "region"):
            if account.get(key):
                claims[key] = account[key]
        return sec.principal(claims)

    def status(self) -> dict[str, dict[str, Any]]:
        """Live figures per inbound link (cursor name -> fields) for the operator view."""
        return {PREFIX + child: {"transport": "jetstream", **fields} for child, fields in self.links.items()}
