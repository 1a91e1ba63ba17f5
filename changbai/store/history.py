"""History of a resource, a type or the whole system, newest first, paged by a stable cursor.

The cursor is the global version sequence (``vid``): a page starts below the last version shown, so
pages stay correct while new versions arrive.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import orjson
from sqlalchemy import func, select

from changbai.errors import InvalidInput, NotFound
from changbai.fhir.values import date_range, ms_to_instant
from changbai.settings import get_settings
from changbai.store import schema as t

if TYPE_CHECKING:
    from changbai.store.repository import Unit


@dataclass
class Version:
    rtype: str
    id: str
    version: int
    last_updated: int
    method: str
    deleted: bool
    resource: dict[str, Any] | None

    @property
    def last_updated_text(self) -> str:
        return ms_to_instant(self.last_updated)


@dataclass
class HistoryPage:
    versions: list[Version]
    next_cursor: str | None
    total: int | None


def history(unit: Unit, rtype: str | None, id: str | None, query: list[tuple[str, str]]) -> HistoryPage:
    settings = get_settings()
    v = t.resource_version.c
    conds = []
    if rtype is not None:
        conds.append(v.rtype == rtype)
    if id is not None:
        conds.append(v.id == id)
    count = settings.default_page_size
    cursor: int | None = None
    for key, value in query:
        if key == "_count":
            if not value.isdigit():
                raise InvalidInput(f"_count must be a non-negative integer, not '{value}'", expression="_count")
            count = min(int(value), settings.max_page_size)
        elif key == "_since":
            conds.append(v.last_updated >= date_range(value)[0])
        elif key == "_at":
            conds.append(v.last_updated <= date_range(value)[1])
        elif key == "_page":
            if not value.isdigit():
                raise InvalidInput("Invalid history page cursor", expression="_page")
            cursor = int(value)
        elif key in ("_format", "_pretty"):
            continue
        else:
            raise InvalidInput(f"Unknown history parameter '{key}'", expression=key)
    if id is not None and rtype is not None:
        exists = unit.conn.execute(
            select(t.resource.c.rid).where(t.resource.c.rtype == rtype, t.resource.c.id == id)
        ).first()
        if exists is None:
            raise NotFound(f"{rtype}/{id} is not known")
    total = unit.conn.execute(select(func.count()).select_from(t.resource_version).where(*conds)).scalar_one()
    if cursor is not None:
        conds.append(v.vid < cursor)
    rows = unit.conn.execute(select(t.resource_version).where(*conds).order_by(v.vid.desc()).limit(count + 1)).all()
    more = len(rows) > count
    rows = rows[:count]
    versions = [
        Version(
            r.rtype,
            r.id,
            r.version,
            r.last_updated,
            r.method,
            r.deleted,
            orjson.loads(r.content) if r.content else None,
        )
        for r in rows
    ]
    return HistoryPage(versions, str(rows[-1].vid) if more and rows else None, total)
