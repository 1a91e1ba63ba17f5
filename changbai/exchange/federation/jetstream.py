"""NATS JetStream as the transport of upward replication (CHANGBAI_FEDERATION_TRANSPORT=jetstream).

The outbox table stays the source of truth and the uplink worker keeps its checkpoint; only the hop to the
parent changes. :class:`JetStreamTransport` (the child's side) publishes each batch to the subject
``<stream>.up.<client id>`` and returns once JetStream has stored every part, so the checkpoint moves only
past what is safe in the stream:

- each message carries ``Nats-Msg-Id`` = ``<client id>:<first seq>-<last seq>`` (outbox seqs of its first
  and last change), so a batch resent after a crash between the publish and the checkpoint is dropped by
  the server within the stream's duplicate window, and skipped by the parent's per-origin versions after;
- parts go one after the other, each acknowledged before the next: the stream holds them in outbox order;
- with SMART node authentication each part is signed with the node's key (``Changbai-Signature``), which
  the parent verifies against the key registered for the child; a batch may wait in the stream for a day,
  longer than any access token lives.

The parent's side is :class:`changbai.exchange.federation.inbound.JetStreamReceiver`. The stream (work
queue retention, file storage) is made by whichever node needs it first.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import hashlib
import re
import threading
from collections.abc import Coroutine, Iterator
from typing import Any, TypeVar

import nats
import nats.errors
import nats.js.errors
import orjson
from joserfc.jwk import ECKey
from nats.aio.client import Client as NATS
from nats.js import JetStreamContext, api

from changbai import logs
from changbai.errors import InvalidInput
from changbai.exchange.federation.credentials import SIGNATURE_HEADER, sign_batch
from changbai.exchange.federation.replicate import Change
from changbai.exchange.federation.transport import LinkDown

log = logs.get(__name__)
T = TypeVar("T")

#: How long JetStream remembers message ids to drop resends (the stream's duplicate window).
DUPLICATE_WINDOW = 120.0
#: Room left under the server's max_payload for the headers (message id, signature).
HEADROOM = 4096
_ENVELOPE = (b'{"resourceType":"Bundle","type":"batch","entry":[', b"]}")
_STREAM_NAME = re.compile(r"^[A-Za-z0-9_-]{1,200}$")
#: Errors of the NATS client that mean "not now": the link is down, retry from the checkpoint.
NATS_ERRORS = (nats.errors.Error, nats.js.errors.Error, TimeoutError, OSError)


def check_stream(name: str) -> str:
    if not _STREAM_NAME.match(name):
        raise InvalidInput(f"CHANGBAI_NATS_STREAM '{name}' must be letters, digits, '-' or '_' (a JetStream name)")
    return name


def subject(stream: str, client_id: str) -> str:
    """Where a child's batches go: one subject per child, so each has its own consumer at its parent."""
    return f"{stream}.up.{client_id}"


def durable(parent_id: str, client_id: str) -> str:
    """The name of a parent's durable consumer for a child (JetStream names allow no '.'). It names the
    parent too: a child registered at two parents by mistake then fails to get a second consumer on the
    work queue (and the operator view says so) instead of having its batches split between them."""
    readable = re.sub(r"[^A-Za-z0-9_-]", "_", client_id)[:60]
    return f"up-{readable}-{hashlib.sha256(f'{parent_id}/{client_id}'.encode()).hexdigest()[:10]}"


def stream_config(stream: str) -> api.StreamConfig:
    return api.StreamConfig(
        name=stream,
        description="Changbai federation: batches of changes on their way to a parent node",
        subjects=[f"{stream}.up.>"],
        retention=api.RetentionPolicy.WORK_QUEUE,  # a batch leaves the stream once its parent acknowledged it
        storage=api.StorageType.FILE,
        duplicate_window=DUPLICATE_WINDOW,
    )


async def ensure_stream(js: JetStreamContext, stream: str) -> None:
    """Create the stream when missing (an existing one is used as it is)."""
    try:
        await js.stream_info(stream)
    except nats.js.errors.NotFoundError:
        try:
            await js.add_stream(stream_config(stream))
            logs.event(log, "jetstream stream created", stream=stream)
        except nats.js.errors.BadRequestError:
            await js.stream_info(stream)  # another node made it at the same moment


async def connect(url: str, name: str) -> NATS:
    """A connection that fails at once when the server is away and closes when it goes: the uplink's and
    the receiver's own retry loops (with their backoff and operator view) reconnect, not the client."""

    async def quiet(exc: Exception) -> None:  # the client's own error reports, as our structured logs
        logs.event(log, "nats connection problem", error=f"{type(exc).__name__}: {exc}")

    return await nats.connect(
        url,
        name=name,
        connect_timeout=2,
        allow_reconnect=False,
        max_reconnect_attempts=1,  # of the first connection: two tries, then NoServersError
        reconnect_time_wait=0.2,
        error_cb=quiet,
    )


