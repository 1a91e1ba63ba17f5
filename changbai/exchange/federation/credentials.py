"""How nodes authenticate to each other: SMART Backend Services (client_credentials + private_key_jwt).

A child node is a system client of its parent. It holds its own EC P-384 key pair (``node-client.json``
in data_dir/keys, created on first use, never in the database); the parent's operator registers the
child's public JWK set under the child's client id with role ``node`` (``changbai federation children
add``, :func:`changbai.exchange.federation.enrol.register_child`). The child then

1. reads the parent's ``.well-known/smart-configuration`` for its token endpoint,
2. signs a short assertion (ES384, ``iss`` = ``sub`` = client id, ``aud`` = the token endpoint, a fresh
   ``jti``) and asks for ``client_credentials`` with the node scope (``system/*.cud`` by default),
3. caches the access token and asks for a new one a minute before it expires (or at once when the parent
   answers 401: revoked, the parent's keys rotated), and
4. sends it as ``Authorization: Bearer`` on ``$replicate`` and on cross-region retrieval.

The parent's security module verifies the token like any other; :func:`sending_node` then accepts only a
registered node client (:data:`NODE_ROLE`) whose scopes allow the writes of the batch.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import threading
import time
from pathlib import Path
from typing import Any, Protocol

import httpx
from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import ECKey, KeySet

from changbai import logs
from changbai.errors import Forbidden, InvalidInput, Unauthorized

log = logs.get(__name__)

#: The role (security/data/roles.json) of a child node's client at its parent.
NODE_ROLE = "node"
KEY_FILE = "node-client.json"
ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
#: Ask for a new access token this many seconds before the current one expires.
REFRESH_MARGIN = 60.0
#: The header of a batch published to JetStream that carries its sender's signature.
SIGNATURE_HEADER = "Changbai-Signature"


class CredentialsUnavailable(Exception):
    """No access token could be obtained from the parent (it is down, or refuses this node)."""


class NodeCredentials(Protocol):
    def headers(self) -> dict[str, str]:
        """Headers that authenticate this node to its parent (raises CredentialsUnavailable)."""
        ...

    def invalidate(self) -> None:
        """The parent refused the last token (401): get a new one next time."""
        ...


class NoCredentials:
    """For a parent that runs with security off (tests, benchmarks of the core): nothing to send."""

    def headers(self) -> dict[str, str]:
        return {}

    def invalidate(self) -> None:
        return None


# ------------------------------------------------------------------------------------------- the key
def load_or_create_key(path: Path) -> ECKey:
    """The node's private key; created (mode 0600, directory 0700) when missing."""
    if path.exists():
        return ECKey.import_key(json.loads(path.read_text()))
    path.parent.mkdir(parents=True, exist_ok=True)
    key = ECKey.generate_key("P-384", private=True, auto_kid=True)
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(json.dumps(key.as_dict(private=True)))
    tmp.replace(path)
    logs.event(log, "node key created", file=str(path))
    return key


def public_jwks(key: ECKey) -> dict[str, Any]:
    """The JWK set the parent's operator registers (public part only)."""
    public = key.as_dict(private=False)
    public.update({"use": "sig", "alg": "ES384"})
    return {"keys": [public]}


# --------------------------------------------------------------------------------- the child's client
class BackendServicesClient:
    """Access tokens for this node at its parent, cached and renewed before they expire (thread-safe)."""

    def __init__(
        self, parent_url: str, client_id: str, key: ECKey, scope: str, *, client: httpx.Client | None = None
    ) -> None:
        self.parent_url = parent_url.rstrip("/")
        self.client_id = client_id
        self.key = key
        self.scope = scope
        self.http = client or httpx.Client(timeout=30)
        self._lock = threading.Lock()
        self._token = ""
        self._renew_at = 0.0
        self._token_url = ""

    def headers(self) -> dict[str, str]:
        with self._lock:
            if not self._token or time.time() >= self._renew_at:
                self._fetch()
            return {"authorization": f"Bearer {self._token}"}

    def invalidate(self) -> None:
        with self._lock:
            self._token = ""

    def _discover(self) -> str:
        url = f"{self.parent_url}/.well-known/smart-configuration"
        try:
            r = self.http.get(url, headers={"accept": "application/json"})
        except httpx.HTTPError as exc:
            raise CredentialsUnavailable(f"parent unreachable for discovery ({type(exc).__name__}: {exc})") from None
        if r.status_code != 200:
            raise CredentialsUnavailable(
                f"parent answered {r.status_code} at {url}: it offers no SMART token endpoint (security off?)"
            )
        endpoint = r.json().get("token_endpoint") if r.content else None
        if not isinstance(endpoint, str) or not endpoint.startswith(("http://", "https://")):
            raise CredentialsUnavailable(f"parent's smart-configuration has no usable token_endpoint: {endpoint!r}")
        return endpoint

    def _assertion(self, token_url: str) -> str:
        now = int(time.time())
        claims = {
            "iss": self.client_id,
            "sub": self.client_id,
            "aud": token_url,
            "iat": now,
            "exp": now + 240,
            "jti": secrets.token_urlsafe(24),
        }
        header = {"alg": "ES384", "typ": "JWT", "kid": self.key.kid}
        return jwt.encode(header, claims, self.key, algorithms=["ES384"])

    def _fetch(self) -> None:
        if not self._token_url:
            self._token_url = self._discover()
        form = {
            "grant_type": "client_credentials",
            "scope": self.scope,
            "client_assertion_type": ASSERTION_TYPE,
            "client_assertion": self._assertion(self._token_url),
        }
        try:
            r = self.http.post(self._token_url, data=form, headers={"accept": "application/json"})
        except httpx.HTTPError as exc:
            raise CredentialsUnavailable(f"token endpoint unreachable ({type(exc).__name__}: {exc})") from None
        body = r.json() if r.content and r.headers.get("content-type", "").startswith("application/") else {}
        if r.status_code != 200 or not isinstance(body.get("access_token"), str):
            self._token_url = ""  # discover again next time (the parent may have moved)
            why = body.get("error_description") or body.get("error") or r.text[:200]
            raise CredentialsUnavailable(
                f"parent refused a token to client '{self.client_id}' ({r.status_code}: {why})"
            )
        seconds = float(body.get("expires_in") or 300)
        self._token = body["access_token"]
        self._renew_at = time.time() + max(seconds / 2, seconds - REFRESH_MARGIN)
        logs.event(log, "node token obtained", client=self.client_id, expires_in=seconds, scope=body.get("scope"))

    def close(self) -> None:
        self.http.close()


