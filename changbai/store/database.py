"""The database: engine creation tuned per backend, and schema migrations (Alembic) on open.

SQLite runs in WAL mode with a busy timeout; write transactions start with BEGIN IMMEDIATE so that two
writers queue instead of failing half-way. PostgreSQL uses psycopg 3 with a connection pool.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, NoSuchModuleError, OperationalError

from changbai import logs
from changbai.errors import ChangbaiError
from changbai.settings import normalise_database_url

log = logs.get(__name__)


class Database:
    """One engine plus the knowledge of which backend it is."""

    def __init__(self, url: str, *, migrate: bool = True) -> None:
        self.url = normalise_database_url(url)
        try:
            self.dialect = make_url(self.url).get_backend_name()
            self.is_sqlite = self.dialect == "sqlite"
            self._write_lock = threading.Lock() if self.is_sqlite else None
            self.engine = self._create_engine()
            if migrate:
                upgrade(self)
        except (ArgumentError, NoSuchModuleError, OperationalError, OSError) as exc:
            safe = self.url.split("@")[-1]
            raise ChangbaiError(
                f"Cannot open the database '{safe}': {str(exc).splitlines()[0]}", code="exception", status=503
            ) from None

    def _create_engine(self) -> Engine:
        if self.is_sqlite:
            path = make_url(self.url).database
            if path and path != ":memory:":
                Path(path).parent.mkdir(parents=True, exist_ok=True)
            engine = create_engine(
                self.url, connect_args={"check_same_thread": False, "timeout": 30}, pool_size=8, max_overflow=8
            )

            @event.listens_for(engine, "connect")
            def _on_connect(dbapi_conn: Any, _record: Any) -> None:
                dbapi_conn.isolation_level = None  # we issue BEGIN ourselves
                cur = dbapi_conn.cursor()
                cur.execute("PRAGMA journal_mode=WAL")
                cur.execute("PRAGMA synchronous=NORMAL")
                cur.execute("PRAGMA foreign_keys=ON")
                cur.execute("PRAGMA busy_timeout=30000")
                cur.execute("PRAGMA cache_size=-65536")
                cur.execute("PRAGMA temp_store=MEMORY")
                cur.close()

            @event.listens_for(engine, "begin")
            def _on_begin(conn: Connection) -> None:
                immediate = conn.get_execution_options().get("sqlite_immediate")
                conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")

            return engine
        # Search selectivity depends on the values (one patient vs a common code): plan every statement
        # for its own values rather than letting PostgreSQL settle on a generic plan after five runs.
        # No JIT: it compiles any statement whose estimated cost passes a threshold, which searches with
        # many matches do, and its 10-20 ms of compiling was most of such a search (:below at 1M).
        return create_engine(
            self.url,
            pool_size=10,
            max_overflow=20,
            pool_pre_ping=True,
            connect_args={"options": "-c plan_cache_mode=force_custom_plan -c jit=off"},
        )

    @contextmanager
    def write(self) -> Iterator[Connection]:
        """A write transaction: committed on success, rolled back on any exception."""
        if self._write_lock is not None:
            with self._write_lock, self.engine.connect() as conn:
                conn = conn.execution_options(sqlite_immediate=True)
                with conn.begin():
                    yield conn
        else:
            with self.engine.begin() as conn:
                yield conn

    @contextmanager
    def write_cursor(self) -> Iterator[Any]:
        """SQLite only: a write transaction as a bare driver cursor, behind the same process lock as
        :meth:`write`, for a few small statements run on every request (the audit row of a read), where
        SQLAlchemy's connection and transaction handling cost more than the statements. Committed on
        success, rolled back on any exception."""
        assert self._write_lock is not None, "write_cursor is for SQLite"
        with self._write_lock:
            pooled = self.engine.raw_connection()
            try:
                cursor = pooled.driver_connection.cursor()  # type: ignore[union-attr]
                cursor.execute("BEGIN IMMEDIATE")
                try:
                    yield cursor
                    cursor.execute("COMMIT")
                except BaseException:
                    with suppress(Exception):  # a failed COMMIT may have ended the transaction already
                        cursor.execute("ROLLBACK")
                    raise
                finally:
                    cursor.close()
            finally:
                pooled.close()

    @contextmanager
    def read(self) -> Iterator[Connection]:
        with self.engine.connect() as conn, conn.begin():
            yield conn

    def analyze(self) -> None:
        """Refresh the query planner's statistics (after bulk loads). On PostgreSQL also VACUUM, which marks
        the new rows' pages all-visible: until then every index-only lookup (a search's rid sets) visits
        the table once per row it finds, which it otherwise does until autovacuum gets round to them."""
        with self.engine.connect() as conn:
            if self.is_sqlite:
                conn.exec_driver_sql("ANALYZE")
            else:
                conn.execution_options(isolation_level="AUTOCOMMIT").exec_driver_sql("VACUUM (ANALYZE)")
            conn.commit()

    def dispose(self) -> None:
        self.engine.dispose()


def alembic_config(db: Database) -> Any:
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(Path(__file__).parent / "migrations"))
    cfg.set_main_option("sqlalchemy.url", db.url.replace("%", "%%"))
    cfg.attributes["engine"] = db.engine
    return cfg


def upgrade(db: Database, revision: str = "head") -> None:
    """Bring the schema to ``revision``; a no-op when it is there already. Never drops data."""
    from alembic import command

    with db.engine.begin() as conn:
        cfg = alembic_config(db)
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, revision)
