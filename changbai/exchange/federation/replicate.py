"""Upward replication: the changes a node sends (read from its outbox) and how a parent applies them.

A batch is a FHIR Bundle (type ``batch``) posted to the parent's ``$replicate``. Each entry is one change
(PUT with the resource, or DELETE) and carries two extensions: the origin node and the version the
resource had there. The parent keeps the newest origin version applied per (origin, type, id), so

- a resend (the link dropped after the parent committed) changes nothing, and
- an older version never overwrites a newer one.

The parent applies the whole batch in one unit of work through the ordinary write pipeline
(``ctx.source = "federation"``), so its own outbox records the changes and a middle node forwards them
upward, still under their origin's name (``federation_received`` remembers which local version came from
which origin version).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

import orjson
from sqlalchemy import and_, bindparam, false, insert, select, tuple_, update

from changbai import logs
from changbai.errors import ChangbaiError, InvalidInput
from changbai.exchange.federation import tables as ft
from changbai.exchange.federation.node import Node
from changbai.exchange.federation.policy import Policy
from changbai.store import schema
from changbai.store.pipeline import Context
from changbai.store.repository import Repository, Unit

log = logs.get(__name__)

EXT_ORIGIN = "https://changbai.example.org/fhir/StructureDefinition/replication-origin"
EXT_VERSION = "https://changbai.example.org/fhir/StructureDefinition/replication-origin-version"
_OUT = schema.outbox.c


@dataclass
class Change:
    seq: int
    origin: str
    origin_version: int
    rtype: str
    id: str
    action: str  # create | update | delete
    resource: dict[str, Any] | None

    def entry(self) -> dict[str, Any]:
        entry: dict[str, Any] = {
            "extension": [
                {"url": EXT_ORIGIN, "valueString": self.origin},
                {"url": EXT_VERSION, "valueInteger": self.origin_version},
            ],
            "request": {"method": "DELETE" if self.action == "delete" else "PUT", "url": f"{self.rtype}/{self.id}"},
        }
        if self.resource is not None:
            entry["resource"] = self.resource
        return entry


def head_seq(repo: Repository) -> int:
    with repo.db.read() as conn:
        return int(conn.execute(select(schema.outbox.c.seq).order_by(_OUT.seq.desc()).limit(1)).scalar() or 0)


def collect(
    repo: Repository, node: Node, policy: Policy, after: int, limit: int, upto: int | None = None
) -> tuple[list[Change], int]:
    """The next changes after outbox ``seq`` ``after`` (up to ``upto`` when given) that the policy sends,
    and the last seq looked at."""
    with repo.unit(Context(source="federation"), write=False) as u:
        q = select(schema.outbox).where(_OUT.seq > after)
        if upto is not None:
            q = q.where(_OUT.seq <= upto)
        rows = u.conn.execute(q.order_by(_OUT.seq).limit(limit)).all()
        if not rows:
            return [], after
        wanted = [r for r in rows if policy.sends(r.rtype)]
        origins: dict[tuple[str, str, int], tuple[str, int]] = {}
        if wanted:
            r = ft.received.c
            keys = [(w.rtype, w.id, w.version) for w in wanted]
            for i in range(0, len(keys), 300):
                q = select(r.rtype, r.id, r.version, r.origin, r.origin_version).where(
                    tuple_(r.rtype, r.id, r.version).in_(keys[i : i + 300])
                )
                for row in u.conn.execute(q):
                    origins[(row.rtype, row.id, row.version)] = (row.origin, row.origin_version)
        contents = _contents(u, [w for w in wanted if w.action != "delete"])
        changes = []
        for row in wanted:
            origin, version = origins.get((row.rtype, row.id, row.version), (node.id, row.version))
            resource = None
            if row.action != "delete":
                resource = contents[(row.rtype, row.id, row.version)]
                u.pipeline.run_read(u.conn, u.ctx, row.rtype, resource)  # as a read would see it (no principal)
                resource = policy.apply(resource)
            changes.append(Change(row.seq, origin, version, row.rtype, row.id, row.action, resource))
        return changes, rows[-1].seq


def _contents(u: Unit, rows: list[Any]) -> dict[tuple[str, str, int], dict[str, Any]]:
    """The stored content of each (type, id, version), in one query per 300 (not one vread each)."""
    v = schema.resource_version.c
    keys = sorted({(r.rtype, r.id, r.version) for r in rows})
    found: dict[tuple[str, str, int], dict[str, Any]] = {}
    for i in range(0, len(keys), 300):
        q = select(v.rtype, v.id, v.version, v.content).where(tuple_(v.rtype, v.id, v.version).in_(keys[i : i + 300]))
        found.update({(r.rtype, r.id, r.version): orjson.loads(r.content) for r in u.conn.execute(q) if r.content})
    return found


def batch_bundle(changes: list[Change]) -> dict[str, Any]:
    return {"resourceType": "Bundle", "type": "batch", "entry": [c.entry() for c in changes]}


# ----------------------------------------------------------------------------------------- receiving
def _ext(entry: dict[str, Any], url: str) -> Any:
    extensions = entry.get("extension")
    for e in extensions if isinstance(extensions, list) else []:
        if isinstance(e, dict) and e.get("url") == url:
            return e.get("valueString", e.get("valueInteger"))
    return None


@dataclass
class _Incoming:
    """One change of a batch, checked: who made it (origin, version there) and what it does."""

    origin: str
    version: int
    rtype: str
    id: str
    resource: dict[str, Any] | None  # None: a deletion
    first: bool = False  # nothing of this (origin, type, id) applied here before
    local_id: str = ""


def _parse(bundle: Any) -> list[_Incoming]:
    if not isinstance(bundle, dict) or bundle.get("resourceType") != "Bundle":
        raise InvalidInput("$replicate takes a Bundle of changes")
    entries = bundle.get("entry") or []
    if not isinstance(entries, list):
        raise InvalidInput("$replicate: Bundle.entry must be a list")
    out = []
    for i, entry in enumerate(entries):
        entry = entry if isinstance(entry, dict) else {}
        origin, version = _ext(entry, EXT_ORIGIN), _ext(entry, EXT_VERSION)
        request: dict[str, Any] = entry["request"] if isinstance(entry.get("request"), dict) else {}
        rtype, _, id = str(request.get("url", "")).partition("/")
        if not isinstance(origin, str) or not isinstance(version, int) or not rtype or not id:
            raise InvalidInput(f"$replicate entry {i} needs origin, origin version and request.url Type/id")
        resource = None if request.get("method") == "DELETE" else dict(entry.get("resource") or {})
        out.append(_Incoming(origin, version, rtype, id, resource))
    return out


def apply_bundle(unit: Unit, node: Node, sender: str, bundle: Any) -> dict[str, int]:
    """Apply a replication batch inside ``unit``; returns counts (applied, skipped, rejected).

    The batch is checked whole first (a malformed entry changes nothing). Then the newest applied version
    of every (origin, type, id) is read in one query; changes at or below it are skipped. The rest is
    written in runs with no resource twice (order per resource kept), each run through
    :meth:`Unit.put_many` — the same pipeline per resource as a PUT, with the SQL batched. A run that a
    resource fails is retried one change at a time, each in its own savepoint, so one bad change is
    rejected (and logged) without blocking the link or the others."""
    incoming = _parse(bundle)
    unit.ctx.source = "federation"
    unit.ctx.extras["sender_node"] = sender
    counts = {"applied": 0, "skipped": 0, "rejected": 0}
    last = _applied_versions(unit, {(c.origin, c.rtype, c.id) for c in incoming})
    known = set(last)
    mapped_origins = {o for (o,) in unit.conn.execute(select(ft.ids.c.origin).distinct())}  # renamed ids (rare)
    run: list[_Incoming] = []
    in_run: set[tuple[str, str, str]] = set()
    for change in incoming:
        key = (change.origin, change.rtype, change.id)
        if change.origin == node.id or (key in last and change.version <= last[key]):
            counts["skipped"] += 1  # a resend, an older version, or our own change coming back
            continue
        if key in in_run:
            _apply_run(unit, run, mapped_origins, counts)
            run, in_run = [], set()
        change.first = key not in last
        last[key] = change.version
        run.append(change)
        in_run.add(key)
    _apply_run(unit, run, mapped_origins, counts)
    _record_applied(unit, last, known)
    return counts


def _applied_versions(unit: Unit, keys: set[tuple[str, str, str]]) -> dict[tuple[str, str, str], int]:
    a = ft.applied.c
    found: dict[tuple[str, str, str], int] = {}
    ordered = sorted(keys)
    for i in range(0, len(ordered), 300):
        q = select(a.origin, a.rtype, a.id, a.version).where(tuple_(a.origin, a.rtype, a.id).in_(ordered[i : i + 300]))
        found.update({(r.origin, r.rtype, r.id): r.version for r in unit.conn.execute(q)})
    return found


def _record_applied(unit: Unit, last: dict[tuple[str, str, str], int], known: set[tuple[str, str, str]]) -> None:
    """The newest origin version per resource, whether it applied or was rejected (it never blocks)."""
    a = ft.applied.c
    new = [{"origin": o, "rtype": t, "id": i, "version": v} for (o, t, i), v in last.items() if (o, t, i) not in known]
    changed = [
        {"b_origin": o, "b_rtype": t, "b_id": i, "b_version": v} for (o, t, i), v in last.items() if (o, t, i) in known
    ]
    if new:
        unit.conn.execute(insert(ft.applied), new)
    if changed:
        unit.conn.execute(
            update(ft.applied)
            .where(and_(a.origin == bindparam("b_origin"), a.rtype == bindparam("b_rtype"), a.id == bindparam("b_id")))
            .values(version=bindparam("b_version")),
            changed,
        )


def _apply_run(unit: Unit, run: list[_Incoming], mapped_origins: set[str], counts: dict[str, int]) -> None:
    """Apply changes to distinct resources: PUTs together through put_many, deletions one by one."""
    if not run:
        return
    _assign_local_ids(unit, run, mapped_origins)
    puts = [c for c in run if c.resource is not None]
    for c in puts:
        assert c.resource is not None
        resource = _rewrite_references(unit, c.origin, c.resource) if c.origin in mapped_origins else c.resource
        meta = dict(resource.get("meta") or {})
        meta.setdefault("source", f"urn:changbai:node:{c.origin}")
        c.resource = {**resource, "id": c.local_id, "meta": meta}
    received: list[dict[str, Any]] = []
    done = False
    if len(puts) > 1:
        try:
            with unit.savepoint():
                outcomes = unit.put_many([dict(c.resource or {}) for c in puts])
        except ChangbaiError:
            pass
        else:
            done = True
            for c, outcome in zip(puts, outcomes, strict=True):
                counts["applied"] += 1
                _note_received(received, c, outcome)
    for c in run:
        if done and c.resource is not None:
            continue
        try:
            with unit.savepoint():
                if c.resource is None:
                    outcome = unit.delete(c.rtype, c.local_id)
                else:
                    outcome = unit.update(c.rtype, c.local_id, dict(c.resource))
        except ChangbaiError as exc:
            counts["rejected"] += 1
            logs.event(
                log, "replicated change rejected", origin=c.origin, resource=f"{c.rtype}/{c.id}", error=exc.message
            )
            continue
        counts["applied"] += 1
        _note_received(received, c, outcome)
    if received:
        unit.conn.execute(insert(ft.received), received)


def _note_received(received: list[dict[str, Any]], c: _Incoming, outcome: Any) -> None:
    """Which local version came from which origin version (a middle node forwards it under its origin)."""
    if outcome.stored is not None and outcome.status in ("created", "updated", "deleted"):
        received.append(
            {
                "rtype": c.rtype,
                "id": c.local_id,
                "version": outcome.stored.version,
                "origin": c.origin,
                "origin_version": c.version,
            }
        )


def _assign_local_ids(unit: Unit, run: list[_Incoming], mapped_origins: set[str]) -> None:
    """The id each change has here: its own, unless another origin's resource holds it (then a renamed
    one, remembered in federation_ids). Checked in one query per run for first-time resources."""
    i = ft.ids.c
    for c in run:
        c.local_id = c.id
        if c.origin in mapped_origins:
            mapped = unit.conn.execute(
                select(i.local_id).where(i.origin == c.origin, i.rtype == c.rtype, i.origin_id == c.id)
            ).scalar()
            if mapped is not None:
                c.local_id = str(mapped)
    fresh = [c for c in run if c.first and c.local_id == c.id]
    if not fresh:
        return
    r, rc = schema.resource.c, ft.received.c
    keys = sorted({(c.rtype, c.id) for c in fresh})
    taken: set[tuple[str, str]] = set()
    for n in range(0, len(keys), 300):
        q = select(r.rtype, r.id).where(tuple_(r.rtype, r.id).in_(keys[n : n + 300]), r.deleted == false())
        taken.update((row.rtype, row.id) for row in unit.conn.execute(q))
    for c in fresh:
        if (c.rtype, c.id) not in taken:
            continue
        owner = unit.conn.execute(select(rc.origin).where(rc.rtype == c.rtype, rc.id == c.id).limit(1)).scalar()
        if owner == c.origin:
            continue
        c.local_id = f"{c.id[:47]}-{hashlib.sha256(c.origin.encode()).hexdigest()[:16]}"
        unit.conn.execute(insert(ft.ids).values(origin=c.origin, rtype=c.rtype, origin_id=c.id, local_id=c.local_id))
        mapped_origins.add(c.origin)
        logs.event(log, "replicated id renamed", origin=c.origin, resource=f"{c.rtype}/{c.id}", local_id=c.local_id)


def _rewrite_references(unit: Unit, origin: str, resource: dict[str, Any]) -> dict[str, Any]:
    i = ft.ids.c
    renames = {
        f"{row.rtype}/{row.origin_id}": f"{row.rtype}/{row.local_id}"
        for row in unit.conn.execute(select(i.rtype, i.origin_id, i.local_id).where(i.origin == origin))
    }

    def walk(node: Any) -> Any:
        if isinstance(node, dict):
            out = {k: walk(v) for k, v in node.items()}
            ref = out.get("reference")
            if isinstance(ref, str) and ref in renames:
                out["reference"] = renames[ref]
            return out
        if isinstance(node, list):
            return [walk(v) for v in node]
        return node

    return walk(resource)
