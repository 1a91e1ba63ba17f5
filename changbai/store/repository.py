"""The FHIR repository: versioned reads and writes in units of work, on SQLite or PostgreSQL.

A :class:`Unit` is one database transaction. REST calls use a unit per request; a transaction bundle uses
one unit for all its entries; bulk load uses one unit per chunk. Every write goes through the pipeline
(validate, authorise, identify, ...) and then stores the resource row, the version row, the index rows and
the outbox row together. Index and outbox rows are buffered and flushed in batches before any read in the
unit and at commit, which is what makes bundles and bulk loads fast.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import orjson
from sqlalchemy import Connection, and_, bindparam, delete, func, insert, select, text, update

from changbai.errors import (
    Conflict,
    Gone,
    InvalidInput,
    InvalidResource,
    NotFound,
    PreconditionFailed,
    Unprocessable,
)
from changbai.fhir.spec import is_resource_type
from changbai.fhir.values import ms_to_instant, now_instant
from changbai.store import schema as t
from changbai.store import targets
from changbai.store.database import Database
from changbai.store.indexer import index_rows
from changbai.store.pipeline import Ahead, Context, Pipeline, WriteOp
from changbai.store.prepared import Prepared, driver_cursor

ID_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-.")


def check_id(value: Any, where: str = "id") -> str:
    if not isinstance(value, str) or not 1 <= len(value) <= 64 or not set(value) <= ID_CHARS:
        raise InvalidInput(f"'{value}' is not a valid resource id", expression=where)
    return value


def check_type(rtype: str) -> str:
    if not is_resource_type(rtype):
        raise NotFound(f"Unknown resource type '{rtype}'", code="not-supported")
    return rtype


def new_id() -> str:
    return str(uuid.uuid4())


@dataclass
class Stored:
    """A resource version as the store holds it."""

    rtype: str
    id: str
    version: int
    last_updated: int  # epoch ms
    deleted: bool
    resource: dict[str, Any] | None

    @property
    def etag(self) -> str:
        return f'W/"{self.version}"'

    @property
    def last_updated_text(self) -> str:
        return ms_to_instant(self.last_updated)


@dataclass
class Outcome:
    """What a write did: ``created`` | ``updated`` | ``unchanged`` | ``deleted`` | ``none`` (nothing matched)."""

    status: str
    stored: Stored | None
    warnings: list[Any] = field(default_factory=list)

    @property
    def http_status(self) -> int:
        return 201 if self.status == "created" else 200 if self.status != "none" else 204


def content_without_meta_versioning(resource: dict[str, Any]) -> bytes:
    meta = resource.get("meta")
    if isinstance(meta, dict) and ("versionId" in meta or "lastUpdated" in meta):
        meta = {k: v for k, v in meta.items() if k not in ("versionId", "lastUpdated")}
        resource = {**resource, "meta": meta} if meta else {k: v for k, v in resource.items() if k != "meta"}
    return orjson.dumps(resource, option=orjson.OPT_SORT_KEYS)


_R = t.resource.c
_CURRENT_ROW = select(_R.rid, _R.version, _R.deleted, _R.last_updated).where(
    _R.rtype == bindparam("rtype"), _R.id == bindparam("id")
)
# The statements of every write (current rows, previous contents, keys, index rows replaced) run a few
# times a message on HL7 v2 intake: compiled once (store.prepared) rather than through Core each time.
_CURRENT = Prepared(_CURRENT_ROW)
_CURRENT_FOR_UPDATE = Prepared(_CURRENT_ROW.with_for_update())
_CONTENT = Prepared(
    select(t.resource_version.c.content).where(
        t.resource_version.c.rid == bindparam("rid"), t.resource_version.c.version == bindparam("version")
    )
)
_CURRENT_MANY = Prepared(
    select(_R.id, _R.rid, _R.version, _R.deleted, _R.last_updated).where(
        _R.rtype == bindparam("rtype"), _R.id.in_(bindparam("ids", expanding=True))
    )
)
_INSERT_RESOURCE = insert(t.resource)
_MAX_RID = Prepared(select(func.coalesce(func.max(_R.rid), 0)))
#: the transaction-scoped lock that keeps outbox rows committing in seq order on PostgreSQL
_OUTBOX_ORDER = text("SELECT pg_advisory_xact_lock(7405420513874620)")
_NEXT_RIDS = text("SELECT nextval(pg_get_serial_sequence('resource', 'rid')) FROM generate_series(1, :n)")
_UPDATE_RESOURCE = Prepared(
    update(t.resource)
    .where(and_(_R.rid == bindparam("b_rid"), _R.version == bindparam("b_version")))
    .values(version=bindparam("version"), last_updated=bindparam("last_updated"), deleted=bindparam("deleted"))
)
#: IN lists of these statements are cut to at most this many values: each length is compiled once
_IN_LIST = 100
_DELETE_INDEX = [
    Prepared(delete(table).where(table.c.rid.in_(bindparam("rids", expanding=True))))
    for table in t.INDEX_TABLES.values()
]


class Current(NamedTuple):
    """A ``resource`` row: where a resource is (rid) and its current version; resource rows are never
    buffered, so this is always the database's answer."""

    rid: int
    version: int
    deleted: bool
    last_updated: int


