"""Outbox readers' checkpoints (``federation_cursor``): read, advance, record a failure.

A row named ``<reader>`` + :data:`INFLIGHT` holds the end of the batch a reader is sending and has not yet
checkpointed, so that after a crash it resends exactly that batch (a transport that drops resends by
message id, JetStream, then recognises it); it is not a link of its own in the operator view."""

from __future__ import annotations

import time
from typing import Any

from sqlalchemy import insert, select, update

from changbai.exchange.federation import tables as ft
from changbai.store.database import Database

_C = ft.cursor.c
INFLIGHT = ".inflight"


def now_ms() -> int:
    return int(time.time() * 1000)


def get(db: Database, name: str) -> Any:
    """The cursor row (created at seq 0 when missing)."""
    with db.read() as conn:
        row = conn.execute(select(ft.cursor).where(_C.name == name)).first()
    if row is not None:
        return row
    with db.write() as conn:
        if conn.execute(select(_C.name).where(_C.name == name)).first() is None:
            conn.execute(insert(ft.cursor).values(name=name, seq=0, sent=0, failures=0))
    return get(db, name)


def advance(db: Database, name: str, seq: int, sent: int) -> None:
    with db.write() as conn:
        conn.execute(
            update(ft.cursor)
            .where(_C.name == name)
            .values(seq=seq, sent=_C.sent + sent, failures=0, last_success=now_ms())
        )


def failed(db: Database, name: str, error: str) -> int:
    """Record a failure; returns how many in a row."""
    with db.write() as conn:
        conn.execute(
            update(ft.cursor)
            .where(_C.name == name)
            .values(failures=_C.failures + 1, last_error=error[:2000], last_error_at=now_ms())
        )
        return int(conn.execute(select(_C.failures).where(_C.name == name)).scalar() or 0)


def set_inflight(db: Database, name: str, seq: int) -> None:
    """Remember the end of the batch about to be sent (0: none)."""
    get(db, name + INFLIGHT)
    with db.write() as conn:
        conn.execute(update(ft.cursor).where(_C.name == name + INFLIGHT).values(seq=seq))


def all_cursors(db: Database) -> list[Any]:
    """The links' cursor rows (not the in-flight marks)."""
    with db.read() as conn:
        rows = conn.execute(select(ft.cursor).order_by(_C.name))
        return [r for r in rows if not r.name.endswith(INFLIGHT)]
