"""The durable IntakeStore: inbox rows, clocks and FHIR resources in one database transaction.

Resources are written only through the store's batch write (:mod:`changbai.exchange.writes`, i.e.
:meth:`Unit.put_many` and its pipeline), inside the same unit of work that writes the inbox row. So
either the message's resources, its inbox row and the ACK text are all committed, or none is; the ACK
goes out only afterwards. A resend after a crash finds either nothing (and is processed now) or the
committed row (and gets the stored ACK): exactly one result.

Messages arriving together (several connections, or one HL7 batch) are committed together: one
transaction, one inbox insert, one clock query and update, and their resources in as few ``put_many``
calls as their dependencies allow. If any of them fails, that attempt is rolled back to its savepoint and
each message is written again in a savepoint of its own, so a refused message never takes the others
down and its refusal names its segment.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import orjson
import psycopg
from sqlalchemy import bindparam, select, update
from sqlalchemy.exc import IntegrityError

from changbai import logs
from changbai.errors import Conflict, NotFound
from changbai.exchange import er7
from changbai.exchange.intake import Duplicate, InboxRecord, Submission
from changbai.exchange.tables import clock, inbox
from changbai.exchange.writes import Writes, apply_bundle, plan, redirect
from changbai.store.pipeline import Context
from changbai.store.prepared import Prepared
from changbai.store.repository import Repository, Unit

#: a unique key refused the row (from SQLAlchemy, or from a driver the statement ran on directly)
_UNIQUE = (IntegrityError, sqlite3.IntegrityError, psycopg.IntegrityError)
#: what a concurrent writer (another listener process, the REST API) makes a transaction fail with on
#: PostgreSQL; SQLite's writers take turns
_COLLISIONS = (
    psycopg.errors.UniqueViolation,
    psycopg.errors.DeadlockDetected,
    psycopg.errors.SerializationFailure,
    psycopg.errors.LockNotAvailable,
)
#: times a message that collided with a concurrent writer is written (each in a new transaction)
ATTEMPTS = 4


def collided(exc: BaseException) -> bool:
    """The write collided with a concurrent one and may succeed in a new transaction, which then sees
    what the other wrote: the store found a resource changed since it was read, or the database refused
    a key another transaction took meanwhile, or broke a deadlock."""
    if isinstance(exc, Conflict):  # put_many: "changed concurrently; try again"
        return True
    return isinstance(getattr(exc, "orig", None) or exc, _COLLISIONS)


# The per-message statements on this module's own tables (inbox row, clocks), compiled once and run on the
# database driver (store.prepared): through SQLAlchemy's execution each cost about 250 us against 30 us
# on the driver (same machine, same minute), which was a tenth of a message's whole time.
_INSERT_ROW = Prepared(
    inbox.insert().values({c.name: bindparam(c.name) for c in inbox.c if c.name != "id"}).returning(inbox.c.id)
)
# on PostgreSQL a concurrent transaction writing the same targets waits here until it is done, then reads
# its time (SQLite renders no FOR UPDATE: its writers take turns anyway)
_CLOCKS = Prepared(
    select(clock.c.target, clock.c.message_time)
    .where(clock.c.target.in_(bindparam("targets", expanding=True)))
    .with_for_update()
)
_INSERT_CLOCK = Prepared(
    clock.insert().values(target=bindparam("t"), message_time=bindparam("ms"), inbox_id=bindparam("inbox"))
)
_UPDATE_CLOCK = Prepared(
    update(clock)
    .where(clock.c.target == bindparam("t"))
    .values(message_time=bindparam("ms"), inbox_id=bindparam("inbox"))
)


class _Exists(Exception):
    """The inbox already holds a row with this key: process the message again on the careful path."""


log = logs.get(__name__)


@dataclass
class _Job:
    item: Submission
    done: threading.Event = field(default_factory=threading.Event)
    error: BaseException | None = None
    committed: bool = False
    collision: BaseException | None = None  # to be written again, alone


@dataclass
class _Clocks:
    """The message clocks of the targets of a unit's messages: as stored, and as the unit leaves them."""

    stored: dict[str, int]
    now: dict[str, int]
    writer: dict[str, int] = field(default_factory=dict)  # target -> index of the job that wrote it last


