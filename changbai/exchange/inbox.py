"""The durable IntakeStore: inbox rows, clocks and FHIR resources in one database transaction.

Resources are written only through the platform's transaction pipeline (``apply(unit, bundle)``, by
default the FHIR router's transaction-bundle processing), inside the same unit of work that writes the
inbox row. So either the message's resources, its inbox row and the ACK text are all committed, or none
is; the ACK goes out only afterwards. A resend after a crash finds either nothing (and is processed
now) or the committed row (and gets the stored ACK): exactly one result.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson
from sqlalchemy import bindparam, select, update
from sqlalchemy.exc import IntegrityError

from changbai.errors import ChangbaiError, InvalidInput, NotFound, PreconditionFailed
from changbai.exchange import er7
from changbai.exchange.intake import Duplicate, InboxRecord
from changbai.exchange.tables import clock, inbox
from changbai.store.pipeline import Context
from changbai.store.repository import Outcome, Repository, Unit

ApplyTransaction = Callable[[Unit, dict[str, Any]], Any]

# Statements of the per-message path, built once (SQLAlchemy then only looks up their compiled form).
_INSERT_ROW = inbox.insert()
_CLOCKS = select(clock.c.target, clock.c.message_time).where(clock.c.target.in_(bindparam("targets", expanding=True)))
_INSERT_CLOCK = clock.insert()
_UPDATE_CLOCK = (
    update(clock)
    .where(clock.c.target == bindparam("t"))
    .values(message_time=bindparam("ms"), inbox_id=bindparam("inbox"))
)


class _Exists(Exception):
    """The inbox already holds a row with this key: process the message again on the careful path."""


@dataclass
class _Job:
    record: InboxRecord
    bundle: dict[str, Any]
    make_ack: Callable[[list[er7.HL7Error]], str]
    sources: list[tuple[str, int]]
    done: threading.Event = field(default_factory=threading.Event)
    error: BaseException | None = None
    committed: bool = False


def apply_bundle(unit: Unit, bundle: dict[str, Any]) -> list[Outcome]:
    """Write a transaction Bundle built by this module's mappers (HL7 v2, CDA, CSV) inside ``unit``.

    Our bundles hold only ``PUT Type/id``, conditional ``PUT Type?query`` and ``POST`` + ``ifNoneExist``
    entries, whose references to each other are ``urn:uuid`` fullUrls. Once the conditions are resolved
    every entry is an update-or-create with a known id: the store's batch write (:meth:`Unit.put_many`,
    the same pipeline per resource as any update, its SQL in one statement per kind of row) instead of
    the REST router's several statements per entry. A refusal names ``Bundle.entry[i]`` as the
    platform's transaction does, so the ACK can name the segment the entry came from.
    """
    writes, mapping = resolve_conditional_updates(unit, bundle["entry"])
    if not writes:
        return []
    resources = orjson.loads(orjson.dumps([entry["resource"] for _, entry in writes]))
    conditional = _redirect(resources, mapping)
    if conditional:  # e.g. to a patient whose update was skipped as out of order: Patient?identifier=...
        _redirect(resources, _resolve_references(unit, conditional))
    try:
        return unit.put_many(resources)
    except ChangbaiError as exc:
        raise _named(unit, resources, [i for i, _ in writes], exc) from None


def _named(unit: Unit, resources: list[dict[str, Any]], positions: list[int], exc: ChangbaiError) -> ChangbaiError:
    """The refusal of a batch, with the entry that caused it: each resource is written alone in a
    savepoint that is rolled back, until one is refused. Only a failing message pays for this."""
    for resource, where in zip(resources, positions, strict=True):
        savepoint = unit.conn.begin_nested()
        try:
            Unit(unit.repo, unit.conn, unit.ctx).put_many([orjson.loads(orjson.dumps(resource))])
        except ChangbaiError as alone:
            for issue in alone.issues:
                issue.diagnostics = f"Bundle.entry[{where}]: {issue.diagnostics}"
            return alone
        except Exception:  # the database cannot tell more: the refusal as it came
            return exc
        finally:
            savepoint.rollback()
    return exc


def resolve_conditional_updates(
    unit: Unit, entries: list[dict[str, Any]]
) -> tuple[list[tuple[int, dict[str, Any]]], dict[str, str]]:
    """Resolve the conditions of a bundle inside the unit: the writes as ``(entry index, PUT Type/id
    entry)`` and where each fullUrl now points (``Type/id``).

    - ``PUT Type?query``: one match -> update that id; none -> create with the entry's own deterministic
      id (its ``urn:uuid``); more -> refused;
    - ``POST`` with ``ifNoneExist``: a match -> nothing written, references point to the match; none ->
      created with the entry's own id.
    """
    writes: list[tuple[int, dict[str, Any]]] = []
    mapping: dict[str, str] = {}
    for i, entry in enumerate(entries):
        req = entry.get("request") or {}
        method, url = req.get("method"), req.get("url", "")
        query = url.partition("?")[2] if method == "PUT" else req.get("ifNoneExist", "") if method == "POST" else ""
        rtype = url.partition("?")[0]
        if not query:
            if method != "PUT" or rtype.count("/") != 1:
                raise InvalidInput(f"Bundle.entry[{i}]: '{method} {url}' is not a write this intake makes")
            writes.append((i, entry))
        else:
            found = unit.find(rtype, query)
            if len(found) > 1:
                raise PreconditionFailed(f"Bundle.entry[{i}]: the condition '{query}' matched {len(found)} resources")
            if found and method == "POST":
                mapping[entry["fullUrl"]] = f"{rtype}/{found[0][0]}"
                continue
            rid = found[0][0] if found else entry["fullUrl"].rsplit(":", 1)[-1]
            url = f"{rtype}/{rid}"
            writes.append(
                (i, {**entry, "resource": {**entry["resource"], "id": rid}, "request": {"method": "PUT", "url": url}})
            )
        if entry.get("fullUrl"):
            mapping[entry["fullUrl"]] = url
    return writes, mapping


class SqlInbox:
    """IntakeStore on the platform database (SQLite or PostgreSQL)."""

    def __init__(self, repo: Repository, apply: ApplyTransaction, channel: str = "hl7v2", batch: int = 32) -> None:
        self.repo = repo
        self.apply = apply
        self.channel = channel
        self.batch = batch
        # Group commit without a writer thread: the first thread to find nobody writing commits every
        # message waiting (up to ``batch``); the others wait for that commit or for their turn.
        self._turn = threading.Condition()
        self._pending: list[_Job] = []
        self._writing = False

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
    def commit(
        self,
        record: InboxRecord,
        bundle: dict[str, Any],
        make_ack: Callable[[list[er7.HL7Error]], str],
        sources: list[tuple[str, int]],
    ) -> InboxRecord:
        """Apply and record one message; returns once it is committed (raises Duplicate or the refusal).

        Messages arriving together (several connections) are committed together: one transaction, each
        message in its own savepoint, so one refused message does not undo the others and nobody's ACK
        leaves before the common commit. A lone message is committed at once, without waiting."""
        job = _Job(record, bundle, make_ack, sources)
        with self._turn:
            self._pending.append(job)
            while True:
                while self._writing and not job.done.is_set():
                    self._turn.wait()
                if job.done.is_set():
                    break
                # Nobody is writing: this thread commits what is waiting (its own message first in line
                # or behind others that came earlier), then hands over to the next waiting thread.
                jobs, self._pending = self._pending[: self.batch], self._pending[self.batch :]
                self._writing = True
                self._turn.release()
                try:
                    self._commit_batch(jobs)
                finally:
                    self._turn.acquire()
                    self._writing = False
                    self._turn.notify_all()
        if job.error is not None:
            raise job.error
        if not job.committed:  # the committing thread was interrupted: no ACK for an unknown outcome
            raise RuntimeError("the message was not committed")
        return record

    def _commit_batch(self, jobs: list[_Job]) -> None:
        if len(jobs) == 1:
            self._commit_alone(jobs[0])
            return
        try:
            with self.repo.db.write() as conn:
                for job in jobs:
                    self._in_savepoint(conn, job, fast=True)
            for job in jobs:
                job.committed = job.error is None
        except Exception as exc:  # the common commit failed: nothing of the batch is stored
            for job in jobs:
                if job.error is None:
                    job.error = exc
        finally:
            for job in jobs:
                job.done.set()

    def _commit_alone(self, job: _Job) -> None:
        """A message that arrived alone has the transaction to itself: no savepoint to set and release;
        a row already holding its key (a resend, a replay) sends it round again on the careful path."""
        try:
            try:
                with self.repo.db.write() as conn:
                    self._commit_one(conn, job, fast=True)
            except _Exists:
                with self.repo.db.write() as conn:
                    self._commit_one(conn, job, fast=False)
            job.committed = True
        except Exception as exc:
            job.error = Duplicate() if isinstance(exc, IntegrityError) else exc
        finally:
            job.done.set()

    def _in_savepoint(self, conn: Any, job: _Job, fast: bool) -> None:
        savepoint = conn.begin_nested()
        try:
            self._commit_one(conn, job, fast)
            savepoint.commit()
        except _Exists:
            savepoint.rollback()
            self._in_savepoint(conn, job, fast=False)
        except Exception as exc:
            savepoint.rollback()
            job.error = Duplicate() if isinstance(exc, IntegrityError) else exc

    def _commit_one(self, conn: Any, job: _Job, fast: bool) -> None:
        """One message: inbox row, resources, clocks. ``fast``: a new message (the usual case) inserts its
        row first and lets the unique key find the rare resend or retry, instead of looking first."""
        record = job.record
        ctx = Context(source="hl7v2", extras={"sender": record.sender, "control_id": record.control_id})
        unit = Unit(self.repo, conn, ctx)  # the store's unit of work, on our transaction
        entries, skipped, clocks = self._in_order(conn, job.bundle, record.message_time, job.sources)
        job.make_ack(skipped)
        existing, inserted = None, False
        if fast and not record.id:
            try:
                self._put(conn, record, None)
            except IntegrityError as exc:
                raise _Exists() from exc
            inserted = True
        else:
            existing = self._existing(conn, record)
            if existing is not None and existing.status == "accepted" and not record.id:
                raise Duplicate()
        if entries:
            self.apply(unit, {**job.bundle, "entry": entries})
        unit.flush()
        if not inserted:
            self._put(conn, record, existing)
        self._advance(conn, entries, record, clocks)

    def record(self, record: InboxRecord) -> InboxRecord:
        with self.repo.db.write() as conn:
            self._put(conn, record, self._existing(conn, record))
        return record

    def _existing(self, conn: Any, record: InboxRecord) -> Any:
        """The row this record replaces: by id for a replay, else by idempotency key."""
        by_key = self._key(record.sender, record.control_id, record.digest)
        where = (inbox.c.id == record.id) if record.id else by_key
        return conn.execute(select(inbox.c.id, inbox.c.status, inbox.c.attempts).where(where)).first()

    def _put(self, conn: Any, record: InboxRecord, old: Any) -> None:
        now = int(time.time() * 1000)
        record.updated_at = now
        values = {
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
        if old is not None:
            record.id, record.attempts = old.id, old.attempts + 1
            conn.execute(
                update(inbox)
                .where(inbox.c.id == old.id)
                .values(
                    attempts=record.attempts,
                    sender=record.sender,
                    control_id=record.control_id,
                    digest=record.digest,
                    **values,
                )
            )
        else:
            result = conn.execute(
                _INSERT_ROW,
                {
                    "channel": self.channel,
                    "sender": record.sender,
                    "control_id": record.control_id,
                    "digest": record.digest,
                    "received_at": record.received_at or now,
                    "attempts": 1,
                    **values,
                },
            )
            record.id = result.inserted_primary_key[0]

    # ------------------------------------------------------------------------------------ ordering
    @staticmethod
    def _target(entry: dict[str, Any]) -> str | None:
        req = entry.get("request", {})
        return req.get("url") if req.get("method") == "PUT" else None

    def _in_order(
        self, conn: Any, bundle: dict[str, Any], message_time: int | None, sources: list[tuple[str, int]]
    ) -> tuple[list[dict[str, Any]], list[er7.HL7Error], dict[str, int]]:
        """Drop updates older than what is stored; references to a dropped entry point to the stored one."""
        entries = bundle["entry"]
        targets = {t for e in entries if (t := self._target(e))}
        if message_time is None or not targets:
            return entries, [], {}
        clocks = {row.target: row.message_time for row in conn.execute(_CLOCKS, {"targets": sorted(targets)})}
        newer = {t for t, ms in clocks.items() if ms > message_time}
        if not newer:
            return entries, [], clocks
        kept, skipped, redirect = [], [], dict[str, str]()
        for i, entry in enumerate(entries):
            target = self._target(entry)
            if target is not None and target in newer:
                redirect[entry["fullUrl"]] = target
                seg, seq = sources[i] if i < len(sources) else ("", 0)
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
        kept = orjson.loads(orjson.dumps(kept))
        _redirect(kept, redirect)
        return kept, skipped, clocks

    def _advance(self, conn: Any, entries: list[dict[str, Any]], record: InboxRecord, clocks: dict[str, int]) -> None:
        """Record this message's time on every resource it wrote (one statement per kind of change)."""
        if record.message_time is None:
            return
        targets = {t for e in entries if (t := self._target(e))}
        rows = [{"t": t, "ms": record.message_time, "inbox": record.id} for t in sorted(targets)]
        known = [r for r in rows if r["t"] in clocks]
        new = [
            {"target": r["t"], "message_time": r["ms"], "inbox_id": r["inbox"]} for r in rows if r["t"] not in clocks
        ]
        if known:
            conn.execute(_UPDATE_CLOCK, known)
        if new:
            conn.execute(_INSERT_CLOCK, new)

    # declared last: inside the class body the name ``list`` is this method from here on
    def list(self, status: str | None = None, limit: int = 50) -> list[InboxRecord]:
        q = select(inbox).order_by(inbox.c.id.desc()).limit(limit)
        if status:
            q = q.where(inbox.c.status == status)
        with self.repo.db.read() as conn:
            return [_record(r) for r in conn.execute(q).mappings()]


def _redirect(node: Any, mapping: dict[str, str], conditional: set[str] | None = None) -> set[str]:
    """Point references through ``mapping`` (in place); returns the conditional references
    (``Type?query``) left, which the store resolves."""
    conditional = set() if conditional is None else conditional
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "reference" and isinstance(value, str):
                if value in mapping:
                    node[key] = mapping[value]
                elif "?" in value:
                    conditional.add(value)
            elif isinstance(value, dict | list):
                _redirect(value, mapping, conditional)
    elif isinstance(node, list):
        for item in node:
            _redirect(item, mapping, conditional)
    return conditional


def _resolve_references(unit: Unit, references: set[str]) -> dict[str, str]:
    """Conditional references -> ``Type/id``; each must match exactly one resource (FHIR transaction rule)."""
    out = {}
    for ref in sorted(references):
        rtype, _, query = ref.partition("?")
        found = unit.find(rtype, query)
        if len(found) != 1:
            raise PreconditionFailed(f"Conditional reference '{ref}' matched {len(found)} resources, not one")
        out[ref] = f"{rtype}/{found[0][0]}"
    return out


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
