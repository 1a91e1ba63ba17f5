"""Outbox readers' checkpoints (``federation_cursor``): read, advance, record a failure."""

from __future__ import annotations

import time
from typing import Any

from sqlalchemy import insert, select, update

from changbai.exchange.federation import tables as ft
from changbai.store.database import Database

_C = ft.cursor.c


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


def all_cursors(db: Database) -> list[Any]:
    with db.read() as conn:
        return list(conn.execute(select(ft.cursor).order_by(_C.name)))
