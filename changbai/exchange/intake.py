"""HL7 v2 intake: raw bytes in, ACK bytes out, with the outcome durable before the ACK exists.

    parse -> supported? -> already accepted (sender + control id)? -> map to a transaction Bundle
          -> store.commit(record, bundle): resources + inbox row + clocks in ONE transaction -> ACK

Every message leaves a row in the inbox, whatever happens: accepted (AA), error (AE: the message is
readable but cannot be applied; ERR names segment and field) or rejected (AR: unreadable header,
unsupported type or version). Error and rejected rows are the dead letters an operator replays.

Where the rows and resources go is an :class:`IntakeStore`: :class:`MemoryStore` (tests of framing and
mapping, and the benchmark's baseline) hands the bundle to a :class:`MessageSink`; the SQL store in
``exchange.store`` writes through the platform's transaction pipeline.
"""

from __future__ import annotations

import hashlib
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from changbai import logs
from changbai.errors import ChangbaiError
from changbai.exchange import ack as acks
from changbai.exchange import batch, er7, v2fhir
from changbai.exchange.datatypes import RESIDENT_ID_SYSTEM, Translate

log = logs.get(__name__)
_ENTRY = re.compile(r"Bundle\.entry\[(\d+)\]")
_WHERE = re.compile(r"^(\w+)\[(\d+)\]-(\d+)$")


@dataclass
class InboxRecord:
    """One inbound message and what became of it (a row of ``exchange_inbox``)."""

    raw: bytes
    sender: str
    control_id: str
    status: str  # accepted | error | rejected
    ack_code: str
    ack: str = ""
    event: str = ""
    version: str = ""
    message_time: int | None = None
    received_at: int = 0
    peer: str = ""
    problems: list[dict[str, Any]] = field(default_factory=list)
    channel: str = "hl7v2"
    digest: str = ""
    id: int | None = None
    attempts: int = 1
    updated_at: int = 0


class Duplicate(Exception):
    """The same (sender, control id) was committed meanwhile (a concurrent resend)."""


@dataclass
class Submission:
    """A mapped message on its way into the store: its inbox row, its transaction Bundle, how to build
    its ACK once the entries skipped as out of order are known, and the segment each entry came from."""

    record: InboxRecord
    bundle: dict[str, Any]
    make_ack: Callable[[list[er7.HL7Error]], str]
    sources: list[tuple[str, int]]


@dataclass
class Answer:
    """What became of one message: its application acknowledgement (AA / AE / AR, as stored in the
    inbox) and what the sender's acknowledgement mode needs to choose the reply."""

    ack: bytes
    msg: er7.Message | None  # None when not even the MSH could be read
    status: str  # accepted | error | rejected
    errors: list[er7.HL7Error] = field(default_factory=list)


#: Table 0155 conditions: is an acknowledgement wanted for an outcome that is ``ok`` (or not)?
_CONDITION = {"AL": lambda ok: True, "NE": lambda ok: False, "ER": lambda ok: not ok, "SU": lambda ok: ok}


def reply(answer: Answer, enhanced: bool = True) -> bytes:
    """The bytes sent back on the connection, by the acknowledgement mode the sender asked for.

    Original mode (MSH-15 and MSH-16 empty): the application ACK. Enhanced mode: the accept ACK --
    CA once the message is kept (accepted, or an error kept as a dead letter for replay), CR when it
    was refused -- when MSH-15's condition (table 0155: AL, NE, ER, SU; empty = AL) asks for it;
    otherwise the application ACK when MSH-16's condition asks for that (there is no other route back
    to the sender); otherwise nothing (empty bytes).
    """
    msg = answer.msg
    if msg is None or not enhanced:
        return answer.ack
    accept, application = msg.msh.raw(15).strip().upper(), msg.msh.raw(16).strip().upper()
    if not accept and not application:
        return answer.ack
    kept = answer.status != "rejected"
    if _CONDITION.get(accept or "AL", _CONDITION["AL"])(kept):
        errors = [] if kept else answer.errors
        return acks.encode(acks.build_ack(msg, "CA" if kept else "CR", errors), msg)
    if _CONDITION.get(application or "AL", _CONDITION["AL"])(answer.status == "accepted"):
        return answer.ack
    return b""


