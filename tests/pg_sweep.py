"""Drops the PostgreSQL databases a test session made, after the session has ended.

``DROP DATABASE`` waits for a checkpoint: from half a second to half a minute each on a busy server, which
made the last test's teardown take minutes. The session hands its databases to this script, started as a
process of its own that pytest does not wait for. It also drops what an earlier session left behind (one
that was killed): the databases are named ``changbai_t_<unix time>_<hex>``, and any older than
:data:`STALE_SECONDS` is no longer in use by any test session.

    python -m tests.pg_sweep ADMIN_URL [NAME ...]
"""

from __future__ import annotations

import re
import sys
import time

import psycopg

PREFIX = "changbai_t_"
STALE_SECONDS = 6 * 3600
_NAMED = re.compile(rf"^{PREFIX}(\d+)_[0-9a-f]+$")


def database_name() -> str:
    """A new database's name, carrying its creation time for the sweep."""
    import uuid

    return f"{PREFIX}{int(time.time())}_{uuid.uuid4().hex[:8]}"


def stale(names: list[str], now: float) -> list[str]:
    out = []
    for name in names:
        m = _NAMED.match(name)
        if m and now - int(m.group(1)) > STALE_SECONDS:
            out.append(name)
    return out


def sweep(admin: str, names: list[str]) -> None:
    with psycopg.connect(admin, autocommit=True, connect_timeout=5) as conn:
        existing = [r[0] for r in conn.execute("SELECT datname FROM pg_database WHERE datname LIKE 'changbai_t%'")]
        for name in dict.fromkeys([*names, *stale(existing, time.time())]):
            try:
                conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            except psycopg.Error:
                continue  # in use by a session that is still running; a later sweep takes it


if __name__ == "__main__":
    sweep(sys.argv[1], sys.argv[2:])