def credentials_for(settings: Any, node_id: str) -> NodeCredentials:
    """The credentials this node presents to its parent, from settings (``node_auth``: smart | none)."""
    mode = settings.node_auth.strip().lower()
    if mode == "none":
        return NoCredentials()
    if mode != "smart":
        raise InvalidInput(f"CHANGBAI_NODE_AUTH must be 'smart' or 'none', not '{settings.node_auth}'")
    key = load_or_create_key(key_path(settings))
    return BackendServicesClient(settings.parent_url, settings.node_client_id or node_id, key, settings.node_scope)


def key_path(settings: Any) -> Path:
    return Path(settings.node_key_file) if settings.node_key_file else Path(settings.data_dir) / "keys" / KEY_FILE


# ---------------------------------------------------------------------------------- the parent's check
def sending_node(ctx: Any, security_on: bool, writes: list[tuple[str, str]] | None = None) -> str:
    """The node behind a request to a node-only operation: with security on, a registered node client
    (role ``node``) whose scopes cover ``writes`` ([(type, letter)]); with security off, anyone."""
    p = ctx.principal
    if not security_on:
        return str(p.username) if p is not None else "(unauthenticated)"
    if p is None:
        raise Unauthorized("Node operations need a node's bearer token (SMART Backend Services)")
    if p.kind != "client" or p.role.name != NODE_ROLE:
        raise Forbidden(f"'{p.username}' is not a registered node client; only child nodes may replicate")
    for rtype, letter in writes or []:
        if not p.may(rtype, letter):
            raise Forbidden(f"The node '{p.username}' has no scope system/{rtype}.{letter} here")
    return str(p.username)


# --------------------------------------------------------------------- signed batches (JetStream transport)
def sign_batch(key: ECKey, client_id: str, msg_id: str, body: bytes) -> str:
    """The sender's signature of a batch published to JetStream: ES384 over its client id, the message id
    and the SHA-256 of the body. Unlike an access token it does not expire: a batch may wait in the stream
    for as long as the parent is down, and replaying a signed batch changes nothing (per-origin versions)."""
    claims = {"iss": client_id, "msg": msg_id, "sha256": hashlib.sha256(body).hexdigest(), "iat": int(time.time())}
    return jwt.encode({"alg": "ES384", "typ": "JWT", "kid": key.kid}, claims, key, algorithms=["ES384"])


def verify_batch(db: Any, client_id: str, msg_id: str, body: bytes, signature: str) -> dict[str, Any]:
    """The account of the registered, active node client that signed this batch (the key registered with
    ``changbai federation children add``), or Unauthorized saying why not."""
    from changbai.security.accounts import get_account
    from changbai.security.tokens import CLIENT_ALGS

    account = get_account(db, client_id)
    if account is None or account["kind"] != "client" or not account["jwks"] or not account["active"]:
        raise Unauthorized(f"'{client_id}' is not an active node client with a registered key here")
    if not signature:
        raise Unauthorized(f"The batch {msg_id} from '{client_id}' is not signed ({SIGNATURE_HEADER} missing)")
    try:
        keyset = KeySet.import_key_set(json.loads(account["jwks"]))
        claims = jwt.decode(signature, keyset, algorithms=CLIENT_ALGS).claims
    except (JoseError, ValueError, KeyError, TypeError):
        raise Unauthorized(
            f"The signature of batch {msg_id} does not verify with the key registered for '{client_id}'"
        ) from None
    if (
        claims.get("iss") != client_id
        or claims.get("msg") != msg_id
        or claims.get("sha256") != hashlib.sha256(body).hexdigest()
    ):
        raise Unauthorized(f"The signature of batch {msg_id} is for another sender, message or content")
    return account