@dataclass
class _Mapped:
    """A message parsed and mapped, waiting for the store."""

    msg: er7.Message
    submission: Submission


class MessageSink(Protocol):
    def apply(self, bundle: dict[str, Any]) -> Any: ...


class IntakeStore(Protocol):
    def accepted_ack(self, sender: str, control_id: str, digest: str) -> str | None:
        """The ACK already given to an accepted message with this key, if any."""

    def expect(self, n: int) -> None:
        """``n`` more messages are on their way to :meth:`commit` (being parsed; negative: fewer)."""

    def commit(self, items: list[Submission]) -> list[BaseException | None]:
        """Apply each bundle and store its record (with ``make_ack(skipped-entry warnings)``), atomically
        per message; None per committed message, else why not (Duplicate, a refusal)."""

    def record(self, record: InboxRecord) -> InboxRecord:
        """Store a failed message (insert, or update the row of the same key)."""

    def list(self, status: str | None = None, limit: int = 50) -> list[InboxRecord]: ...

    def get(self, id: int) -> InboxRecord: ...


def digest(raw: bytes) -> str:
    """Identity of a message's content: a resend is byte-identical (BOM and trailing blanks aside)."""
    return hashlib.sha256(raw.removeprefix(b"\xef\xbb\xbf").rstrip(b"\r\n \t")).hexdigest()


def problem(err: er7.HL7Error) -> dict[str, Any]:
    return {
        "segment": err.segment,
        "seq": err.seq,
        "field": err.field_no,
        "component": err.component,
        "code": err.hl7_code,
        "severity": err.severity,
        "text": err.message,
    }


def instant_ms(value: str | None) -> int | None:
    if not value or "T" not in value:
        return None
    try:
        return int(datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp() * 1000)
    except ValueError:
        return None


def _unmapped_warning(u: dict[str, str]) -> er7.HL7Error:
    m = _WHERE.match(u["where"])
    segment, seq, field_no = (m.group(1), int(m.group(2)), int(m.group(3))) if m else ("", 0, 0)
    return er7.HL7Error(
        f"code '{u['code']}' of system '{u['system']}' has no mapping for {u['facility']}; kept as sent",
        segment=segment,
        seq=seq,
        field_no=field_no,
        hl7_code="103",
        severity="W",
    )


def sniff_control_id(raw: bytes) -> tuple[str, str]:
    """(sender, control id) from a message whose MSH could not be parsed, as far as they can be read."""
    head = raw.lstrip(b"\xef\xbb\xbf").split(b"\r", 1)[0].split(b"\n", 1)[0]
    if len(head) > 3 and head.startswith(b"MSH"):
        parts = head.decode("latin-1").split(head[3:4].decode("latin-1"))
        if len(parts) > 9:
            return f"{parts[2]}|{parts[3]}", parts[9]
    return "", ""


