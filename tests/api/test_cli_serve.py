"""`changbai serve` as a user runs it: a separate process with its own SQLite file under ./var/."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time

import httpx

from tests.conftest import free_port


def test_serve_starts_and_answers(tmp_path):
    port, mllp = free_port(), free_port()
    env = {**os.environ, "CHANGBAI_LOG_LEVEL": "WARNING", "CHANGBAI_MLLP_PORT": str(mllp)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "changbai.cli", "serve", "--port", str(port)],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                r = httpx.get(f"http://127.0.0.1:{port}/fhir/metadata", timeout=2)
                break
            except httpx.TransportError:
                assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else ""
                assert time.monotonic() < deadline
                time.sleep(0.2)
        assert r.status_code == 200 and r.json()["fhirVersion"] == "4.0.1"
        assert (tmp_path / "var" / "changbai.db").exists()
        with socket.create_connection(("127.0.0.1", mllp), timeout=5):  # the HL7 v2 listener is up too
            pass
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_bad_database_url_is_a_clear_error(tmp_path):
    r = subprocess.run(
        [sys.executable, "-m", "changbai.cli", "serve", "--database", "nosuchdb://x"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode != 0
    assert "Traceback" not in r.stderr
    assert "database" in r.stderr.lower()