def _current_row(row: tuple[Any, ...] | None) -> Current | None:
    # the driver's own values: SQLite gives the boolean as 0 or 1
    return None if row is None else Current(row[0], row[1], bool(row[2]), row[3])


class Repository:
    """Entry point of the store. Thread-safe; open a :meth:`unit` per request or batch."""

    def __init__(self, db: Database, pipeline: Pipeline | None = None) -> None:
        self.db = db
        self.pipeline = pipeline or Pipeline()
        #: expands :below/:above/:in/:not-in token searches (set by the terminology module)
        self.token_expander: Any = None

    @contextmanager
    def unit(self, ctx: Context | None = None, *, write: bool = True) -> Iterator[Unit]:
        ctx = ctx or Context()
        with self.db.write() if write else self.db.read() as conn:
            unit = Unit(self, conn, ctx)
            yield unit
            unit.flush(final=True)

    # Convenience one-shot calls (each its own transaction).
    def read(self, rtype: str, id: str, ctx: Context | None = None) -> Stored:
        with self.unit(ctx, write=False) as u:
            return u.read(rtype, id)

    def create(self, resource: dict[str, Any], ctx: Context | None = None, **kw: Any) -> Outcome:
        with self.unit(ctx) as u:
            return u.create(resource, **kw)

    def update(self, resource: dict[str, Any], ctx: Context | None = None, **kw: Any) -> Outcome:
        with self.unit(ctx) as u:
            return u.update(resource["resourceType"], resource.get("id", ""), resource, **kw)


