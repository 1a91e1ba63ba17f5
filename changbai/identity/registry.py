"""The master index inside the store's transaction: index every Patient write, link it to a person.

The write pipeline's ``identify`` step (:class:`IdentifyStep`) runs for every Patient create, update and
delete, whatever door it came through, on the same connection as the write, so the index and the links
commit or roll back with the resource. On PostgreSQL the step takes a transaction-scoped advisory lock on
each of the record's blocking keys first, so two facilities registering the same new person at the same
moment are serialised and produce one person (SQLite serialises all writers anyway).
"""

from __future__ import annotations

import hashlib
import json
import time
from functools import lru_cache
from typing import Any

import orjson
from sqlalchemy import Connection, and_, bindparam, delete, func, insert, or_, select, union_all, update

from changbai.errors import Conflict, Issue, NotFound
from changbai.identity import blocking
from changbai.identity import tables as t
from changbai.identity.matcher import Matcher, MatchResult
from changbai.identity.model import MatchModel, load
from changbai.identity.normalise import NormalisedPatient, normalise_patient
from changbai.store.pipeline import FieldProtection
from changbai.store.prepared import Prepared


def _now() -> int:
    return int(time.time() * 1000)


_R, _B, _D = t.record.c, t.block.c, t.distinct.c

# Statements compiled once and run on the driver (changbai.store.prepared): the master index runs them on
# every Patient write, where building and executing a statement per call was most of its cost.
_PERSON_OF = Prepared(select(_R.person).where(_R.patient == bindparam("patient")))
_PERSONS_OF = Prepared(select(_R.patient, _R.person).where(_R.patient.in_(bindparam("patients", expanding=True))))
_ROWS_OF = Prepared(select(_R.row).where(_R.patient.in_(bindparam("patients", expanding=True))))
_FIRST_OF_PERSON = Prepared(select(_R.patient).where(_R.person == bindparam("person")).limit(1))
_INSERT_RECORD = Prepared(insert(t.record).values({c: bindparam(c) for c in ("patient", "person", "row", "updated")}))
_UPDATE_RECORD = Prepared(
    update(t.record)
    .where(_R.patient == bindparam("b_patient"))
    .values(row=bindparam("row"), updated=bindparam("updated"), person=bindparam("person"))
)
_INSERT_BLOCK = Prepared(insert(t.block).values(block=bindparam("block"), patient=bindparam("patient")))
_DELETE_BLOCKS = Prepared(delete(t.block).where(_B.patient == bindparam("patient")))
_DELETE_RECORD = Prepared(delete(t.record).where(_R.patient == bindparam("patient")))
_DISTINCT_AMONG = Prepared(
    select(_D.a, _D.b).where(
        or_(
            and_(_D.a == bindparam("key"), _D.b.in_(bindparam("others", expanding=True))),
            and_(_D.b == bindparam("key"), _D.a.in_(bindparam("others", expanding=True))),
        )
    )
)
_EVENT_COLUMNS = ("at", "patient", "person", "previous_person", "action", "other", "probability", "actor", "detail")
_LOCK = Prepared(select(func.pg_advisory_xact_lock(bindparam("k"))))
_INSERT_EVENT = Prepared(insert(t.event).values({c: bindparam(c) for c in _EVENT_COLUMNS}))


@lru_cache(maxsize=64)
def _block_members(keys: int, limit: int) -> Prepared:
    """One statement for the members of ``keys`` blocks, at most ``limit`` of each (a UNION ALL of
    limited subqueries), so a huge block costs one bounded probe and the lookup one round trip."""
    parts = []
    for i in range(keys):
        sub = select(_B.block, _B.patient).where(_B.block == bindparam(f"k{i}")).limit(limit).subquery(f"b{i}")
        parts.append(select(sub.c.block, sub.c.patient))
    return Prepared(parts[0] if keys == 1 else union_all(*parts))


