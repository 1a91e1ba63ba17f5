"""The rid of each reference's target, kept in ``idx_reference.target_rid`` by the write path.

Chains (``subject:Patient.identifier=x``) and ``_has`` follow references between resources. With only the
target's type and id in the reference row, every reference followed was a probe of ``resource`` by
(type, id); with the target's rid beside them, the index tables join each other on integers.

A resource row, once written, names the same (type, id) for good (rows are never removed; a delete marks
them), so a rid stored here never goes stale. The store keeps it so:

- when index rows are flushed, references to a resource that has a row by then get its rid
  (:func:`resolve`), whether it was stored long ago or earlier in the same unit;
- when a resource row is first created, references already stored without a rid and naming it get it
  (:func:`fill`): the referrer was written first (a forward reference within a bulk load, a placeholder
  reference filled in later), which is common (bulk load writes Condition before Encounter).

NULL therefore means "no such resource had a row when this reference was written or since", with one
exception on PostgreSQL: a referrer and its target created in two transactions at the same time, each
invisible to the other until both commit. Searches use ``target_rid`` where it is set and still probe
``resource`` by (type, id) for the NULL rows, which keeps results exact in that case and costs little, as
NULL rows are few (references to resources that do not exist here, which match no target anyway).
Deletion changes nothing here: searches check that a target is live where it matters.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from changbai.store import schema as t

_COLUMNS = t.insert_columns(t.idx_reference)
#: positions in an idx_reference row as the store buffers it (rid first)
TYPE, ID, RID = _COLUMNS.index("target_type"), _COLUMNS.index("target_id"), _COLUMNS.index("target_rid")
#: pairs per statement on SQLite (two parameters each, well under its limit of 32,766)
_SQLITE_BATCH = 400


def resolve(cursor: Any, is_sqlite: bool, rows: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
    """``rows`` (idx_reference rows, rid first) with ``target_rid`` set wherever the target has a row."""
    pairs = {(row[TYPE], row[ID]) for row in rows if row[ID] is not None and row[TYPE] is not None}
    if not pairs:
        return rows
    found = _rids(cursor, is_sqlite, list(pairs))
    if not found:
        return rows
    out = []
    for row in rows:
        rid = found.get((row[TYPE], row[ID])) if row[ID] is not None else None
        out.append(row if rid is None else (*row[:RID], rid, *row[RID + 1 :]))
    return out


def fill(cursor: Any, is_sqlite: bool, created: Iterable[tuple[str, str, int]]) -> None:
    """Give references stored without a target rid the rid of their target, newly created: (type, id, rid)."""
    created = list(created)
    if not created:
        return
    if is_sqlite:
        cursor.executemany(
            "UPDATE idx_reference SET target_rid = ? WHERE target_type = ? AND target_id = ? AND target_rid IS NULL",
            [(rid, rtype, id) for rtype, id, rid in created],
        )
        return
    types, ids, rids = zip(*created, strict=True)
    cursor.execute(
        "UPDATE idx_reference AS c SET target_rid = v.rid"
        " FROM unnest(%s::varchar[], %s::varchar[], %s::bigint[]) AS v(rtype, id, rid)"
        " WHERE c.target_type = v.rtype AND c.target_id = v.id AND c.target_rid IS NULL",
        (list(types), list(ids), list(rids)),
    )


def _rids(cursor: Any, is_sqlite: bool, pairs: list[tuple[str, str]]) -> dict[tuple[str, str], int]:
    found: dict[tuple[str, str], int] = {}
    if is_sqlite:
        for i in range(0, len(pairs), _SQLITE_BATCH):
            part = pairs[i : i + _SQLITE_BATCH]
            values = ", ".join("(?, ?)" for _ in part)
            cursor.execute(
                f"WITH v(rtype, id) AS (VALUES {values})"
                " SELECT r.rtype, r.id, r.rid FROM v JOIN resource AS r ON r.rtype = v.rtype AND r.id = v.id",
                [x for pair in part for x in pair],
            )
            found.update({(rtype, id): rid for rtype, id, rid in cursor.fetchall()})
        return found
    types, ids = zip(*pairs, strict=True)
    cursor.execute(
        "SELECT r.rtype, r.id, r.rid FROM unnest(%s::varchar[], %s::varchar[]) AS v(rtype, id)"
        " JOIN resource AS r ON r.rtype = v.rtype AND r.id = v.id",
        (list(types), list(ids)),
    )
    return {(rtype, id): rid for rtype, id, rid in cursor.fetchall()}
