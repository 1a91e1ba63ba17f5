"""Real federation nodes for tests: `changbai serve` processes with their own SQLite file, key files and
environment, security on (as on every real node), and a TCP link between two of them that a test can cut
(the parent then refuses connections) and restore.

Before a node starts, :meth:`NodeProcess.enrol` does what its operators do: a child's key pair is made
(``changbai federation key``) and registered at the parent (``changbai federation children add``), and the
test's own reader, a backend client with role operator, is registered at every node."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx
from joserfc.jwk import ECKey

from changbai.exchange.federation.credentials import BackendServicesClient, load_or_create_key, public_jwks
from changbai.exchange.federation.enrol import register_child
from tests.conftest import ROOT, free_port

#: The test's reader and writer at every node: a system client with role operator.
TESTER = "tester"
TESTER_KEY = ECKey.generate_key("P-384", private=True, auto_kid=True)


class NodeProcess:
    def __init__(self, name: str, tier: str, workdir: Path, parent_url: str = "", **env: str) -> None:
        self.name = name
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.fhir = f"{self.url}/fhir"
        self.workdir = workdir / name
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.database = f"sqlite:///{self.workdir / 'node.db'}"
        self.env = {
            **os.environ,
            "PYTHONPATH": str(ROOT),
            "CHANGBAI_LOG_LEVEL": "WARNING",
            "CHANGBAI_MLLP_PORT": "0",
            "CHANGBAI_NODE_ID": name,
            "CHANGBAI_NODE_TIER": tier,
            "CHANGBAI_SECURITY": "on",
            "CHANGBAI_PARENT_URL": parent_url,
            "CHANGBAI_BASE_URL": self.fhir,
            "CHANGBAI_FEDERATION_POLICY": "whole-record",
            **env,
        }
        self.proc: subprocess.Popen[bytes] | None = None
        self._tester: BackendServicesClient | None = None

    def enrol(self, children: list[NodeProcess] = ()) -> NodeProcess:  # type: ignore[assignment]
        """Register the test's client and each child node's key here (the data its operators enter)."""
        from changbai.security.accounts import add_account
        from changbai.security.policy import load_policy
        from changbai.store.database import Database

        db = Database(self.database)
        try:
            add_account(db, load_policy(), TESTER, "operator", kind="client", jwks=public_jwks(TESTER_KEY))
            for child in children:
                key = load_or_create_key(child.workdir / "var" / "keys" / "node-client.json")
                register_child(db, child.name, public_jwks(key))
        finally:
            db.dispose()
        return self

    def headers(self) -> dict[str, str]:
        """The test client's bearer token at this node (cached, renewed when it expires)."""
        if self._tester is None:
            self._tester = BackendServicesClient(self.fhir, TESTER, TESTER_KEY, "system/*.cruds")
        return self._tester.headers()

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.fhir, headers=self.headers(), timeout=60)

    def start(self) -> NodeProcess:
        return self.launch().ready()

    def launch(self) -> NodeProcess:
        """Start the process without waiting (several nodes boot in parallel); then call :meth:`ready`."""
        log = (self.workdir / "stderr.log").open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "changbai.cli", "serve", "--port", str(self.port), "--database", self.database],
            cwd=self.workdir,
            env=self.env,
            stdout=subprocess.DEVNULL,
            stderr=log,
        )
        return self

    def ready(self) -> NodeProcess:
        assert self.proc is not None
        deadline = time.monotonic() + 120  # a loaded shared machine has taken over a minute
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200:
                    return self
            except httpx.TransportError:
                pass
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited: {(self.workdir / 'stderr.log').read_text()[-2000:]}")
            time.sleep(0.1)
        raise RuntimeError(f"{self.name} did not start")

    def kill(self) -> None:
        """A crash: SIGKILL, no shutdown hooks."""
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=10)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.kill()

    def status(self) -> dict[str, Any]:
        return dict(httpx.get(f"{self.url}/federation/status", headers=self.headers(), timeout=10).json())


class CuttableLink:
    """A loopback TCP forwarder to ``target_port``; ``cut()`` drops every connection and refuses new
    ones (nothing listens on the port), ``restore()`` listens again on the same port."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._server: socket.socket | None = None
        self._conns: list[socket.socket] = []
        self._lock = threading.Lock()

    def restore(self) -> None:
        server = socket.socket()
        server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        server.bind(("127.0.0.1", self.port))
        server.listen(64)
        self._server = server
        threading.Thread(target=self._accept, args=(server,), daemon=True).start()

    def cut(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            with contextlib.suppress(OSError):
                server.shutdown(socket.SHUT_RDWR)  # wakes the thread blocked in accept()
            server.close()
        with self._lock:
            conns, self._conns = self._conns, []
        for c in conns:
            with contextlib.suppress(OSError):
                c.shutdown(socket.SHUT_RDWR)
            c.close()

    def _accept(self, server: socket.socket) -> None:
        while True:
            try:
                client, _ = server.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(("127.0.0.1", self.target_port), timeout=5)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._conns += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)


def snapshot(node: NodeProcess, types: tuple[str, ...] = ("Patient", "Observation")) -> dict[str, tuple[int, Any]]:
    """Every current resource of ``types`` at a node: 'Type/id' -> (version, content without versioning)."""
    out: dict[str, tuple[int, Any]] = {}
    with node.client() as client:
        for rtype in types:
            url: str | None = f"{node.fhir}/{rtype}?_count=1000&_sort=_id"
            while url:
                bundle = client.get(url).json()
                for e in bundle.get("entry", []):
                    r = dict(e["resource"])
                    meta = {k: v for k, v in r.get("meta", {}).items() if k not in ("versionId", "lastUpdated")}
                    version = int(r["meta"]["versionId"])
                    r["meta"] = meta
                    out[f"{rtype}/{r['id']}"] = (version, r)
                url = next((link["url"] for link in bundle.get("link", []) if link["relation"] == "next"), None)
    return out


def by_resource(entries: list[dict[str, Any]]) -> dict[str, list[tuple[int, bool, Any]]]:
    """History entries per resource in version order: (version, deleted, content without the version's
    own meta): what must be the same, in the same order, at a parent as where it was recorded."""
    out: dict[str, list[tuple[int, bool, Any]]] = {}
    for e in entries:
        version = int(e["response"]["etag"][3:-1])
        key = "/".join(e["fullUrl"].rsplit("/", 2)[-2:])
        r = e.get("resource")
        if r is not None:
            meta = {k: v for k, v in r.get("meta", {}).items() if k not in ("versionId", "lastUpdated")}
            r = {**r, "meta": meta}
        out.setdefault(key, []).append((version, r is None, r))
    return {k: sorted(v, key=lambda x: x[0]) for k, v in out.items()}


def histories(node: NodeProcess) -> dict[str, list[tuple[int, bool, Any]]]:
    """Every version held at a node (system history, all pages), per resource."""
    entries: list[dict[str, Any]] = []
    with node.client() as client:
        url: str | None = f"{node.fhir}/_history?_count=1000"
        while url:
            bundle = client.get(url).json()
            entries.extend(bundle.get("entry", []))
            url = next((link["url"] for link in bundle.get("link", []) if link["relation"] == "next"), None)
    return by_resource(entries)


def history_total(node: NodeProcess) -> int:
    r = httpx.get(f"{node.fhir}/_history?_count=1", headers=node.headers(), timeout=30)
    return int(r.json().get("total", -1))


def wait_until(predicate: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")