class SqlIndex:
    """The candidate index on a store connection (same protocol as MemoryIndex / SqliteIndex).

    With ``fields`` (the platform protects ID and phone numbers), what it keeps of them is kept the same
    way: blocking keys built from them become blind-index tokens and the row holds them encrypted, so the
    master index's tables reveal no more than the FHIR store's. Callers give and get clear values."""

    def __init__(self, conn: Connection, max_block: int = 2000, fields: FieldProtection | None = None) -> None:
        self.conn = conn
        self.max_block = max_block
        self.fields = fields
        self._stored: dict[str, str] = {}  # clear key -> as stored (a registration locks, looks up and adds)

    def _key(self, key: str) -> str:
        kind = blocking.protected_rules().get(key.partition(":")[0]) if self.fields is not None else None
        if kind is None:
            return key
        stored = self._stored.get(key)
        if stored is None:
            name, _, value = key.partition(":")
            stored = self._stored[key] = f"{name}:{self.fields.token(kind, value)}"  # type: ignore[union-attr]
        return stored

    def _sealed(self, row: dict[str, Any]) -> dict[str, Any]:
        if self.fields is None:
            return row
        sealed = dict(row)
        for column, kind in blocking.protected_columns().items():
            if isinstance(sealed.get(column), str):
                sealed[column] = self.fields.encrypt(kind, sealed[column])
        return sealed

    def _opened(self, row: dict[str, Any]) -> dict[str, Any]:
        if self.fields is not None:
            for column, kind in blocking.protected_columns().items():
                if isinstance(row.get(column), str):
                    row[column] = self.fields.decrypt(kind, row[column])
        return row

    def add(
        self, row: dict[str, Any], keys: list[str], person: str | None = None, *, known: bool | None = None
    ) -> None:
        """Index ``row`` under ``keys`` as a record of ``person``. ``known`` says whether the record is
        indexed already (None: look it up)."""
        pid = row["unique_id"]
        if known is None:
            known = _PERSON_OF.first(self.conn, {"patient": pid}) is not None
        values = {"row": orjson.dumps(self._sealed(row)).decode(), "updated": _now(), "person": person or pid}
        if known:
            _DELETE_BLOCKS.run(self.conn, {"patient": pid})
            _UPDATE_RECORD.run(self.conn, {"b_patient": pid, **values})
        else:
            _INSERT_RECORD.run(self.conn, {"patient": pid, **values})
        _INSERT_BLOCK.many(self.conn, [{"block": k, "patient": pid} for k in sorted({self._key(k) for k in keys})])

    def remove(self, key: str) -> None:
        _DELETE_BLOCKS.run(self.conn, {"patient": key})
        _DELETE_RECORD.run(self.conn, {"patient": key})

    def lookup(self, keys: list[str], exclude: str | None = None) -> list[dict[str, Any]]:
        unique = sorted({self._key(k) for k in keys})
        if not unique:
            return []
        statement = _block_members(len(unique), self.max_block + 1)
        members: dict[str, list[str]] = {}
        for block, patient in statement.all(self.conn, {f"k{i}": k for i, k in enumerate(unique)}):
            members.setdefault(block, []).append(patient)
        found = {p for group in members.values() if len(group) <= self.max_block for p in group}
        found.discard(exclude or "")
        if not found:
            return []
        rows = _ROWS_OF.all(self.conn, {"patients": sorted(found)})
        return sorted((self._opened(orjson.loads(r[0])) for r in rows), key=lambda r: r["unique_id"])


