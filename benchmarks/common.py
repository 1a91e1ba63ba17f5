"""Helpers shared by the benchmarks: a platform server in its own process, databases, tables."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
TESTDATA = Path(os.environ.get("CHANGBAI_TESTDATA") or ROOT.parent / "shared" / "testdata")
if not TESTDATA.is_dir() and Path("/work/shared/testdata").is_dir():  # a checkout outside /work here
    TESTDATA = Path("/work/shared/testdata")
PG_ADMIN = os.environ.get("CHANGBAI_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
#: The core benchmarks measure the platform without sign-in; benchmarks/security.py measures what security
#: costs on the same workloads, and the web benchmark signs in as a clinician.
os.environ.setdefault("CHANGBAI_SECURITY", "off")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def database(backend: str) -> Iterator[str | None]:
    """A fresh empty database URL for ``backend`` (None when PostgreSQL is unreachable)."""
    if backend == "sqlite":
        with tempfile.TemporaryDirectory(prefix="changbai-bench-") as d:
            yield f"sqlite:///{d}/bench.db"
        return
    import psycopg

    name = f"changbai_bench_{uuid.uuid4().hex[:8]}"
    try:
        with psycopg.connect(PG_ADMIN, autocommit=True, connect_timeout=3) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
    except psycopg.OperationalError:
        yield None
        return
    try:
        yield PG_ADMIN.rsplit("/", 1)[0] + f"/{name}"
    finally:
        with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@dataclass
class Served:
    """A running `changbai serve`: its FHIR base URL and process id."""

    base: str
    pid: int

    def cpu_seconds(self) -> float:
        """CPU time the server process has used so far (user + system, all threads; Linux /proc). On a
        machine shared with other work, CPU time per operation moves far less than wall time."""
        fields = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@contextmanager
def server(database_url: str, **env: str) -> Iterator[str]:
    """`changbai serve` in its own process; yields the FHIR base URL."""
    with served(database_url, **env) as running:
        yield running.base


@contextmanager
def served(database_url: str, **env: str) -> Iterator[Served]:
    """`changbai serve` in its own process; yields its base URL and process id."""
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="changbai-srv-") as d:
        environ = {
            **os.environ,
            "CHANGBAI_LOG_LEVEL": "WARNING",
            "CHANGBAI_MAX_BODY_BYTES": str(256 << 20),
            "CHANGBAI_MLLP_PORT": "0",
            **env,
        }
        proc = subprocess.Popen(
            [sys.executable, "-m", "changbai.cli", "serve", "--port", str(port), "--database", database_url],
            cwd=d,
            env=environ,
        )
        base = f"http://127.0.0.1:{port}/fhir"
        try:
            deadline = time.monotonic() + 60
            while True:
                try:
                    httpx.get(f"{base}/metadata", timeout=5)
                    break
                except httpx.TransportError:
                    if proc.poll() is not None or time.monotonic() > deadline:
                        raise RuntimeError("server did not start") from None
                    time.sleep(0.2)
            yield Served(base, proc.pid)
        finally:
            proc.terminate()
            proc.wait(timeout=30)


def table(headers: list[str], rows: list[list[object]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "| " + " | ".join("---" for _ in headers) + " |"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)