class Intake:
    """Turns one raw HL7 v2 message into a durable outcome and its ACK. Thread-safe."""

    def __init__(
        self,
        store: IntakeStore,
        translate: Translate | None = None,
        default_tz: str = "+08:00",
        resident_id_system: str = RESIDENT_ID_SYSTEM,
        enhanced_ack: bool = True,
    ) -> None:
        self.store = store
        self.enhanced_ack = enhanced_ack
        self.translate = translate
        self.default_tz = default_tz
        self.resident_id_system = resident_id_system

    def handle(self, raw: bytes, peer: str = "", enhanced: bool | None = None) -> bytes:
        """Process one message (or an FHS/BHS batch of them) as received; returns what to send back (see
        :func:`reply`; ``enhanced`` overrides the intake's choice of honouring MSH-15/16)."""
        mode = self.enhanced_ack if enhanced is None else enhanced
        if batch.is_batch(raw):
            return batch.answer(
                batch.split(raw), lambda messages: [reply(a, mode) for a in self.process_many(messages, peer)]
            )
        return reply(self.process(raw, peer), mode)

    def process(self, raw: bytes, peer: str = "", replaces: int | None = None) -> Answer:
        """Process one message; ``replaces`` is the inbox row an operator's replay updates."""
        return self.process_many([raw], peer, replaces)[0]

    def process_many(self, raws: list[bytes], peer: str = "", replaces: int | None = None) -> list[Answer]:
        """Process messages that arrived together (an HL7 batch): each on its own, as if it had come alone
        (its own inbox row, outcome and ACK; one refused message refuses nothing else), committed together."""
        self.store.expect(len(raws))
        waiting: list[_Mapped] = []
        try:
            prepared = [self._prepare(raw, peer, replaces) for raw in raws]
            waiting = [p for p in prepared if isinstance(p, _Mapped)]
        finally:
            self.store.expect(len(waiting) - len(raws))  # those refused before the store come no more
        errors = self.store.commit([p.submission for p in waiting]) if waiting else []
        outcome = dict(zip(map(id, waiting), errors, strict=True))
        return [p if isinstance(p, Answer) else self._finish(p, outcome[id(p)]) for p in prepared]

    def _prepare(self, raw: bytes, peer: str, replaces: int | None) -> Answer | _Mapped:
        """Parse and map a message: what goes to the store, or the answer when it cannot get that far."""
        received = int(time.time() * 1000)
        key = digest(raw)
        try:
            msg = er7.parse(raw)
            v2fhir.check_supported(msg)
        except er7.HL7Error as exc:
            header = locals().get("msg") or (None if exc.reject else er7.parse_header(raw))
            if header is not None and not exc.reject:
                record = InboxRecord(
                    raw,
                    header.sender,
                    header.control_id,
                    "error",
                    "AE",
                    event=header.event,
                    version=header.version,
                    received_at=received,
                    peer=peer,
                    digest=key,
                    id=replaces,
                )
                return self._fail(record, header, exc)
            return self._refuse(raw, peer, received, exc, header, key, replaces)
        record = InboxRecord(
            raw,
            msg.sender,
            msg.control_id,
            "accepted",
            "AA",
            event=msg.event,
            version=msg.version,
            received_at=received,
            peer=peer,
            digest=key,
            id=replaces,
        )
        try:
            mapped = v2fhir.to_bundle(msg, self.translate, self.default_tz, self.resident_id_system)
        except er7.HL7Error as exc:
            return self._fail(record, msg, exc)
        record.message_time = instant_ms(mapped.bundle.get("timestamp"))
        warnings = list(mapped.warnings) + [_unmapped_warning(u) for u in mapped.unmapped]

        def make_ack(skipped: list[er7.HL7Error]) -> str:
            record.problems = [problem(w) for w in warnings + skipped]
            record.ack = acks.build_ack(msg, "AA", warnings + skipped)
            return record.ack

        return _Mapped(msg, Submission(record, mapped.bundle, make_ack, mapped.sources))

    def _finish(self, mapped: _Mapped, error: BaseException | None) -> Answer:
        """The answer to a message the store committed (``error`` None) or did not."""
        msg, record = mapped.msg, mapped.submission.record
        if error is None:
            return Answer(acks.encode(record.ack, msg), msg, "accepted")
        if isinstance(error, Duplicate):
            previous = self.store.accepted_ack(msg.sender, msg.control_id, record.digest)
            if previous is not None:
                return Answer(acks.encode(previous, msg), msg, "accepted")
            return self._fail(record, msg, er7.HL7Error("the message is being processed", hl7_code="206"))
        if isinstance(error, ChangbaiError):
            return self._fail(record, msg, self._locate(error, mapped.submission.sources))
        # an internal fault still gets an answer and a dead-letter row
        logs.event(log, "hl7v2 intake failed", level=40, control_id=msg.control_id, error=repr(error))
        return self._fail(record, msg, er7.HL7Error(f"internal error: {type(error).__name__}", hl7_code="207"))

    # --------------------------------------------------------------------------------- failures
    @staticmethod
    def _locate(exc: ChangbaiError, sources: list[tuple[str, int]]) -> er7.HL7Error:
        """A store refusal names a bundle entry; the sender needs the segment that entry came from."""
        diagnostics = "; ".join(i.diagnostics for i in exc.issues) or exc.message
        m = _ENTRY.search(diagnostics)
        segment, seq = ("", 0)
        if m and int(m.group(1)) < len(sources):
            segment, seq = sources[int(m.group(1))]
        text = _ENTRY.sub("", diagnostics).lstrip(": ").strip()
        return er7.HL7Error(text or exc.message, segment=segment, seq=seq, hl7_code="207")

    def _fail(self, record: InboxRecord, msg: er7.Message, exc: er7.HL7Error) -> Answer:
        record.status, record.ack_code = "error", "AE"
        record.problems = [problem(exc)]
        record.ack = acks.build_ack(msg, "AE", [exc])
        self.store.record(record)
        return Answer(acks.encode(record.ack, msg), msg, "error", [exc])

    def _refuse(
        self,
        raw: bytes,
        peer: str,
        received: int,
        exc: er7.HL7Error,
        msg: er7.Message | None,
        key: str,
        replaces: int | None,
    ) -> Answer:
        sender, control_id = (msg.sender, msg.control_id) if msg is not None else sniff_control_id(raw)
        text = acks.build_ack(msg, "AR", [exc], fallback_control_id=control_id)
        record = InboxRecord(
            raw,
            sender,
            control_id or "",
            "rejected",
            "AR",
            ack=text,
            event=msg.event if msg is not None else "",
            version=msg.version if msg is not None else "",
            received_at=received,
            peer=peer,
            problems=[problem(exc)],
            digest=key,
            id=replaces,
        )
        self.store.record(record)
        return Answer(acks.encode(text, msg), msg, "rejected", [exc])

    def replay(self, id: int, raw: bytes | None = None) -> bytes:
        """Process a stored message again (optionally a corrected text of it); returns the new
        application ACK (the operator wants the outcome, whatever mode the sender asked for)."""
        stored = self.store.get(id)
        return self.process(raw if raw is not None else stored.raw, stored.peer or "replay", replaces=id).ack