class Registry:
    """Persons and links over one connection: what the pipeline step and the operations use."""

    def __init__(
        self, conn: Connection, model: MatchModel | None = None, fields: FieldProtection | None = None
    ) -> None:
        self.conn = conn
        self.index = SqlIndex(conn, fields=fields)
        self.matcher = Matcher(model or current_model(), self.index)

    # ------------------------------------------------------------------------------------- queries
    def person_of(self, patient: str) -> str | None:
        row = _PERSON_OF.first(self.conn, {"patient": patient})
        return row[0] if row else None

    def persons_of(self, patients: list[str]) -> dict[str, str]:
        """Patient -> person for those of ``patients`` that are indexed (one query)."""
        if not patients:
            return {}
        return dict(_PERSONS_OF.all(self.conn, {"patients": sorted(set(patients))}))

    def records_of(self, person: str) -> list[str]:
        q = select(t.record.c.patient).where(t.record.c.person == person).order_by(t.record.c.patient)
        return [r[0] for r in self.conn.execute(q)]

    def history(self, patient: str) -> list[dict[str, Any]]:
        q = select(t.event).where(t.event.c.patient == patient).order_by(t.event.c.seq)
        return [dict(r._mapping) for r in self.conn.execute(q)]

    def review_queue(self, status: str = "open", limit: int = 100) -> list[dict[str, Any]]:
        q = select(t.review).where(t.review.c.status == status).order_by(t.review.c.created).limit(limit)
        return [{**dict(r._mapping), "levels": json.loads(r.levels)} for r in self.conn.execute(q)]

    def is_distinct(self, a: str, b: str) -> bool:
        return b in self._distinct_among(a, [b])

    def _distinct_among(self, key: str, others: list[str]) -> set[str]:
        """Those of ``others`` recorded as not the same person as ``key``."""
        rows = _DISTINCT_AMONG.all(self.conn, {"key": key, "others": others})
        return {b if a == key else a for a, b in rows}

    # ------------------------------------------------------------------------------------- writes
    def register(
        self,
        patient: NormalisedPatient,
        actor: str | None = None,
        *,
        row: dict[str, Any] | None = None,
        keys: list[str] | None = None,
    ) -> tuple[str, list[MatchResult]]:
        """Index a (new or changed) Patient and link it: returns its person and the scored candidates.
        ``row`` and ``keys``: the patient's blocking row and keys when already computed."""
        if row is None or keys is None:
            row = blocking.blocking_row(patient)
            keys = blocking.keys(row, patient.other_phones)
        self._lock(keys)
        previous = self.person_of(patient.key)
        results = self.matcher.scored(row, keys, minimum="review") if patient.usable else []
        if results:
            distinct = self._distinct_among(patient.key, [r.key for r in results])
            results = [r for r in results if r.key not in distinct]
        persons = self.persons_of([r.key for r in results])
        links = [r for r in results if r.decision == "auto-link"]
        person = previous
        if links:
            person = persons.get(links[0].key) or links[0].key
        elif previous is None:
            person = self._new_person(patient.key)
        self.index.add(row, keys, person, known=previous is not None)
        if person != previous:
            action = "auto-link" if links else "new-person"
            self._event(patient.key, person, previous, action, links[0] if links else None, actor)
        for r in results:
            if r.decision == "review" and persons.get(r.key) != person:
                self._queue(patient.key, r)
        return person or patient.key, results

    def unregister(self, patient: str, actor: str | None = None) -> None:
        previous = self.person_of(patient)
        self.index.remove(patient)
        if previous is not None:
            self._event(patient, None, previous, "deleted", None, actor)

    def link(self, patient: str, other: str, actor: str | None = None) -> str:
        """A person's decision: ``patient`` is the same person as ``other`` (moves it to other's person)."""
        person = self._require(other)
        previous = self._require(patient)
        if previous != person:
            self.conn.execute(update(t.record).where(t.record.c.patient == patient).values(person=person))
            self._event(patient, person, previous, "link", None, actor, other=other)
        self._close_review(patient, other, "linked")
        return person

    def unlink(self, patient: str, actor: str | None = None) -> str:
        """Take ``patient`` out of its person into a person of its own (undoes a wrong link)."""
        previous = self._require(patient)
        if len(self.records_of(previous)) > 1:
            new = self._new_person(patient)
            self.conn.execute(update(t.record).where(t.record.c.patient == patient).values(person=new))
            self._event(patient, new, previous, "unlink", None, actor)
            return new
        return previous

    def merge(self, source: str, target: str, actor: str | None = None) -> str:
        """Every record of ``source``'s person joins ``target``'s person; returns the merge id, which
        :meth:`unmerge` takes to restore exactly the assignments before."""
        into = self._require(target)
        moved_from = self._require(source)
        merge_id = f"merge-{_now()}-{source}"
        for rec in self.records_of(moved_from):
            if rec == target:
                continue
            self.conn.execute(update(t.record).where(t.record.c.patient == rec).values(person=into))
            self._event(rec, into, moved_from, "merge", None, actor, other=target, detail={"merge": merge_id})
        return merge_id

    def unmerge(self, merge_id: str, actor: str | None = None) -> list[str]:
        """Undo a merge: each record it moved goes back to the person it had; returns those records."""
        q = select(t.event).where(t.event.c.action == "merge").order_by(t.event.c.seq)
        moved = [e for e in self.conn.execute(q) if json.loads(e.detail or "{}").get("merge") == merge_id]
        if not moved:
            raise NotFound(f"no merge {merge_id}")
        done = select(t.event.c.seq).where(
            t.event.c.action == "unmerge", t.event.c.detail == json.dumps({"merge": merge_id})
        )
        if self.conn.execute(done).first() is not None:
            raise Conflict(f"merge {merge_id} was already undone")
        for e in moved:
            self.conn.execute(update(t.record).where(t.record.c.patient == e.patient).values(person=e.previous_person))
            self._event(e.patient, e.previous_person, e.person, "unmerge", None, actor, detail={"merge": merge_id})
        return [e.patient for e in moved]

    def not_duplicate(self, a: str, b: str, actor: str | None = None) -> None:
        """Record that a and b are different people: never linked automatically again."""
        self._require(a)
        self._require(b)
        x, y = sorted((a, b))
        if not self.is_distinct(x, y):
            self.conn.execute(insert(t.distinct).values(a=x, b=y, at=_now(), actor=actor))
        if self.person_of(a) == self.person_of(b):
            self.unlink(a, actor)
        self._event(a, self.person_of(a), None, "not-duplicate", None, actor, other=b)
        self._close_review(a, b, "distinct")

    # ------------------------------------------------------------------------------------- helpers
    def _new_person(self, founder: str) -> str:
        """A new person's id, which is also its golden record's id: ``golden-`` and a hash of the record
        that founds it (so a rematch that replays the same registrations gives the same ids), never a
        stored Patient's id, a valid FHIR id whatever the founder's length."""
        base = "golden-" + hashlib.sha256(founder.encode()).hexdigest()[:24]
        person, n = base, 0
        while _FIRST_OF_PERSON.first(self.conn, {"person": person}):
            n += 1
            person = f"{base}-{n}"
        return person

    def _require(self, patient: str) -> str:
        person = self.person_of(patient)
        if person is None:
            raise NotFound(f"Patient/{patient} is not in the master index")
        return person

    def _lock(self, keys: list[str]) -> None:
        if self.conn.dialect.name != "postgresql":
            return  # SQLite writers are serialised already
        for k in sorted({self.index._key(k) for k in keys}):  # as stored: no clear ID leaves in a lock key
            n = int.from_bytes(hashlib.sha256(f"empi:{k}".encode()).digest()[:8], "big", signed=True)
            _LOCK.run(self.conn, {"k": n})

    def _event(
        self,
        patient: str,
        person: str | None,
        previous: str | None,
        action: str,
        result: MatchResult | None,
        actor: str | None,
        other: str | None = None,
        detail: dict[str, Any] | None = None,
    ) -> None:
        _INSERT_EVENT.run(
            self.conn,
            {
                "at": _now(),
                "patient": patient,
                "person": person,
                "previous_person": previous,
                "action": action,
                "other": other or (result.key if result else None),
                "probability": result.probability if result else None,
                "actor": actor,
                "detail": json.dumps(detail if detail is not None else result.levels if result else None)
                if (detail or result)
                else None,
            },
        )

    def _queue(self, patient: str, r: MatchResult) -> None:
        a, b = sorted((patient, r.key))
        exists = self.conn.execute(
            select(t.review.c.status).where(and_(t.review.c.patient == a, t.review.c.candidate == b))
        ).first()
        if exists is None:
            self.conn.execute(
                insert(t.review).values(
                    patient=a,
                    candidate=b,
                    probability=r.probability,
                    levels=json.dumps(r.levels),
                    status="open",
                    created=_now(),
                )
            )

    def _close_review(self, a: str, b: str, status: str) -> None:
        x, y = sorted((a, b))
        self.conn.execute(
            update(t.review).where(or_(and_(t.review.c.patient == x, t.review.c.candidate == y))).values(status=status)
        )


