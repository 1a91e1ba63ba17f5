"""Console sessions kept in the platform database: they survive a restart of the server process, end when
idle or too old, and sign-out ends them for good (the cookie and the tokens behind it are worthless)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager

import httpx
from sqlalchemy import select

from changbai.api.app import create_platform
from changbai.store.database import Database
from changbai.web.sample import World
from changbai.web.session import COOKIE, IDLE_SECONDS, LIFE_SECONDS, PENDING_SECONDS, SessionStore
from changbai.web.tables import web_session
from tests.conftest import LiveServer, free_port
from tests.web.conftest import Browser
from tests.web.test_browser import name


def _signed_in(store: SessionStore, username: str) -> str:
    s = store.new()
    s.username, s.role = username, "clinician"
    s.access_token, s.refresh_token = f"access-token-of-{username}", f"refresh-token-of-{username}"
    s.expires = time.time() + 900
    store.save(s)
    return s.id


def test_sessions_are_found_again_from_another_process_and_end_when_idle_too_old_or_dropped(database_url):
    now = [1_800_000_000.0]
    store = SessionStore(Database(database_url), clock=lambda: now[0])
    secret = _signed_in(store, "doc")
    csrf = store.get(secret).csrf

    # a restarted node (a new engine and store on the same database) knows the session
    other = Database(database_url)
    again = SessionStore(other, clock=lambda: now[0]).get(secret)
    assert again is not None
    assert (again.username, again.role, again.access_token, again.refresh_token, again.csrf) == (
        "doc",
        "clinician",
        "access-token-of-doc",
        "refresh-token-of-doc",
        csrf,
    )
    # the database names neither the cookie's secret nor the tokens nor the CSRF token
    with other.read() as conn:
        stored = repr(conn.execute(select(web_session)).all())
    for plain in (secret, "access-token-of-doc", "refresh-token-of-doc", csrf):
        assert plain not in stored
    other.dispose()
    # a secret that differs in one character finds nothing
    assert store.get(secret[:-1] + ("A" if secret[-1] != "A" else "B")) is None

    # used now and then it lives on; left alone past the idle limit it ends
    for _ in range(3):
        now[0] += IDLE_SECONDS - 120
        assert store.get(secret) is not None
    now[0] += IDLE_SECONDS + 1
    assert store.get(secret) is None

    # however busy, a session ends LIFE_SECONDS after sign-in
    busy = _signed_in(store, "busy")
    started = now[0]
    while now[0] < started + LIFE_SECONDS - 1800:
        now[0] += 1800
        assert store.get(busy) is not None
    now[0] = started + LIFE_SECONDS + 1
    assert store.get(busy) is None

    # a sign-in that never came back from the authorisation page is forgotten sooner
    pending = store.new()
    store.save(pending)
    now[0] += PENDING_SECONDS + 1
    assert store.get(pending.id) is None

    # dropped (signed out) means gone
    gone = _signed_in(store, "leaver")
    assert store.get(gone) is not None
    store.drop(store.get(gone))
    assert store.get(gone) is None
    store.db.dispose()


@contextmanager
def _serve(world: World, port: int) -> Iterator[str]:
    """`changbai serve` as its own process on the sample province's database and keys."""
    s = world.platform.settings
    env = {
        **os.environ,
        "CHANGBAI_SECURITY": "on",
        "CHANGBAI_DATA_DIR": str(s.data_dir),
        "CHANGBAI_MLLP_PORT": "0",
        "CHANGBAI_LOG_LEVEL": "WARNING",
    }
    cmd = [sys.executable, "-m", "changbai.cli", "serve", "--port", str(port), "--database", s.database_url]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                httpx.get(f"{url}/healthz", timeout=2)
                break
            except httpx.TransportError:
                assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else ""
                assert time.monotonic() < deadline, "the server did not start"
                time.sleep(0.2)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=20)


def test_a_browser_stays_signed_in_across_a_server_restart_and_its_cookie_is_worthless_after_sign_out(world, chromium):
    port = free_port()
    pid = world.patient["id"]
    record = f"/console/patient/{pid}"
    b = Browser(chromium, f"http://127.0.0.1:{port}")
    try:
        # first a server of its own in this test's process, on the sample province's database and keys
        platform = create_platform(world.platform.settings)
        first = LiveServer(platform.build_app(), port).start()
        try:
            page = b.sign_in("doctor-home", "clinician")
            b.go(record)
            assert name(world) in page.inner_text("main")
        finally:
            first.stop()
            platform.db.dispose()
        with _serve(world, port) as url:  # `changbai serve`: a new process, nothing of the first one's memory
            b.go(record)
            assert page.url.endswith(record)
            assert name(world) in page.inner_text("main")
            cookie = next(c for c in b.context.cookies() if c["name"] == COOKIE)
            token = SessionStore(world.platform.db).get(cookie["value"]).access_token
            bearer = {"authorization": f"Bearer {token}"}
            assert httpx.get(f"{url}/fhir/Patient/{pid}", headers=bearer).status_code == 200

            page.click("form[action='/console/logout'] button")
            page.wait_for_url("**/console/")
            b.context.add_cookies([cookie])  # the old cookie, kept by someone
            b.go(record)
            assert "/console/?next=" in page.url
            assert name(world) not in page.inner_text("main")
            # and the tokens the session held were revoked with it
            assert httpx.get(f"{url}/fhir/Patient/{pid}", headers=bearer).status_code == 401
    finally:
        b.close()
