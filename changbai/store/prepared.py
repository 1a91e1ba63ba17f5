"""Statements run thousands of times a second, compiled once per database and run on the driver's cursor.

SQLAlchemy Core builds and executes a statement in tens of microseconds, which is nothing for a request
but ten times the database's own work for a one-row primary-key lookup. The master index runs a handful of
such statements on every Patient write, so its statements are written in Core (portable, checked) and
compiled here once per dialect and per length of their IN lists; each call is then one driver ``execute``
inside the caller's transaction. Values always travel as parameters. Only plain values (str, int, float,
bool, None) are bound and returned: no type processing happens on this path.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

from sqlalchemy import Connection
from sqlalchemy.sql import ClauseElement

_POSITIONAL = frozenset({"qmark", "format", "numeric"})


class Prepared:
    """A Core statement to run with :meth:`all`, :meth:`first` or :meth:`run` on a connection."""

    __slots__ = ("_compiled", "_expanding", "statement")

    def __init__(self, statement: ClauseElement) -> None:
        self.statement = statement
        self._expanding = sorted(b.key for b in _bind_params(statement) if b.expanding)
        self._compiled: dict[tuple[Any, ...], tuple[str, tuple[str, ...] | None, dict[str, Any]]] = {}

    def _compile(self, conn: Connection, params: Mapping[str, Any]) -> tuple[str, Any]:
        dialect = conn.dialect
        sizes = tuple(len(params[k]) for k in self._expanding)
        key = (dialect.name, sizes)
        found = self._compiled.get(key)
        if found is None:
            compiled: Any = self.statement.compile(dialect=dialect)
            if self._expanding:  # each IN list rendered as that many parameters: key_1, key_2 ...
                state = compiled.construct_expanded_state(dict(params))
                sql, names, defaults = state.statement, state.positiontup, dict(state.parameters)
            else:
                sql, names, defaults = compiled.string, compiled.positiontup, compiled.construct_params(dict(params))
            order = tuple(names or ()) if dialect.paramstyle in _POSITIONAL else None
            found = self._compiled[key] = (sql, order, defaults)
        sql, order, defaults = found
        values = {**defaults, **params}
        for k in self._expanding:
            values.update({f"{k}_{i}": v for i, v in enumerate(params[k], 1)})
        if order is not None:
            return sql, [values[name] for name in order]
        return sql, values

    def run(self, conn: Connection, params: Mapping[str, Any] | None = None) -> int:
        """Execute; the number of rows it changed."""
        sql, bound = self._compile(conn, params or {})
        with driver_cursor(conn) as cursor:
            cursor.execute(sql, bound)
            return int(cursor.rowcount)

    def all(self, conn: Connection, params: Mapping[str, Any] | None = None) -> list[tuple[Any, ...]]:
        sql, bound = self._compile(conn, params or {})
        with driver_cursor(conn) as cursor:
            cursor.execute(sql, bound)
            return list(cursor.fetchall())

    def first(self, conn: Connection, params: Mapping[str, Any] | None = None) -> tuple[Any, ...] | None:
        rows = self.all(conn, params)
        return rows[0] if rows else None

    def many(self, conn: Connection, rows: Sequence[Mapping[str, Any]]) -> None:
        """Execute once per parameter set (a statement without IN lists)."""
        if not rows:
            return
        sql, _ = self._compile(conn, rows[0])
        bound = [self._compile(conn, r)[1] for r in rows]
        with driver_cursor(conn) as cursor:
            cursor.executemany(sql, bound)


@contextmanager
def driver_cursor(conn: Connection) -> Iterator[Any]:
    """A cursor of the database driver on ``conn``, in its transaction, closed afterwards (SQLite's
    cursors are no context managers): for the store's few statements that bypass SQLAlchemy."""
    cursor = conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
    try:
        yield cursor
    finally:
        cursor.close()


def _bind_params(statement: ClauseElement) -> list[Any]:
    from sqlalchemy.sql.visitors import iterate

    return [e for e in iterate(statement) if e.__visit_name__ == "bindparam"]
