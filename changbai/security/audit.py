"""The audit trail: one row per access, write, sign-in and denial, chained by a keyed hash.

Each row's ``hash`` is HMAC-SHA256(audit key, previous row's hash + the row's fields). Editing a row,
deleting one or swapping two breaks the chain at that row, and without the key (kept in data_dir/keys,
not in the database) nobody can rebuild a consistent chain. Rows are rendered as BALP-shaped AuditEvent
resources (IHE Basic Audit Log Patterns) for the FHIR API; they are never stored as FHIR resources, so
the trail cannot be changed through the API.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
from sqlalchemy import Connection, func, insert, select, text

from changbai.errors import ChangbaiError
from changbai.fhir.values import ms_to_instant
from changbai.security import tables as st
from changbai.security.policy import now_ms
from changbai.store.database import Database
from changbai.store.prepared import driver_cursor

FIELDS = (
    "recorded",
    "category",
    "action",
    "outcome",
    "username",
    "role",
    "organization",
    "address",
    "purpose",
    "patients",
    "entities",
    "query",
    "detail",
    "flagged",
)
CHAIN_LOCK = 0x63686169  # PostgreSQL advisory lock that serialises appends
GENESIS = "0" * 64
#: Built once: an audit row is appended on every request, so statement construction shows in profiles.
_HEAD = select(st.audit.c.hash).order_by(st.audit.c.seq.desc()).limit(1)
_HEAD_ROW = select(st.audit.c.seq, st.audit.c.hash).order_by(st.audit.c.seq.desc()).limit(1)
_INSERT = insert(st.audit)
_INSERT_NUMBERED = insert(st.audit).returning(st.audit.c.seq, sort_by_parameter_order=True)
_INSERT_PATIENT = insert(st.audit_patient)
_LOCK = text("SELECT pg_advisory_xact_lock(:k)")
#: SQLite, on the driver's cursor (an audit row per request and per written resource, where SQLAlchemy's
#: statement handling cost more than the inserts): rows numbered here, after the head read in the same
#: write transaction, so that their residents go to sec_audit_patient in the same executemany round
COLUMNS = ("seq", *FIELDS, "prev", "hash")
_RAW_HEAD = "SELECT seq, hash FROM sec_audit ORDER BY seq DESC LIMIT 1"
_RAW_INSERT = f"INSERT INTO sec_audit ({', '.join(COLUMNS)}) VALUES ({', '.join('?' for _ in COLUMNS)})"
_RAW_INSERT_PATIENT = "INSERT INTO sec_audit_patient (patient, seq) VALUES (?, ?)"
ACTIONS = {"create": "C", "read": "R", "vread": "R", "search": "E", "update": "U", "patch": "U", "delete": "D"}


def event(category: str, outcome: str = "0", **fields: Any) -> dict[str, Any]:
    """A new audit row (not yet chained). ``outcome``: 0 success, 4 refused, 8 failed."""
    row: dict[str, Any] = {
        "recorded": now_ms(),
        "category": category[:16],
        "action": ACTIONS.get(category, "E"),
        "outcome": outcome,
        "username": "",
        "role": "",
        "organization": "",
        "address": "",
        "purpose": "",
        "patients": "",
        "entities": "",
        "query": "",
        "detail": "",
        "flagged": False,
    }
    for key, value in fields.items():
        if key in ("patients", "entities"):
            value = " ".join(sorted(set(value)))[:20000] if not isinstance(value, str) else value
        row[key] = value if not isinstance(value, str) else value[:20000]
    row["username"] = (row["username"] or "")[:100]
    row["address"] = (row["address"] or "")[:64]
    row["purpose"] = (row["purpose"] or "")[:40]
    row["role"] = (row["role"] or "")[:40]
    row["organization"] = (row["organization"] or "")[:64]
    return row


class AuditTrail:
    """The append-only, hash-chained log. The chain shows any altered, removed or reordered row except
    rows cut from its end; for those, the committed head is copied every few seconds to ``anchor`` (a
    file beside the keys, outside the database), and :meth:`verify` requires the anchored row."""

    def __init__(self, db: Database, key: bytes, anchor: Path | None = None) -> None:
        self.db = db
        self.key = key
        self.anchor = anchor
        self._queue: list[_Pending] = []  # rows handed to record() and not yet taken by a commit
        self._queue_lock = threading.Lock()
        self._commit_lock = threading.Lock()

    def digest(self, prev: str, row: dict[str, Any]) -> str:
        body = orjson.dumps([prev, *(row[f] if f != "flagged" else bool(row[f]) for f in FIELDS)])
        return hmac.new(self.key, body, hashlib.sha256).hexdigest()

    def _lock(self, conn: Connection) -> None:
        if not self.db.is_sqlite:
            conn.execute(_LOCK, {"k": CHAIN_LOCK})

    def append(self, conn: Connection, rows: list[dict[str, Any]], state: dict[str, Any] | None = None) -> None:
        """Chain and insert ``rows`` in the caller's transaction. ``state`` carries the chain head between
        calls in one transaction (a bundle's writes) so the head is read and locked once."""
        if not rows:
            return
        key = id(conn)
        known = state["head"] if state is not None and state.get("conn") == key else None
        if self.db.is_sqlite:
            with driver_cursor(conn) as cursor:
                head = self._insert(cursor, known or _head(cursor), rows)
        else:
            if known is None:
                self._lock(conn)
                known = (0, conn.execute(_HEAD).scalar() or GENESIS)
            head = (0, self._chain(known[1], rows))
            if any(row["patients"] for row in rows):
                seqs = conn.execute(_INSERT_NUMBERED, rows).scalars().all()
                named = [
                    {"patient": pid, "seq": seq}
                    for row, seq in zip(rows, seqs, strict=True)
                    for pid in set(row["patients"].split())
                ]
                conn.execute(_INSERT_PATIENT, named)
            else:
                conn.execute(_INSERT, rows)
        if state is not None:
            state.update(conn=key, head=head)

    def _chain(self, prev: str, rows: list[dict[str, Any]]) -> str:
        for row in rows:
            row["flagged"] = bool(row["flagged"])
            row["prev"] = prev
            row["hash"] = prev = self.digest(prev, row)
        return prev

    def _insert(self, cursor: Any, head: tuple[int, str], rows: list[dict[str, Any]]) -> tuple[int, str]:
        """SQLite: number, chain and insert ``rows`` after ``head`` (seq, hash); returns the new head."""
        seq, prev = head
        values = []
        named = []
        for row in rows:
            seq += 1
            row["seq"] = seq
            prev = self._chain(prev, [row])
            values.append(tuple(row[c] for c in COLUMNS))
            named.extend((pid, seq) for pid in set(row["patients"].split()))
        cursor.executemany(_RAW_INSERT, values)
        if named:
            cursor.executemany(_RAW_INSERT_PATIENT, named)
        return seq, prev

    def record(self, rows: list[dict[str, Any]]) -> None:
        """Append durably before the caller answers, in a transaction of its own (a read request holds
        none to join). Group commit: the rows that other threads hand in while a commit is under way go
        together in the next one, so concurrent requests share one transaction instead of queueing one
        each. Raises when the rows could not be committed (the caller must not answer as if audited)."""
        if not rows:
            return
        mine = _Pending(rows)
        with self._queue_lock:
            self._queue.append(mine)
        with self._commit_lock:
            if not mine.done:  # nobody took my rows yet: commit everything waiting, mine included
                with self._queue_lock:
                    batch, self._queue = self._queue, []
                try:
                    self._commit([row for pending in batch for row in pending.rows])
                except Exception as exc:
                    for pending in batch:
                        pending.error = exc
                finally:
                    for pending in batch:
                        pending.done = True
        if mine.error is not None:
            # the request is answered with this error, never served unaudited
            raise ChangbaiError(
                "The audit trail could not be written; try again later", code="exception", status=503
            ) from mine.error

    def _commit(self, rows: list[dict[str, Any]]) -> None:
        if not self.db.is_sqlite:
            with self.db.write() as conn:
                self.append(conn, rows)
            return
        with self.db.write_cursor() as cursor:
            self._insert(cursor, _head(cursor), rows)

    def anchor_head(self) -> None:
        """Copy the committed head of the chain (row number and hash) to the anchor file."""
        if self.anchor is None:
            return
        old = orjson.loads(self.anchor.read_bytes()) if self.anchor.exists() else None
        with self.db.read() as conn:
            head = conn.execute(_HEAD_ROW).first()
            kept = (
                old is None
                or conn.execute(select(st.audit.c.hash).where(st.audit.c.seq == old["seq"])).scalar() == old["hash"]
            )
        if not kept:  # the anchored row is gone or changed: keep the evidence, never move past it
            raise AuditTampered(f"audit row {old['seq']} (anchored at {old['at']}) is gone or altered")
        if head is None:
            return
        tmp = self.anchor.with_name(self.anchor.name + ".tmp")
        tmp.write_bytes(orjson.dumps({"seq": head.seq, "hash": head.hash, "at": ms_to_instant(now_ms())}))
        tmp.chmod(0o600)
        tmp.replace(self.anchor)

    def verify(self) -> VerifyResult:
        prev = GENESIS
        count = 0
        last = None
        anchored = orjson.loads(self.anchor.read_bytes()) if self.anchor is not None and self.anchor.exists() else None
        seen_anchor = anchored is None
        with self.db.read() as conn:
            result = conn.execution_options(yield_per=2000).execute(select(st.audit).order_by(st.audit.c.seq))
            for row in result:
                data = row._mapping
                if data["prev"] != prev:
                    return VerifyResult(False, count, data["seq"], "it does not follow the row before it")
                if self.digest(prev, dict(data)) != data["hash"]:
                    return VerifyResult(False, count, data["seq"], "its content does not match its hash")
                prev = data["hash"]
                seen_anchor = seen_anchor or prev == anchored["hash"]  # type: ignore[index]
                last = data["seq"]
                count += 1
        if not seen_anchor:
            assert anchored is not None
            reason = (
                f"the trail ends at row {last} but row {anchored['seq']} was there at {anchored['at']} "
                "(the anchor beside the keys): rows were removed from its end"
            )
            return VerifyResult(False, count, anchored["seq"], reason)
        return VerifyResult(True, count, None, "")

    def search(
        self, conds: list[Any], count: int, offset: int, total: bool = True
    ) -> tuple[list[dict[str, Any]], int | None]:
        """Rows newest first, and how many match (None unless ``total``: counting walks every match)."""
        a = st.audit.c
        with self.db.read() as conn:
            n = conn.execute(select(func.count()).select_from(st.audit).where(*conds)).scalar_one() if total else None
            rows = conn.execute(select(st.audit).where(*conds).order_by(a.seq.desc()).limit(count).offset(offset)).all()
        return [dict(r._mapping) for r in rows], n


def _head(cursor: Any) -> tuple[int, str]:
    """SQLite: the chain's head (seq, hash), read inside the write transaction."""
    row = cursor.execute(_RAW_HEAD).fetchone()
    return (int(row[0]), str(row[1])) if row else (0, GENESIS)


@dataclass
class _Pending:
    """Rows one caller of :meth:`AuditTrail.record` waits on."""

    rows: list[dict[str, Any]]
    done: bool = False
    error: Exception | None = None


class AuditTampered(Exception):
    """The trail no longer holds a row it held (found while anchoring; `changbai audit verify` says where)."""


@dataclass
class VerifyResult:
    ok: bool
    rows: int
    broken_at: int | None
    reason: str


def to_audit_event(row: dict[str, Any]) -> dict[str, Any]:
    """One audit row as a BALP-shaped AuditEvent."""
    category = row["category"]
    if category in ("login", "token"):
        type_ = {
            "system": "http://dicom.nema.org/resources/ontology/DCM",
            "code": "110114",
            "display": "User Authentication",
        }
    else:
        type_ = {
            "system": "http://terminology.hl7.org/CodeSystem/audit-event-type",
            "code": "rest",
            "display": "RESTful Operation",
        }
    event: dict[str, Any] = {
        "resourceType": "AuditEvent",
        "id": str(row["seq"]),
        "type": type_,
        "subtype": [{"system": "https://changbai.example/fhir/CodeSystem/audit-category", "code": category}],
        "action": row["action"],
        "recorded": ms_to_instant(row["recorded"]),
        "outcome": row["outcome"],
        "agent": [
            {
                "type": {
                    "coding": [
                        {
                            "system": "http://terminology.hl7.org/CodeSystem/v3-ParticipationType",
                            "code": "IRCP",
                            "display": "information recipient",
                        }
                    ]
                },
                "who": {"identifier": {"value": row["username"] or "(anonymous)"}},
                "requestor": True,
                "role": [{"text": row["role"]}] if row["role"] else [],
                **({"network": {"address": row["address"], "type": "2"}} if row["address"] else {}),
            }
        ],
        "source": {
            "observer": {"display": "Changbai"},
            "type": [{"system": "http://terminology.hl7.org/CodeSystem/security-source-type", "code": "4"}],
        },
    }
    if not event["agent"][0]["role"]:
        del event["agent"][0]["role"]
    if row["organization"]:
        event["agent"][0]["location"] = {"reference": f"Organization/{row['organization']}"}
    if row["detail"]:
        event["outcomeDesc"] = row["detail"]
    if row["purpose"]:
        event["purposeOfEvent"] = [
            {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ActReason", "code": row["purpose"]}]}
        ]
    entities: list[dict[str, Any]] = []
    for pid in row["patients"].split():
        entities.append(
            {
                "what": {"reference": f"Patient/{pid}"},
                "type": {"system": "http://terminology.hl7.org/CodeSystem/audit-entity-type", "code": "1"},
                "role": {"system": "http://terminology.hl7.org/CodeSystem/object-role", "code": "1"},
            }
        )
    for ref in row["entities"].split():
        entities.append(
            {
                "what": {"reference": ref},
                "type": {"system": "http://terminology.hl7.org/CodeSystem/audit-entity-type", "code": "2"},
            }
        )
    if row["query"]:
        entities.append(
            {
                "type": {"system": "http://terminology.hl7.org/CodeSystem/audit-entity-type", "code": "2"},
                "query": base64.b64encode(row["query"].encode()).decode(),
            }
        )
    if row["flagged"]:
        event.setdefault("meta", {})["tag"] = [
            {
                "system": "http://terminology.hl7.org/CodeSystem/v3-ActReason",
                "code": "BTG",
                "display": "break the glass",
            }
        ]
    if entities:
        event["entity"] = entities
    return event