class MemorySink:
    """A MessageSink that keeps the bundles it was given (tests, baseline of the benchmark)."""

    def __init__(self) -> None:
        self.bundles: list[dict[str, Any]] = []

    def apply(self, bundle: dict[str, Any]) -> Any:
        self.bundles.append(bundle)
        return len(self.bundles)


class MemoryStore:
    """An in-process IntakeStore over a MessageSink: the same intake logic, nothing durable."""

    def __init__(self, sink: MessageSink | None = None) -> None:
        self.sink = sink or MemorySink()
        self.rows: dict[tuple[str, str, str], InboxRecord] = {}
        self.by_id: dict[int, InboxRecord] = {}
        self.lock = threading.Lock()

    def accepted_ack(self, sender: str, control_id: str, digest: str) -> str | None:
        row = self.rows.get((sender, control_id, digest))
        return row.ack if row is not None and row.status == "accepted" else None

    def expect(self, n: int) -> None:
        return None  # commits are immediate: nothing to wait for

    def commit(self, items: list[Submission]) -> list[BaseException | None]:
        out: list[BaseException | None] = []
        with self.lock:
            for item in items:
                record = item.record
                if self.accepted_ack(record.sender, record.control_id, record.digest) is not None:
                    out.append(Duplicate())
                    continue
                self.sink.apply(item.bundle)
                item.make_ack([])
                self._put(record)
                out.append(None)
        return out

    def record(self, record: InboxRecord) -> InboxRecord:
        with self.lock:
            return self._put(record)

    def _put(self, record: InboxRecord) -> InboxRecord:
        old = (
            self.by_id.get(record.id) if record.id else self.rows.get((record.sender, record.control_id, record.digest))
        )
        if old is not None and old.id is not None:
            key, record.attempts = old.id, old.attempts + 1
            self.rows.pop((old.sender, old.control_id, old.digest), None)
        else:
            key = len(self.by_id) + 1
        record.id = key
        self.rows[(record.sender, record.control_id, record.digest)] = record
        self.by_id[key] = record
        return record

    def list(self, status: str | None = None, limit: int = 50) -> list[InboxRecord]:
        rows = [r for r in self.by_id.values() if status is None or r.status == status]
        return rows[-limit:]

    def get(self, id: int) -> InboxRecord:
        return self.by_id[id]
