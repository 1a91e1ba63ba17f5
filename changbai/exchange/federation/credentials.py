"""Node-to-node credentials behind one small interface.

Today a shared secret (CHANGBAI_NODE_SECRET) signs each request with HMAC-SHA256 over the node id and a
timestamp, so the secret never travels. When the security module's SMART Backend Services tokens land,
a second class with the same two methods (headers to send, verify what came in) replaces this one in
:func:`credentials_for`; nothing else changes.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from typing import Protocol

from changbai.errors import ChangbaiError

HEADER = "x-changbai-node"
SKEW_SECONDS = 300


class NodeCredentials(Protocol):
    def headers(self) -> dict[str, str]:
        """Headers that authenticate this node to its parent."""
        ...

    def verify(self, headers: dict[str, str]) -> str:
        """The id of the node that sent a request with these (lower-case) headers, or raise 401."""
        ...


class Unauthenticated(ChangbaiError):
    status = 401
    code = "login"


class SharedSecret:
    def __init__(self, node_id: str, secret: str) -> None:
        self.node_id = node_id
        self.secret = secret.encode()

    def _sign(self, node_id: str, ts: str) -> str:
        return hmac.new(self.secret, f"{node_id}.{ts}".encode(), hashlib.sha256).hexdigest()

    def headers(self) -> dict[str, str]:
        ts = str(int(time.time()))
        return {HEADER: f"id={self.node_id},ts={ts},sig={self._sign(self.node_id, ts)}"}

    def verify(self, headers: dict[str, str]) -> str:
        if not self.secret:
            raise Unauthenticated("This node has no CHANGBAI_NODE_SECRET; it accepts no node requests")
        fields = dict(p.split("=", 1) for p in headers.get(HEADER, "").split(",") if "=" in p)
        node_id, ts, sig = fields.get("id", ""), fields.get("ts", ""), fields.get("sig", "")
        if not node_id or not ts.isdigit() or abs(time.time() - int(ts)) > SKEW_SECONDS:
            raise Unauthenticated("Missing or stale node credentials")
        if not hmac.compare_digest(sig, self._sign(node_id, ts)):
            raise Unauthenticated("Node credentials do not verify")
        return node_id


def credentials_for(node_id: str, secret: str) -> NodeCredentials:
    return SharedSecret(node_id, secret)