_MODEL: MatchModel | None = None


def current_model() -> MatchModel:
    """The shipped model, loaded once per process."""
    global _MODEL
    if _MODEL is None:
        _MODEL = load()
    return _MODEL


def identify_ahead(resource: dict[str, Any]) -> Any:
    """The pure part of :class:`IdentifyStep` (normalisation, blocking row and keys), which bulk load's
    worker processes do beforehand; None for anything but a Patient."""
    if resource.get("resourceType") != "Patient" or not isinstance(resource.get("id"), str):
        return None
    patient = normalise_patient(resource, key=resource["id"])
    row = blocking.blocking_row(patient)
    return patient, row, blocking.keys(row, patient.other_phones)


def registry_of(unit: Any, model: MatchModel | None = None) -> Registry:
    """The registry over a unit's connection, keeping protected fields as the unit's store does."""
    return Registry(unit.conn, model, unit.pipeline.fields)


class IdentifyStep:
    """Pipeline step (prepare phase): index and link every Patient write; flag unusable resident IDs.

    It runs after the security module has protected the resource's ID and phone numbers, so it reads
    them back in clear (the pipeline's ``fields``) for matching; what it keeps of them is protected again
    (:class:`SqlIndex`)."""

    def __init__(self, pipeline: Any) -> None:
        self.pipeline = pipeline

    def __call__(self, conn: Connection, ctx: Any, op: Any) -> None:
        if op.rtype != "Patient":
            return
        fields = self.pipeline.fields
        registry = Registry(conn, fields=fields)
        actor = getattr(ctx, "source", None)
        if op.resource is None:
            registry.unregister(op.id, actor)
            return
        clear = _in_clear(op.resource, fields)
        done = op.ahead_of("identify", clear)
        if done is None or done[0].key != op.id:
            done = identify_ahead(clear)
        patient, row, keys = done
        for warning in patient.warnings:
            op.warnings.append(Issue(warning, "business-rule", "warning", ["Patient.identifier"]))
        unchanged = op.previous is not None and normalise_patient(_in_clear(op.previous, fields), key=op.id) == patient
        if unchanged and registry.person_of(op.id) is not None:
            return  # nothing the matcher compares has changed (a resent ADT message): the links stand
        registry.register(patient, actor, row=row, keys=keys)


