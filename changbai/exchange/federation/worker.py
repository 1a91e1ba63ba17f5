"""The upward link: a thread in the platform process that reads the outbox after its checkpoint and
sends each batch to the parent, advancing the checkpoint only once the parent has committed it.

Delivery is at-least-once (a crash between the parent's commit and our checkpoint resends a batch; the
parent's per-origin versions make that harmless) and in outbox order, hence in order per resource. When
the parent or the link is down the worker backs off (up to ``MAX_BACKOFF``) and, once it answers, catches
up from the checkpoint by itself.
"""

from __future__ import annotations

import threading

from changbai import logs
from changbai.exchange.federation import cursors
from changbai.exchange.federation.node import Node
from changbai.exchange.federation.policy import Policy
from changbai.exchange.federation.replicate import collect
from changbai.exchange.federation.transport import LinkDown, Transport
from changbai.store.repository import Repository

log = logs.get(__name__)

UPLINK = "uplink"
BATCH = 500
MAX_BACKOFF = 5.0


class UplinkWorker:
    def __init__(
        self, repo: Repository, node: Node, policy: Policy, transport: Transport, poll_seconds: float = 0.2
    ) -> None:
        self.repo = repo
        self.node = node
        self.policy = policy
        self.transport = transport
        self.poll = poll_seconds
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="changbai-uplink", daemon=True)

    def start(self) -> None:
        cursors.get(self.repo.db, UPLINK)
        self._thread.start()
        logs.event(log, "uplink started", node=self.node.id, parent=self.node.parent_url, policy=self.policy.name)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
        self.transport.close()

    def step(self) -> int:
        """Send one batch; returns how many outbox rows it moved past (0 = nothing new).

        With a transport that drops resends by message id, the batch's end is recorded before it is
        sent: after a crash before the checkpoint the same batch (same rows, same ids) goes again,
        however much the outbox grew meanwhile."""
        db = self.repo.db
        after = int(cursors.get(db, UPLINK).seq)
        marks = getattr(self.transport, "deduplicates", False)
        planned = int(cursors.get(db, UPLINK + cursors.INFLIGHT).seq) if marks else 0
        upto = planned if planned > after else None
        changes, last = collect(self.repo, self.node, self.policy, after, BATCH, upto=upto)
        if last == after:
            return 0
        if changes:
            if marks and upto is None:
                cursors.set_inflight(db, UPLINK, last)
            self.transport.send(changes)
        cursors.advance(db, UPLINK, last, len(changes))
        return last - after

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                moved = self.step()
            except LinkDown as exc:
                self._failed(str(exc))
                continue
            except Exception as exc:  # a bug or a database hiccup must not kill the link
                log.exception("uplink step failed")
                self._failed(f"{type(exc).__name__}: {exc}")
                continue
            if moved == 0:
                self._stop.wait(self.poll)

    def _failed(self, error: str) -> None:
        try:
            n = cursors.failed(self.repo.db, UPLINK, error)
        except Exception:
            n = 1
        logs.event(log, "uplink failed; will retry", error=error, failures=n)
        self._stop.wait(min(MAX_BACKOFF, 0.25 * 2 ** min(n, 8)))
