"""A real notification receiver for tests: an HTTP server on a loopback port whose behaviour the test
switches (ok, failing with 500, slow, or down: not listening at all), recording what it accepted."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from tests.conftest import free_port


class Receiver:
    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/hook"
        self.mode = "ok"  # ok | fail | slow
        self.slow_seconds = 0.6
        self.accepted: list[dict[str, Any]] = []
        self.refused = 0
        self.lock = threading.Lock()
        self.server: ThreadingHTTPServer | None = None

    def up(self) -> Receiver:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def _handle(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                raw = self.rfile.read(length) if length else b""
                if receiver.mode == "fail":
                    with receiver.lock:
                        receiver.refused += 1
                    self.send_response(500)
                    self.end_headers()
                    return
                if receiver.mode == "slow":
                    time.sleep(receiver.slow_seconds)
                with receiver.lock:
                    receiver.accepted.append(
                        {
                            "method": self.command,
                            "path": self.path,
                            "event": self.headers.get("x-changbai-event"),
                            "authorization": self.headers.get("authorization"),
                            "body": json.loads(raw) if raw else None,
                        }
                    )
                self.send_response(200)
                self.send_header("content-length", "0")
                self.end_headers()

            do_POST = do_PUT = do_DELETE = _handle

            def log_message(self, *args: Any) -> None:
                pass

        server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        server.daemon_threads = True
        self.server = server
        threading.Thread(target=server.serve_forever, daemon=True).start()
        return self

    def down(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.server = None

    def got(self) -> list[dict[str, Any]]:
        with self.lock:
            return list(self.accepted)