class AsyncLoop:
    """An asyncio event loop in a thread of its own: nats-py is asyncio, the uplink worker is a thread."""

    def __init__(self, name: str) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name=name, daemon=True)
        self._thread.start()

    def run(self, coro: Coroutine[Any, Any, T], timeout: float) -> T:
        future = asyncio.run_coroutine_threadsafe(coro, self.loop)
        try:
            return future.result(timeout)
        except concurrent.futures.TimeoutError:
            future.cancel()
            raise TimeoutError(f"no answer from NATS within {timeout:.0f} s") from None

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=5)
        if not self._thread.is_alive():
            self.loop.close()


def parts(changes: list[Change], limit: int) -> Iterator[tuple[list[Change], bytes]]:
    """The batch cut into Bundles of at most ``limit`` bytes, in order (the same cut for the same changes,
    so a resend carries the same message ids)."""
    room = limit - len(_ENVELOPE[0]) - len(_ENVELOPE[1])
    run: list[Change] = []
    encoded: list[bytes] = []
    size = 0
    for change in changes:
        entry = orjson.dumps(change.entry())
        if len(entry) > room:
            raise LinkDown(
                f"the change {change.rtype}/{change.id} (outbox seq {change.seq}) is {len(entry)} bytes, over the "
                f"NATS server's max_payload ({limit + HEADROOM}); raise max_payload there or use the http transport"
            )
        if run and size + len(entry) + 1 > room:
            yield run, _ENVELOPE[0] + b",".join(encoded) + _ENVELOPE[1]
            run, encoded, size = [], [], 0
        run.append(change)
        encoded.append(entry)
        size += len(entry) + 1
    if run:
        yield run, _ENVELOPE[0] + b",".join(encoded) + _ENVELOPE[1]


class JetStreamTransport:
    """The child's side: publish batches to the stream; ``send`` returns once JetStream stored them."""

    #: resends carry the same message ids and are dropped by the server (the uplink keeps batch bounds)
    deduplicates = True

    def __init__(self, url: str, stream: str, client_id: str, key: ECKey | None, timeout: float = 10.0) -> None:
        self.url = url
        self.stream = check_stream(stream)
        self.client_id = client_id
        self.subject = subject(stream, client_id)
        self.key = key
        self.timeout = timeout
        self._loop = AsyncLoop("changbai-jetstream-out")
        self._nc: NATS | None = None
        self._js: JetStreamContext | None = None

    async def _context(self) -> tuple[NATS, JetStreamContext]:
        if self._nc is None or self._nc.is_closed or self._js is None:
            self._nc = await connect(self.url, f"changbai uplink {self.client_id}")
            self._js = self._nc.jetstream(timeout=self.timeout)
            await ensure_stream(self._js, self.stream)
        return self._nc, self._js

    def send(self, changes: list[Change]) -> None:
        try:
            self._loop.run(self._publish(changes), timeout=self.timeout * 6)
        except LinkDown:
            raise
        except NATS_ERRORS as exc:
            raise LinkDown(f"JetStream at {self.url}: {type(exc).__name__}: {exc}") from None

    async def _publish(self, changes: list[Change]) -> None:
        nc, js = await self._context()
        for run, body in parts(changes, nc.max_payload - HEADROOM):
            msg_id = f"{self.client_id}:{run[0].seq}-{run[-1].seq}"
            headers = {"Nats-Msg-Id": msg_id}
            if self.key is not None:
                headers[SIGNATURE_HEADER] = sign_batch(self.key, self.client_id, msg_id, body)
            await js.publish(self.subject, body, timeout=self.timeout, stream=self.stream, headers=headers)

    def status(self) -> dict[str, Any]:
        """The transport, and how many of this node's batches wait in the stream for the parent."""
        out: dict[str, Any] = {"transport": "jetstream", "stream": self.stream, "subject": self.subject}
        try:
            out["awaitingParent"] = self._loop.run(self._waiting(), timeout=3)
        except (*NATS_ERRORS, LinkDown):
            out["awaitingParent"] = None
        return out

    async def _waiting(self) -> int:
        _, js = await self._context()
        info = await js.stream_info(self.stream, subjects_filter=self.subject)
        return int((info.state.subjects or {}).get(self.subject, 0))

    def close(self) -> None:
        nc = self._nc
        if nc is not None and not nc.is_closed:
            with contextlib.suppress(*NATS_ERRORS):
                self._loop.run(nc.close(), timeout=5)
        self._loop.close()
