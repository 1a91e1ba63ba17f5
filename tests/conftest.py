"""Shared fixtures: real databases (an SQLite file; PostgreSQL when reachable) and real HTTP servers.

PostgreSQL: CHANGBAI_TEST_POSTGRES_URL names a server (CI sets it to the machine's 127.0.0.1:5432); each
test session creates its own databases there, and a process of its own drops them when the session ends.
Without one, the PostgreSQL variants are skipped with a message saying so.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from changbai.settings import Settings
from tests.pg_sweep import database_name

#: Tests of the core exercise FHIR without sign-in; tests/security, tests/web and the federation tests turn
#: security on explicitly (Settings(security=True)), as every real node has it.
os.environ.setdefault("CHANGBAI_SECURITY", "off")

ROOT = Path(__file__).resolve().parent.parent


def _testdata() -> Path:
    """The outside test data (../shared/testdata beside the checkout): CHANGBAI_TESTDATA names it when the
    checkout lives elsewhere (a clean clone in a temporary directory); /work/shared is this machine's."""
    candidates = [os.environ.get("CHANGBAI_TESTDATA"), ROOT.parent / "shared" / "testdata", "/work/shared/testdata"]
    for candidate in candidates:
        if candidate and Path(candidate).is_dir():
            return Path(candidate)
    return ROOT.parent / "shared" / "testdata"


TESTDATA = _testdata()
SHARED = TESTDATA.parent
PG_ENV = "CHANGBAI_TEST_POSTGRES_URL"
DEFAULT_PG = "postgresql://postgres@127.0.0.1:5432/postgres"


def _pg_admin_url() -> str | None:
    url = os.environ.get(PG_ENV)
    if url:
        return url
    # A local developer machine with the default server also counts as reachable.
    try:
        with socket.create_connection(("127.0.0.1", 5432), timeout=0.5):
            return DEFAULT_PG
    except OSError:
        return None


@pytest.fixture(scope="session", autouse=True)
def quick_password_hashing() -> Iterator[None]:
    """Argon2 with light parameters while testing: tests create hundreds of accounts, and at the production
    parameters (64 MiB, 3 passes) hashing them was minutes of the suite. Hashes still verify the same way
    (each hash carries its parameters); the production hasher is unchanged."""
    from argon2 import PasswordHasher

    from changbai.security import accounts

    saved = accounts._hasher
    accounts._hasher = PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1)
    yield
    accounts._hasher = saved


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    admin = _pg_admin_url()
    if admin is None:
        pytest.skip(f"PostgreSQL tests skipped: no server reachable (set {PG_ENV} to run them)")
    import psycopg

    name = database_name()
    try:
        with psycopg.connect(admin, autocommit=True, connect_timeout=3) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
    except psycopg.OperationalError as exc:
        pytest.skip(f"PostgreSQL tests skipped: {admin} not usable ({exc})")
    base = admin.rsplit("/", 1)[0]
    _migrated(f"{base}/{name}")  # the template of every test's database (_fresh_pg)
    yield f"{base}/{name}"
    # dropped by a process of its own, which the session does not wait for (tests/pg_sweep.py says why)
    subprocess.Popen(
        [sys.executable, "-m", "tests.pg_sweep", admin, name, *_made_databases],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    _made_databases.clear()


#: Databases made by _fresh_pg in this test session, dropped after the session ends (CI reuses the server)
_made_databases: list[str] = []


def _migrated(url: str) -> None:
    """Bring an empty database to the current schema. Each session does this once per backend, and each
    test's database is a copy of that one: migrating from empty took most of a test's setup (0.5 s on
    SQLite, 0.7 s on PostgreSQL, some four minutes of the suite), and copying gives the same schema."""
    from changbai.store.database import Database

    Database(url).dispose()


def _fresh_pg(postgres_url: str) -> str:
    """A new database per use (same server), with the current schema and no data, so tests never see
    each other's data: a copy of the session's database, which only its migration ever connects to."""
    import psycopg

    admin = postgres_url.rsplit("/", 1)[0] + "/postgres"
    template = postgres_url.rsplit("/", 1)[1]
    name = database_name()
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template}"')
    _made_databases.append(name)
    return postgres_url.rsplit("/", 1)[0] + f"/{name}"


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("template") / "changbai.db"
    _migrated(f"sqlite:///{path}")  # the last connection's close folds the WAL into the file
    return path


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A database with the current schema and no data, on each backend."""
    if request.param == "sqlite":
        path = tmp_path / "changbai.db"
        shutil.copyfile(request.getfixturevalue("sqlite_template"), path)
        return f"sqlite:///{path}"
    pg = request.getfixturevalue("postgres_url")
    return _fresh_pg(pg)


@pytest.fixture
def settings(tmp_path: Path, database_url: str) -> Settings:
    return Settings(data_dir=tmp_path / "var", database_url=database_url, mllp_port=0)  # MLLP: own tests


_handed_out: set[int] = set()


def free_port() -> int:
    """A free loopback port, never the same one twice in a test run (two servers of one test may both ask
    before either binds)."""
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
        if port not in _handed_out:
            _handed_out.add(port)
            return port


class LiveServer:
    """A real uvicorn server on a loopback port, in a thread of the test process."""

    def __init__(self, app: object, port: int) -> None:
        import uvicorn

        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.fhir = f"{self.url}/fhir"
        config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", access_log=False)
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def start(self) -> LiveServer:
        self.thread.start()
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if self.server.started:
                return self
            time.sleep(0.02)
        raise RuntimeError("server did not start")

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)


@pytest.fixture
def platform(settings: Settings):  # type: ignore[no-untyped-def]
    from changbai.api.app import create_platform

    p = create_platform(settings)
    yield p
    p.db.dispose()


@pytest.fixture
def server(platform) -> Iterator[LiveServer]:  # type: ignore[no-untyped-def]
    live = LiveServer(platform.build_app(), free_port()).start()
    yield live
    live.stop()


@pytest.fixture
def client(server: LiveServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.fhir, timeout=60, headers={"accept": "application/fhir+json"}) as c:
        yield c