class SqlInbox:
    """IntakeStore on the platform database (SQLite or PostgreSQL)."""

    def __init__(self, repo: Repository, channel: str = "hl7v2", batch: int = 32, gather: float = 0.002) -> None:
        self.repo = repo
        self.channel = channel
        self.batch = batch
        self.gather = gather
        # Group commit without a writer thread: the first thread to find nobody writing commits every
        # message waiting (up to ``batch``); the others wait for that commit or for their turn. Before it
        # starts, it waits up to ``gather`` seconds for messages already being parsed (``expect``) and,
        # while fewer are waiting than senders (connections) were heard from in the last half second,
        # for their next message: a sender whose message the last commit acknowledged sends the next
        # within a round trip, and then shares this transaction rather than needing one after it.
        self._turn = threading.Condition()
        self._pending: list[_Job] = []
        self._writing = False
        self._expected = 0
        self._heard: dict[str, float] = {}  # sender (peer) -> when its last message came (monotonic)

    # ------------------------------------------------------------------------------------ reads
    def _key(self, sender: str, control_id: str, digest: str) -> Any:
        return (
            (inbox.c.channel == self.channel)
            & (inbox.c.sender == sender)
            & (inbox.c.control_id == control_id)
            & (inbox.c.digest == digest)
        )

    def accepted_ack(self, sender: str, control_id: str, digest: str) -> str | None:
        with self.repo.db.read() as conn:
            row = conn.execute(
                select(inbox.c.ack).where(self._key(sender, control_id, digest), inbox.c.status == "accepted")
            ).first()
        return row[0] if row else None

    def get(self, id: int) -> InboxRecord:
        with self.repo.db.read() as conn:
            row = conn.execute(select(inbox).where(inbox.c.id == id)).mappings().first()
        if row is None:
            raise NotFound(f"inbox message {id} is not known")
        return _record(row)

    # ------------------------------------------------------------------------------------ writes
    def expect(self, n: int) -> None:
        """``n`` more messages are being parsed and will come to :meth:`commit` (negative: fewer will
        come, e.g. refused before reaching the store)."""
        with self._turn:
            self._expected += n
            if n < 0:
                self._turn.notify_all()

    def commit(self, items: list[Submission]) -> list[BaseException | None]:
        """Apply and record messages; returns once each is committed or refused (None or the error per
        message: Duplicate, or the store's refusal).

        Messages waiting together (from several connections, or one batch) are committed in one
        transaction; a message arriving alone is committed at once, in a transaction of its own."""
        jobs = [_Job(item) for item in items]
        with self._turn:
            self._pending.extend(jobs)
            self._expected = max(0, self._expected - len(jobs))
            now = time.monotonic()
            for job in jobs:
                self._heard[job.item.record.peer] = now
            self._turn.notify_all()
            while True:
                while self._writing and not all(job.done.is_set() for job in jobs):
                    self._turn.wait()
                if all(job.done.is_set() for job in jobs):
                    break
                # Nobody is writing: this thread commits what is waiting (its own messages or others that
                # came earlier, and those about to come), then hands over to the next waiting thread.
                self._writing = True
                self._gather()
                group, self._pending = self._pending[: self.batch], self._pending[self.batch :]
                self._turn.release()
                try:
                    self._commit_group(group)
                finally:
                    self._turn.acquire()
                    self._writing = False
                    self._turn.notify_all()
        out: list[BaseException | None] = []
        for job in jobs:
            if job.error is None and not job.committed:  # the committing thread was interrupted
                job.error = RuntimeError("the message was not committed")
            out.append(job.error)
        return out

    def _gather(self) -> None:
        """Wait (holding the turn, at most ``gather`` seconds) for the messages about to come."""
        now = time.monotonic()
        self._heard = {peer: t for peer, t in self._heard.items() if now - t < 0.5}
        deadline = now + self.gather
        while len(self._pending) < self.batch and (self._expected or len(self._pending) < len(self._heard)):
            left = deadline - time.monotonic()
            if left <= 0:
                return
            self._turn.wait(left)

    def _unit(self, conn: Any, jobs: list[_Job]) -> Unit:
        """The store's unit of work on our transaction; whoever makes it flushes it with ``final`` last."""
        messages = [(job.item.record.sender, job.item.record.control_id) for job in jobs]
        return Unit(self.repo, conn, Context(source="hl7v2", extras={"messages": messages}))

    def _commit_group(self, jobs: list[_Job]) -> None:
        if len(jobs) == 1:
            self._commit_alone(jobs[0])
            return
        new = [job for job in jobs if not job.item.record.id]
        replays = [job for job in jobs if job.item.record.id]
        try:
            with self.repo.db.write() as conn:
                unit = self._unit(conn, jobs)
                if len(new) == 1 or not self._together(unit, new):
                    for job in new:
                        self._in_savepoint(unit, job, fast=True)
                for job in replays:
                    self._in_savepoint(unit, job, fast=False)
                unit.flush(final=True)  # the outbox rows last: see Unit.flush
            for job in jobs:
                job.committed = job.error is None and job.collision is None
        except Exception as exc:  # the common commit failed: nothing of the group is stored
            for job in jobs:
                if job.error is None:
                    job.collision, job.error = (exc, None) if collided(exc) else (None, exc)
        finally:
            again = [job for job in jobs if job.collision is not None]
            for job in jobs:
                if job.collision is None:
                    job.done.set()
            for job in again:  # after the others' commit: alone, in new transactions
                self._commit_alone(job, attempt=1)

    def _commit_alone(self, job: _Job, attempt: int = 0) -> None:
        """A message that arrived alone has the transaction to itself: no savepoint to set and release;
        a row already holding its key (a resend, a replay) sends it round again on the careful path. A
        collision with a concurrent writer is written again in a new transaction (up to ATTEMPTS times)."""
        try:
            while True:
                try:
                    try:
                        self._transaction(job, fast=not job.item.record.id)
                    except _Exists:
                        self._transaction(job, fast=False)
                    job.committed, job.collision = True, None
                    return
                except Exception as exc:
                    attempt += 1
                    if attempt >= ATTEMPTS or not collided(exc):
                        raise
                    record = job.item.record
                    logs.event(log, "hl7v2 write collided; again", control_id=record.control_id, error=repr(exc))
        except Exception as exc:
            job.error = Duplicate() if isinstance(exc, _UNIQUE) else exc
        finally:
            job.done.set()

    def _transaction(self, job: _Job, fast: bool) -> None:
        with self.repo.db.write() as conn:
            unit = self._unit(conn, [job])
            self._write(unit, [job], fast)
            unit.flush(final=True)  # the outbox rows last: see Unit.flush

    def _together(self, unit: Unit, jobs: list[_Job]) -> bool:
        """All of ``jobs`` in one go, in a savepoint; False (and nothing of them kept) if any fails."""
        try:
            with unit.savepoint():
                self._write(unit, jobs, fast=True)
        except Exception:
            return False
        return True

    def _in_savepoint(self, unit: Unit, job: _Job, fast: bool) -> None:
        try:
            with unit.savepoint():
                self._write(unit, [job], fast)
        except _Exists:
            self._in_savepoint(unit, job, fast=False)
        except Exception as exc:
            if collided(exc):
                job.collision = exc
            else:
                job.error = Duplicate() if isinstance(exc, _UNIQUE) else exc

    def _write(self, unit: Unit, jobs: list[_Job], fast: bool) -> None:
        """Messages in one unit: inbox rows, resources, clocks. ``fast``: new messages (the usual case)
        insert their rows first and let the unique key find the rare resend or retry, instead of looking
        first; otherwise (one message: a resend, a replay) the row is looked up and updated. On failure the
        records keep no id of a row that is rolled back (it may be another message's row by then)."""
        records = [job.item.record for job in jobs]
        ids = [record.id for record in records]
        try:
            self._write_rows(unit, jobs, records, fast)
        except BaseException:
            for record, id in zip(records, ids, strict=True):
                record.id = id
            raise

    def _write_rows(self, unit: Unit, jobs: list[_Job], records: list[InboxRecord], fast: bool) -> None:
        conn = unit.conn
        clocks = self._clocks(conn, jobs)
        entries = [self._in_order(i, job.item, clocks) for i, job in enumerate(jobs)]
        existing = None
        if fast:
            try:
                ids = [_INSERT_ROW.first(conn, self._row(r)) for r in records]
            except _UNIQUE as exc:
                raise _Exists() from exc
            for record, id in zip(records, ids, strict=True):
                assert id is not None
                record.id = id[0]
        else:
            [record] = records
            existing = self._existing(conn, record)
            if existing is not None and existing.status == "accepted" and not record.id:
                raise Duplicate()
        if len(jobs) == 1:
            if entries[0]:
                apply_bundle(unit, {**jobs[0].item.bundle, "entry": entries[0]})  # names a refused entry
        else:
            writes = Writes(unit)
            for kept in entries:
                if kept:
                    writes.add(plan(kept, writes.find)[0])
            writes.write()
        if not fast:
            self._put(conn, records[0], existing)
        self._advance(conn, records, clocks)

    def record(self, record: InboxRecord) -> InboxRecord:
        with self.repo.db.write() as conn:
            self._put(conn, record, self._existing(conn, record))
        return record

    def _existing(self, conn: Any, record: InboxRecord) -> Any:
        """The row this record replaces: by id for a replay, else by idempotency key."""
        by_key = self._key(record.sender, record.control_id, record.digest)
        where = (inbox.c.id == record.id) if record.id else by_key
        return conn.execute(select(inbox.c.id, inbox.c.status, inbox.c.attempts).where(where)).first()

    def _values(self, record: InboxRecord) -> dict[str, Any]:
        now = int(time.time() * 1000)
        record.updated_at = now
        return {
            "event": record.event,
            "version": record.version,
            "message_time": record.message_time,
            "updated_at": now,
            "peer": record.peer[:100],
            "status": record.status,
            "ack_code": record.ack_code,
            "ack": record.ack,
            "problems": orjson.dumps(record.problems).decode(),
            "raw": record.raw,
        }

    def _row(self, record: InboxRecord) -> dict[str, Any]:
        values = self._values(record)
        return {
            "channel": self.channel,
            "sender": record.sender,
            "control_id": record.control_id,
            "digest": record.digest,
            "received_at": record.received_at or values["updated_at"],
            "attempts": 1,
            **values,
        }

    def _put(self, conn: Any, record: InboxRecord, old: Any) -> None:
        if old is None:
            record.id = conn.execute(inbox.insert().returning(inbox.c.id), self._row(record)).scalar_one()
            return
        record.id, record.attempts = old.id, old.attempts + 1
        conn.execute(
            update(inbox)
            .where(inbox.c.id == old.id)
            .values(
                attempts=record.attempts,
                sender=record.sender,
                control_id=record.control_id,
                digest=record.digest,
                **self._values(record),
            )
        )

    # ------------------------------------------------------------------------------------ ordering
    @staticmethod
    def _target(entry: dict[str, Any]) -> str | None:
        req = entry.get("request", {})
        return req.get("url") if req.get("method") == "PUT" else None

    def _clocks(self, conn: Any, jobs: list[_Job]) -> _Clocks:
        """One query for the clocks of every target the unit's messages write."""
        targets = {
            t
            for job in jobs
            if job.item.record.message_time is not None
            for e in job.item.bundle["entry"]
            if (t := self._target(e))
        }
        if not targets:
            return _Clocks({}, {})
        stored = dict(_CLOCKS.all(conn, {"targets": sorted(targets)}))
        return _Clocks(stored, dict(stored))

    def _in_order(self, index: int, item: Submission, clocks: _Clocks) -> list[dict[str, Any]]:
        """The entries of a message to apply: updates older than what is stored (or written by an earlier
        message of the unit) are dropped and references to them point to the stored resource. Tells the
        ACK what was skipped, and moves the unit's clocks to this message's time."""
        entries, message_time = item.bundle["entry"], item.record.message_time
        skipped: list[er7.HL7Error] = []
        if message_time is not None:
            newer = {t for e in entries if (t := self._target(e)) and clocks.now.get(t, message_time) > message_time}
            if newer:
                kept, redirects = [], {}
                for i, entry in enumerate(entries):
                    target = self._target(entry)
                    if target is not None and target in newer:
                        redirects[entry["fullUrl"]] = target
                        seg, seq = item.sources[i] if i < len(item.sources) else ("", 0)
                        skipped.append(
                            er7.HL7Error(
                                f"{target.split('?')[0].split('/')[0]} not updated: a later message already changed it",
                                segment=seg,
                                seq=seq,
                                hl7_code="0",
                                severity="I",
                            )
                        )
                    else:
                        kept.append(entry)
                entries = orjson.loads(orjson.dumps(kept))
                redirect(entries, redirects)
            for entry in entries:
                if (target := self._target(entry)) is not None:
                    clocks.now[target] = message_time
                    clocks.writer[target] = index
        item.make_ack(skipped)
        return entries

    @staticmethod
    def _advance(conn: Any, records: list[InboxRecord], clocks: _Clocks) -> None:
        """Record each written target's newest message time (one statement per kind of change)."""
        known: list[dict[str, Any]] = []
        new: list[dict[str, Any]] = []
        for target in sorted(clocks.writer):
            row = {"t": target, "ms": clocks.now[target], "inbox": records[clocks.writer[target]].id}
            (known if target in clocks.stored else new).append(row)
        _UPDATE_CLOCK.many(conn, known)
        _INSERT_CLOCK.many(conn, new)

    # declared last: inside the class body the name ``list`` is this method from here on
    def list(self, status: str | None = None, limit: int = 50) -> list[InboxRecord]:
        q = select(inbox).order_by(inbox.c.id.desc()).limit(limit)
        if status:
            q = q.where(inbox.c.status == status)
        with self.repo.db.read() as conn:
            return [_record(r) for r in conn.execute(q).mappings()]


def _record(row: Any) -> InboxRecord:
    return InboxRecord(
        raw=bytes(row["raw"]),
        sender=row["sender"],
        control_id=row["control_id"],
        status=row["status"],
        ack_code=row["ack_code"],
        ack=row["ack"],
        event=row["event"],
        version=row["version"],
        message_time=row["message_time"],
        received_at=row["received_at"],
        peer=row["peer"],
        problems=orjson.loads(row["problems"] or "[]"),
        channel=row["channel"],
        digest=row["digest"],
        id=row["id"],
        attempts=row["attempts"],
        updated_at=row["updated_at"],
    )