def _in_clear(resource: dict[str, Any], fields: FieldProtection | None) -> dict[str, Any]:
    """The resource with its protected values in clear text (a copy where there were any)."""
    return resource if fields is None else fields.revealed(resource)


def resolve_person(unit: Any, id: str) -> tuple[dict[str, Any], list[str]] | None:
    """Router hook (``hooks.persons``): a golden record's id -> the golden Patient and its source
    records the reader may read, for ``Patient/[id]/$everything``; None for an id that is no person."""
    from changbai.identity.golden import person_view

    records = registry_of(unit).records_of(id)
    return person_view(unit, id, records) if records else None


_MANUAL = ("link", "unlink", "merge", "unmerge")


def rematch(repo: Any, model: MatchModel | None = None, page: int = 500) -> dict[str, int]:
    """Re-link every Patient in the store under ``model`` (after a model change), in one transaction.

    The candidate index and automatic links are rebuilt from the Patients themselves; open review items
    are dropped and found again; "not a duplicate" decisions stay; people's link, unlink and merge
    decisions are replayed in their order (a merge as links to its target, an unmerge as unlinks)."""
    counts = {"patients": 0, "persons": 0, "replayed": 0}
    with repo.unit() as unit:
        conn = unit.conn
        manual = list(conn.execute(select(t.event).where(t.event.c.action.in_(_MANUAL)).order_by(t.event.c.seq)))
        conn.execute(delete(t.block))
        conn.execute(delete(t.record))
        conn.execute(delete(t.review).where(t.review.c.status == "open"))
        registry = registry_of(unit, model)
        offset = 0
        while True:
            result = unit.search("Patient", [("_count", str(page)), ("_offset", str(offset))])
            for m in result.matches:
                registry.register(normalise_patient(m.resource, key=m.id), "rematch")
                counts["patients"] += 1
            if not result.has_more or not result.matches:
                break
            offset += len(result.matches)
        for e in manual:
            if registry.person_of(e.patient) is None:
                continue
            if e.action in ("link", "merge") and e.other and registry.person_of(e.other) is not None:
                registry.link(e.patient, e.other, e.actor)
            elif e.action in ("unlink", "unmerge"):
                registry.unlink(e.patient, e.actor)
            else:
                continue
            counts["replayed"] += 1
        persons = conn.execute(select(t.record.c.person).distinct())
        counts["persons"] = len(list(persons))
    return counts