class Unit:
    """One transaction over the store."""

    def __init__(self, repo: Repository, conn: Connection, ctx: Context) -> None:
        self.repo = repo
        self.conn = conn
        self.ctx = ctx
        self.pipeline = repo.pipeline
        # rows waiting for the next flush, as tuples in their tables' column order
        self._versions: list[tuple[Any, ...]] = []
        self._index: dict[str, list[tuple[Any, ...]]] = {k: [] for k in t.INDEX_TABLES}
        self._outbox: list[tuple[Any, ...]] = []
        #: (type, id, rid) of resource rows created since the last flush: references to them stored
        #: earlier without a target rid get it then (targets.fill)
        self._created: list[tuple[str, str, int]] = []
        self._dirty = False

    # ------------------------------------------------------------------------------------------ reads
    def flush(self, *, final: bool = False) -> None:
        """Write buffered version and index rows (one executemany per table); ``final``: the outbox rows
        too, as the last writes of the transaction (see below). Whoever makes a Unit on a connection of
        its own (not through Repository.unit) flushes it with ``final`` before committing."""
        if self._dirty:
            if self._versions:
                self._insert_many(t.resource_version, self._versions)
                self._versions = []
            self._resolve_targets()
            for kind, rows in self._index.items():
                if rows:
                    self._insert_many(t.INDEX_TABLES[kind], rows)
                    self._index[kind] = []
            self._dirty = False
        if final and self._outbox:
            if not self.repo.db.is_sqlite:
                # Outbox readers (federation, subscriptions) move a cursor along seq, so rows must become
                # visible in seq order: a transaction takes its seq numbers under this lock, which it holds
                # until it ends, so the next one takes higher numbers only after it has committed. Taken
                # last, it is never held while waiting for another lock. (SQLite has one writer anyway.)
                self.conn.execute(_OUTBOX_ORDER)
            self._insert_many(t.outbox, self._outbox)
            self._outbox = []

    @contextmanager
    def savepoint(self) -> Iterator[None]:
        """A nested transaction over this unit: on an exception everything written in it, buffered rows
        included, is undone and the exception goes on."""
        self.flush()
        outbox = len(self._outbox)
        nested = self.conn.begin_nested()
        try:
            yield
            self.flush()
        except BaseException:
            nested.rollback()
            # rows buffered inside it belong to writes that are undone
            self._versions.clear()
            for rows in self._index.values():
                rows.clear()
            del self._outbox[outbox:]
            self._created.clear()
            self._dirty = False
            raise
        nested.commit()

    def _insert_many(self, table: Any, rows: list[tuple[Any, ...]], *, with_key: bool = False) -> None:
        """Bulk insert straight on the driver: the hot path of ingest, where SQLAlchemy's per-row parameter
        processing cost more than the database itself. SQLite: executemany; PostgreSQL: COPY. Rows are
        tuples in the order of the table's columns, apart from its generated key unless ``with_key``
        (``t.insert_columns``). Column names are ours; values always travel as parameters."""
        names = t.insert_columns(table, with_key)
        columns = ", ".join(names)
        with driver_cursor(self.conn) as cursor:
            if self.repo.db.is_sqlite:
                marks = ", ".join("?" for _ in names)
                cursor.executemany(f"INSERT INTO {table.name} ({columns}) VALUES ({marks})", rows)
            else:
                with cursor.copy(f"COPY {table.name} ({columns}) FROM STDIN") as copy:
                    for row in rows:
                        copy.write_row(row)

    def _resolve_targets(self) -> None:
        """The target rids of buffered references, and those of stored references to the resources
        created since the last flush (see :mod:`changbai.store.targets`)."""
        refs = self._index["reference"]
        if not refs and not self._created:
            return
        sqlite = self.repo.db.is_sqlite
        with driver_cursor(self.conn) as cursor:
            if self._created:
                targets.fill(cursor, sqlite, self._created)
                self._created = []
            if refs:
                self._index["reference"] = targets.resolve(cursor, sqlite, refs)

    def _reserve_rids(self, n: int) -> list[int]:
        """``n`` new resource keys, increasing. SQLite: after the largest, which is safe because a write
        unit holds the database's only write lock; PostgreSQL: from the key's sequence."""
        if self.repo.db.is_sqlite:
            top = _MAX_RID.all(self.conn)[0][0]
            return list(range(top + 1, top + n + 1))
        return list(self.conn.execute(_NEXT_RIDS, {"n": n}).scalars())

    def _current(self, rtype: str, id: str, *, lock: bool = False) -> Current | None:
        """The resource row; ``lock``: held until the end of the transaction (PostgreSQL; SQLite's
        writers are serialised anyway)."""
        q = _CURRENT_FOR_UPDATE if lock and not self.repo.db.is_sqlite else _CURRENT
        return _current_row(q.first(self.conn, {"rtype": rtype, "id": id}))

    def _content(self, rid: int, version: int) -> dict[str, Any] | None:
        self.flush()
        row = _CONTENT.first(self.conn, {"rid": rid, "version": version})
        return orjson.loads(row[0]) if row and row[0] else None

    def read(self, rtype: str, id: str) -> Stored:
        check_type(rtype)
        cur = self._current(rtype, id)
        if cur is None:
            raise NotFound(f"{rtype}/{id} is not known")
        if cur.deleted:
            raise Gone(f"{rtype}/{id} was deleted")
        resource = self._content(cur.rid, cur.version)
        assert resource is not None
        self.pipeline.run_read(self.conn, self.ctx, rtype, resource)
        return Stored(rtype, id, cur.version, cur.last_updated, False, resource)

    def exists(self, rtype: str, id: str) -> bool:
        cur = self._current(rtype, id)
        return cur is not None and not cur.deleted

    def vread(self, rtype: str, id: str, version: str) -> Stored:
        check_type(rtype)
        if not version.isdigit():
            raise NotFound(f"{rtype}/{id} has no version '{version}'")
        self.flush()
        row = self.conn.execute(
            select(t.resource_version).where(
                t.resource_version.c.rtype == rtype,
                t.resource_version.c.id == id,
                t.resource_version.c.version == int(version),
            )
        ).first()
        if row is None:
            raise NotFound(f"{rtype}/{id} has no version {version}")
        if row.deleted:
            raise Gone(f"{rtype}/{id} version {version} is a deletion")
        resource = orjson.loads(row.content)
        self.pipeline.run_read(self.conn, self.ctx, rtype, resource)
        return Stored(rtype, id, row.version, row.last_updated, False, resource)

    def search(
        self, rtype: str | None, params: list[tuple[str, str]], *, strict: bool = True, restrict: Any = None
    ) -> Any:
        """Run a search; ``restrict`` is an extra SQL condition on resource rows (compartments)."""
        from changbai.store.search import execute

        self.flush()
        request = self._parse(rtype, params, strict)
        if restrict is not None:
            request.restrictions.append(restrict)
        self.pipeline.run_search(self.conn, self.ctx, request)
        return execute(self, request)

    def _parse(self, rtype: str | None, params: list[tuple[str, str]], strict: bool = True) -> Any:
        """A SearchRequest compiled with this store's token expander (for :below, :in ...)."""
        from changbai.store.search import SearchRequest, current_expander

        token = current_expander.set(self.repo.token_expander)
        try:
            return SearchRequest.parse(rtype, params, strict=strict)
        finally:
            current_expander.reset(token)

    def find(self, rtype: str, query: str) -> list[tuple[str, int]]:
        """Resolve a conditional query (``identifier=sys|val``) to matching (id, version) pairs."""
        from changbai.store.search import match_ids
        from changbai.store.urls import parse_query

        self.flush()
        request = self._parse(rtype, parse_query(query))
        self.pipeline.run_search(self.conn, self.ctx, request)
        return match_ids(self, request, limit=2)

    # ----------------------------------------------------------------------------------------- writes
    def create(self, resource: dict[str, Any], *, id: str | None = None, if_none_exist: str | None = None) -> Outcome:
        rtype = self._resource_type(resource)
        if if_none_exist:
            self._lock_condition(rtype, if_none_exist)
            found = self.find(rtype, if_none_exist)
            if len(found) > 1:
                raise PreconditionFailed(f"If-None-Exist '{if_none_exist}' matched more than one {rtype}")
            if found:
                stored = self.read(rtype, found[0][0])
                return Outcome("unchanged", stored)
        new = id or new_id()
        if id is not None:
            check_id(id)
            if self._current(rtype, id) is not None:
                raise Conflict(f"{rtype}/{id} already exists")
        resource = {**resource, "id": new}
        return self._write(WriteOp("create", rtype, new, resource, None, method="POST"), None)

    def update(
        self, rtype: str, id: str, resource: dict[str, Any], *, if_match: str | None = None, upsert: bool = True
    ) -> Outcome:
        check_type(rtype)
        if self._resource_type(resource) != rtype:
            raise InvalidInput(
                f"The resource type {resource.get('resourceType')} does not match {rtype}", expression="resourceType"
            )
        check_id(id)
        body_id = resource.get("id")
        if body_id is None:
            raise InvalidInput(
                "The resource has no id; an update needs the id of the URL in the body", expression=f"{rtype}.id"
            )
        if body_id != id:
            raise InvalidInput(
                f"The id in the body ({body_id}) does not match the id in the URL ({id})", expression=f"{rtype}.id"
            )
        cur = self._current(rtype, id, lock=True)
        self._check_if_match(rtype, id, cur, if_match)
        if cur is None:
            if not upsert:
                raise NotFound(f"{rtype}/{id} is not known")
            return self._write(WriteOp("create", rtype, id, resource, None, method="PUT"), None)
        previous = None if cur.deleted else self._content(cur.rid, cur.version)
        return self._write(WriteOp("update", rtype, id, resource, previous, method="PUT"), cur)

    def conditional_update(
        self, rtype: str, query: str, resource: dict[str, Any], *, if_match: str | None = None
    ) -> Outcome:
        self._lock_condition(rtype, query)
        found = self.find(rtype, query)
        if len(found) > 1:
            raise PreconditionFailed(f"The condition '{query}' matched more than one {rtype}")
        if not found:
            body_id = resource.get("id")
            if body_id is not None and self._current(rtype, check_id(body_id)) is not None:
                raise Conflict(f"{rtype}/{body_id} exists but does not match '{query}'")
            return self.create(resource, id=body_id)
        id = found[0][0]
        if resource.get("id") not in (None, id):
            raise InvalidInput(
                f"The id in the body ({resource.get('id')}) is not the one matched ({id})", expression=f"{rtype}.id"
            )
        return self.update(rtype, id, {**resource, "id": id}, if_match=if_match)

    def patch(self, rtype: str, id: str, operations: Any, *, if_match: str | None = None) -> Outcome:
        from changbai.fhir.patch import apply_json_patch

        check_type(rtype)
        cur = self._current(rtype, id, lock=True)
        if cur is None:
            raise NotFound(f"{rtype}/{id} is not known")
        if cur.deleted:
            raise Gone(f"{rtype}/{id} was deleted")
        self._check_if_match(rtype, id, cur, if_match)
        previous = self._content(cur.rid, cur.version)
        assert previous is not None
        patched = apply_json_patch(previous, operations)
        if patched.get("resourceType") != rtype or patched.get("id") != id:
            raise Unprocessable("A patch may not change the resource type or id")
        return self._write(WriteOp("patch", rtype, id, patched, previous, method="PATCH"), cur)

    def delete(self, rtype: str, id: str, *, if_match: str | None = None) -> Outcome:
        check_type(rtype)
        cur = self._current(rtype, id, lock=True)
        self._check_if_match(rtype, id, cur, if_match)
        if cur is None or cur.deleted:
            return Outcome("none", None)
        previous = self._content(cur.rid, cur.version)
        return self._write(WriteOp("delete", rtype, id, None, previous, method="DELETE"), cur)

    def conditional_delete(self, rtype: str, query: str, *, multiple: bool = False) -> list[Outcome]:
        from changbai.store.search import match_ids
        from changbai.store.urls import parse_query

        self.flush()
        request = self._parse(rtype, parse_query(query))
        self.pipeline.run_search(self.conn, self.ctx, request)
        found = match_ids(self, request, limit=None if multiple else 2)
        if len(found) > 1 and not multiple:
            raise PreconditionFailed(f"The condition '{query}' matched more than one {rtype}")
        return [self.delete(rtype, id) for id, _ in found]

    # ------------------------------------------------------------------------------------- internals
    @staticmethod
    def _resource_type(resource: Any) -> str:
        if not isinstance(resource, dict):
            raise InvalidInput("The body must be a FHIR resource (a JSON object)")
        rtype = resource.get("resourceType")
        if not isinstance(rtype, str):
            raise InvalidResource("The resource has no resourceType", expression="resourceType", code="required")
        if not is_resource_type(rtype):
            raise InvalidResource(f"Unknown resource type '{rtype}'", expression="resourceType", code="not-supported")
        return rtype

    @staticmethod
    def _check_if_match(rtype: str, id: str, cur: Any, if_match: str | None) -> None:
        if if_match is None:
            return
        wanted = if_match.strip()
        if wanted.startswith("W/"):
            wanted = wanted[2:]
        wanted = wanted.strip('"')
        have = str(cur.version) if cur is not None and not cur.deleted else None
        if wanted != have:
            raise PreconditionFailed(
                f"{rtype}/{id} is at version {have or '(none)'}, not {wanted} (If-Match)", code="conflict"
            )

    def _lock_condition(self, rtype: str, query: str) -> None:
        """Serialise concurrent conditional writes with the same condition (PostgreSQL advisory lock)."""
        if self.repo.db.is_sqlite:
            return  # SQLite writers are already serialised (BEGIN IMMEDIATE)
        key = int.from_bytes(hashlib.sha256(f"{rtype}?{query}".encode()).digest()[:8], "big", signed=True)
        self.conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": key})

    def put_many(self, resources: list[dict[str, Any]], ahead: Sequence[Ahead | None] | None = None) -> list[Outcome]:
        """Update-or-create many resources with their own ids in one batch (bulk load, federation):
        the same pipeline per resource as :meth:`update`, with the SQL done in a few statements.
        ``ahead`` (one per resource, when given) is validation and indexing done ahead in other processes."""
        by_key: dict[tuple[str, str], Current | None] = {}
        for rtype in {self._resource_type(r) for r in resources}:
            ids = [check_id(r.get("id"), f"{rtype}.id") for r in resources if r["resourceType"] == rtype]
            for i in range(0, len(ids), _IN_LIST):
                rows = _CURRENT_MANY.all(self.conn, {"rtype": rtype, "ids": ids[i : i + _IN_LIST]})
                by_key.update({(rtype, row[0]): _current_row(row[1:]) for row in rows})
        items: list[tuple[WriteOp, Any]] = []
        seen: set[tuple[str, str]] = set()
        for n, r in enumerate(resources):
            key = (r["resourceType"], r["id"])
            if key in seen:
                raise InvalidInput(f"{key[0]}/{key[1]} appears twice in one batch")
            seen.add(key)
            cur = by_key.get(key)
            previous = self._content(cur.rid, cur.version) if cur is not None and not cur.deleted else None
            action = "update" if cur is not None else "create"
            op = WriteOp(action, key[0], key[1], r, previous, method="PUT", ahead=ahead[n] if ahead else None)
            items.append((op, cur))
        return self._write_many(items)

    def _write(self, op: WriteOp, cur: Any) -> Outcome:
        return self._write_many([(op, cur)])[0]

    def _write_many(self, items: list[tuple[WriteOp, Any]]) -> list[Outcome]:
        """Store writes: pipeline prepare per op, then resource rows (batched), versions, indexes, outbox
        (buffered), then the pipeline's commit steps. The one place where rows are written."""
        outcomes: list[Outcome | None] = [None] * len(items)
        pending: list[tuple[int, WriteOp, Any, int, bytes | None]] = []
        instant, ms = now_instant()
        for i, (op, cur) in enumerate(items):
            if op.resource is not None:
                op.resource["id"] = op.id
            self.pipeline.run_prepare(self.conn, self.ctx, op)
            if (
                op.action in ("update", "patch")
                and op.previous is not None
                and op.resource is not None
                and content_without_meta_versioning(op.resource) == content_without_meta_versioning(op.previous)
            ):
                stored = Stored(op.rtype, op.id, cur.version, cur.last_updated, False, op.previous)
                outcomes[i] = Outcome("unchanged", stored, op.warnings)
                continue
            version = 1 if cur is None else cur.version + 1
            op.version, op.last_updated = version, instant
            content: bytes | None = None
            if op.resource is not None:
                meta = dict(op.resource.get("meta") or {})
                meta["versionId"] = str(version)
                meta["lastUpdated"] = instant
                op.resource = {**op.resource, "meta": meta}
                content = orjson.dumps(op.resource)
            pending.append((i, op, cur, version, content))
        if not pending:
            return [o for o in outcomes if o is not None]
        new = [p for p in pending if p[2] is None]
        if len(new) == 1:
            _, op, _, v, _ = new[0]
            row = {"rtype": op.rtype, "id": op.id, "version": v, "last_updated": ms, "deleted": op.action == "delete"}
            key = self.conn.execute(_INSERT_RESOURCE, row).inserted_primary_key
            assert key is not None
            rid_of = {id(op): key[0]}
            self._created.append((op.rtype, op.id, key[0]))
        elif new:
            # Many new resources: their keys reserved in one statement and the rows written in bulk
            # (an INSERT ... RETURNING that must keep the rows' order runs row by row on SQLite).
            rids = self._reserve_rids(len(new))
            rows = [
                (rid, op.rtype, op.id, v, ms, op.action == "delete")
                for rid, (_, op, _, v, _) in zip(rids, new, strict=True)
            ]
            self._insert_many(t.resource, rows, with_key=True)
            rid_of = {id(p[1]): rid for p, rid in zip(new, rids, strict=True)}
            self._created.extend((op.rtype, op.id, rid) for (_, op, _, _, _), rid in zip(new, rids, strict=True))
        else:
            rid_of = {}
        existing = [p for p in pending if p[2] is not None]
        if existing:
            self.flush()  # buffered index rows of these resources must land before they are replaced
            for _, op, cur, v, _ in existing:
                changed = _UPDATE_RESOURCE.run(
                    self.conn,
                    {
                        "b_rid": cur.rid,
                        "b_version": cur.version,
                        "version": v,
                        "last_updated": ms,
                        "deleted": op.action == "delete",
                    },
                )
                if changed != 1:
                    raise Conflict(f"{op.rtype}/{op.id} was changed concurrently; try again")
                rid_of[id(op)] = cur.rid
            old = [cur.rid for _, _, cur, _, _ in existing]
            for i in range(0, len(old), _IN_LIST):
                for statement in _DELETE_INDEX:
                    statement.run(self.conn, {"rids": old[i : i + _IN_LIST]})
        for i, op, cur, version, content in pending:
            rid = rid_of[id(op)]
            deleted = op.action == "delete"
            text = content.decode() if content is not None else None
            self._versions.append((rid, op.rtype, op.id, version, ms, op.method, deleted, text))
            if op.resource is not None:
                for kind, index in _index_rows(op).items():
                    if index:
                        key = (rid,)
                        self._index[kind].extend([key + row for row in index])
            created = cur is None or cur.deleted
            action = "delete" if deleted else ("create" if created else "update")
            self._outbox.append((op.rtype, op.id, version, action, ms))
            self._dirty = True
            self.pipeline.run_commit(self.conn, self.ctx, op)
            status = "deleted" if deleted else ("created" if created else "updated")
            outcomes[i] = Outcome(status, Stored(op.rtype, op.id, version, ms, deleted, op.resource), op.warnings)
        return [o for o in outcomes if o is not None]


def _index_rows(op: WriteOp) -> dict[str, list[tuple[Any, ...]]]:
    """The index rows of the op's final content: from the work done ahead when the pipeline left the
    content as it was (meta aside, whose rows are always computed here), else computed afresh."""
    ahead = op.ahead
    assert op.resource is not None
    if ahead is None or not ahead.holds_for(op.resource):
        return index_rows(op.resource)
    rows = index_rows(op.resource, part="meta")
    for kind, found in ahead.rows.items():
        rows[kind].extend(found)
    op.ahead = None  # the rows are now the unit's (they get their rid); never reused
    return rows
