"""Recompute the access labels of records already stored, through the one write pipeline.

Labels are computed when a record is written. Records written while security was off carry none (readers
with a restricted reach do not see them), and records labelled before the resident's home region moved
to the Patient carry the old home codes. `changbai relabel` writes every current record again, as the
platform itself, in transactions of a few hundred: each goes through the same ``prepare`` steps as any
write, and a record whose labels come out the same is left as it is (no new version).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import orjson
from sqlalchemy import and_, select

from changbai.store import schema as t
from changbai.store.pipeline import Context

if TYPE_CHECKING:
    from changbai.api.app import Platform

BATCH = 300


def relabel(platform: Platform, rtype: str | None = None, progress: Callable[[int, int], None] | None = None) -> int:
    """Write every current record (of ``rtype``, or all) again; returns how many changed."""
    r, v = t.resource.c, t.resource_version.c
    changed = seen = 0
    last = 0
    while True:
        q = (
            select(r.rid, v.content)
            .join_from(t.resource, t.resource_version, and_(v.rid == r.rid, v.version == r.version))
            .where(r.rid > last, r.deleted.is_(False))
            .order_by(r.rid)
            .limit(BATCH)
        )
        if rtype is not None:
            q = q.where(r.rtype == rtype)
        with platform.db.read() as conn:
            rows = conn.execute(q).all()
        if not rows:
            return changed
        last = rows[-1].rid
        resources = [orjson.loads(row.content) for row in rows if row.content]
        with platform.repo.unit(Context(source="system")) as unit:
            outcomes = unit.put_many(resources)
        changed += sum(1 for o in outcomes if o.status != "unchanged")
        seen += len(resources)
        if progress is not None:
            progress(seen, changed)
