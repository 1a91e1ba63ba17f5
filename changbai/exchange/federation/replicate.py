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

from sqlalchemy import and_, insert, select, tuple_, update

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


def collect(repo: Repository, node: Node, policy: Policy, after: int, limit: int) -> tuple[list[Change], int]:
    """The next changes after outbox ``seq`` ``after`` that the policy sends, and the last seq looked at."""
    with repo.unit(Context(source="federation"), write=False) as u:
        rows = u.conn.execute(select(schema.outbox).where(_OUT.seq > after).order_by(_OUT.seq).limit(limit)).all()
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
        changes = []
        for row in wanted:
            origin, version = origins.get((row.rtype, row.id, row.version), (node.id, row.version))
            resource = None
            if row.action != "delete":
                resource = policy.apply(u.vread(row.rtype, row.id, str(row.version)).resource or {})
            changes.append(Change(row.seq, origin, version, row.rtype, row.id, row.action, resource))
        return changes, rows[-1].seq


def batch_bundle(changes: list[Change]) -> dict[str, Any]:
    return {"resourceType": "Bundle", "type": "batch", "entry": [c.entry() for c in changes]}


# ----------------------------------------------------------------------------------------- receiving
def _ext(entry: dict[str, Any], url: str) -> Any:
    for e in entry.get("extension", []):
        if e.get("url") == url:
            return e.get("valueString", e.get("valueInteger"))
    return None


def apply_bundle(unit: Unit, node: Node, sender: str, bundle: Any) -> dict[str, int]:
    """Apply a replication batch inside ``unit``; returns counts (applied, skipped, rejected)."""
    if not isinstance(bundle, dict) or bundle.get("resourceType") != "Bundle":
        raise InvalidInput("$replicate takes a Bundle of changes")
    unit.ctx.source = "federation"
    unit.ctx.extras["sender_node"] = sender
    counts = {"applied": 0, "skipped": 0, "rejected": 0}
    mapped_origins = {
        o for (o,) in unit.conn.execute(select(ft.ids.c.origin).distinct())
    }  # origins with renamed ids (rare)
    for i, entry in enumerate(bundle.get("entry") or []):
        origin, version = _ext(entry, EXT_ORIGIN), _ext(entry, EXT_VERSION)
        request = entry.get("request") or {}
        rtype, _, id = str(request.get("url", "")).partition("/")
        if not isinstance(origin, str) or not isinstance(version, int) or not rtype or not id:
            raise InvalidInput(f"$replicate entry {i} needs origin, origin version and request.url Type/id")
        if origin == node.id:
            counts["skipped"] += 1  # our own change coming back (never in a tree; harmless if it happens)
            continue
        a = ft.applied.c
        key = and_(a.origin == origin, a.rtype == rtype, a.id == id)
        last = unit.conn.execute(select(a.version).where(key)).scalar()
        if last is not None and version <= last:
            counts["skipped"] += 1
            continue
        try:
            local_id = _local_id(unit, origin, rtype, id, first=last is None)
            if local_id != id:
                mapped_origins.add(origin)
            if request.get("method") == "DELETE":
                outcome = unit.delete(rtype, local_id)
            else:
                resource = dict(entry.get("resource") or {})
                if origin in mapped_origins:
                    resource = _rewrite_references(unit, origin, resource)
                meta = dict(resource.get("meta") or {})
                meta.setdefault("source", f"urn:changbai:node:{origin}")
                resource.update(id=local_id, meta=meta)
                outcome = unit.update(rtype, local_id, resource)
            counts["applied"] += 1
            if outcome.stored is not None and outcome.status in ("created", "updated", "deleted"):
                unit.conn.execute(
                    insert(ft.received).values(
                        rtype=rtype, id=local_id, version=outcome.stored.version, origin=origin, origin_version=version
                    )
                )
        except ChangbaiError as exc:
            counts["rejected"] += 1
            logs.event(log, "replicated change rejected", origin=origin, resource=f"{rtype}/{id}", error=exc.message)
        if last is None:
            unit.conn.execute(insert(ft.applied).values(origin=origin, rtype=rtype, id=id, version=version))
        else:
            unit.conn.execute(update(ft.applied).where(key).values(version=version))
    return counts


def _local_id(unit: Unit, origin: str, rtype: str, id: str, *, first: bool) -> str:
    """The id a replicated resource has here: its own, unless another origin's resource holds it."""
    i = ft.ids.c
    mapped = unit.conn.execute(
        select(i.local_id).where(i.origin == origin, i.rtype == rtype, i.origin_id == id)
    ).scalar()
    if mapped is not None:
        return str(mapped)
    if not first or not unit.exists(rtype, id):
        return id
    r = ft.received.c
    owner = unit.conn.execute(select(r.origin).where(r.rtype == rtype, r.id == id).limit(1)).scalar()
    if owner == origin:
        return id
    local = f"{id[:47]}-{hashlib.sha256(origin.encode()).hexdigest()[:16]}"
    unit.conn.execute(insert(ft.ids).values(origin=origin, rtype=rtype, origin_id=id, local_id=local))
    logs.event(log, "replicated id renamed", origin=origin, resource=f"{rtype}/{id}", local_id=local)
    return local


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
