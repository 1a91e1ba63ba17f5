"""Console sessions: sign-in through the platform's own OAuth 2.0 authorisation server (authorisation code
+ PKCE S256, the console being a public client), the tokens kept on the server, the browser holding only a
random session id in an HttpOnly, SameSite=Lax cookie.

Every data call of the console is made with a :class:`Context` whose principal comes from the access token
through the platform's ``context_factory`` (the same function the /fhir endpoint uses), so the console sees
exactly what its user would see through the API, and every read is audited by the security module.
"""

from __future__ import annotations

import base64
import hashlib
import secrets
import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

import httpx
from starlette.requests import Request

from changbai.errors import ChangbaiError
from changbai.store.pipeline import Context

if TYPE_CHECKING:
    from changbai.api.app import Platform

CLIENT_ID = "changbai-console"
CALLBACK = "/console/callback"
COOKIE = "changbai_console"
#: Sessions end after this long without use (the refresh token lives 12 h at most anyway).
IDLE_SECONDS = 2 * 3600
PENDING_SECONDS = 600
#: Scopes asked for by each kind of sign-in. The authorisation server refuses scopes beyond the account's
#: role, so the console asks for the role's own scopes (from security's policy) when it knows the role.
RESIDENT_SCOPES = "patient/*.rs patient/Consent.cruds"


@dataclass
class Session:
    id: str
    username: str = ""
    role: str = ""
    patient: str | None = None
    access_token: str = ""
    refresh_token: str = ""
    expires: float = 0.0
    csrf: str = field(default_factory=lambda: secrets.token_urlsafe(24))
    last_used: float = field(default_factory=time.monotonic)
    # while signing in
    state: str = ""
    verifier: str = ""
    next: str = "/console/"


class SessionStore:
    """Sessions in this process's memory (a restart signs everyone out; one process per node)."""

    def __init__(self) -> None:
        self._sessions: dict[str, Session] = {}
        self._lock = threading.Lock()

    def new(self) -> Session:
        s = Session(secrets.token_urlsafe(32))
        with self._lock:
            self._prune()
            self._sessions[s.id] = s
        return s

    def get(self, sid: str | None) -> Session | None:
        if not sid:
            return None
        with self._lock:
            s = self._sessions.get(sid)
            if s is None:
                return None
            limit = IDLE_SECONDS if s.access_token else PENDING_SECONDS
            if time.monotonic() - s.last_used > limit:
                del self._sessions[sid]
                return None
            s.last_used = time.monotonic()
            return s

    def drop(self, sid: str) -> None:
        with self._lock:
            self._sessions.pop(sid, None)

    def _prune(self) -> None:
        now = time.monotonic()
        for sid in [k for k, s in self._sessions.items() if now - s.last_used > IDLE_SECONDS]:
            del self._sessions[sid]


def pkce_pair() -> tuple[str, str]:
    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    return verifier, challenge


def fhir_base(platform: Platform, request: Request) -> str:
    """The FHIR base exactly as the FHIR endpoint computes it (the audience of the console's tokens)."""
    if platform.settings.base_url:
        return platform.settings.base_url.rstrip("/")
    return str(request.base_url).rstrip("/") + "/fhir"


def scopes_for(platform: Platform, role: str) -> str:
    """The resource scopes a sign-in as ``role`` asks for: the role's own, from security's policy."""
    if role == "resident":
        return RESIDENT_SCOPES
    sec = platform.security
    if sec is None:
        return "user/*.rs"
    return " ".join(str(s) for s in sec.policy.role(role).scopes)


def authorize_url(platform: Platform, request: Request, s: Session, role: str, lang: str) -> str:
    verifier, challenge = pkce_pair()
    s.state, s.verifier = secrets.token_urlsafe(16), verifier
    query = {
        "response_type": "code",
        "client_id": CLIENT_ID,
        "redirect_uri": CALLBACK,
        "scope": f"openid fhirUser online_access {scopes_for(platform, role)}",
        "state": s.state,
        "aud": fhir_base(platform, request),
        "code_challenge": challenge,
        "code_challenge_method": "S256",
        "lang": lang,
    }
    return "/auth/authorize?" + urlencode(query)


class SignInError(Exception):
    pass


async def _token_call(request: Request, form: dict[str, str]) -> dict[str, Any]:
    """POST to the platform's own token endpoint, in-process (the ASGI app itself, no network hop)."""
    app = request.app
    transport = httpx.ASGITransport(app=app, client=(request.client.host if request.client else "127.0.0.1", 0))
    async with httpx.AsyncClient(transport=transport, base_url=str(request.base_url)) as client:
        r = await client.post("/auth/token", data=form)
    body = r.json()
    if r.status_code != 200:
        raise SignInError(body.get("error_description") or body.get("error") or f"token endpoint {r.status_code}")
    return dict(body)


def _claims(platform: Platform, token: str) -> dict[str, Any]:
    sec = platform.security
    if sec is None:
        raise SignInError("security is not installed on this node")
    return dict(sec.tokens.verify(token, None))


async def finish_sign_in(platform: Platform, request: Request, s: Session, code: str, state: str) -> None:
    if not s.state or not secrets.compare_digest(state, s.state):
        raise SignInError("the sign-in answer does not belong to this browser session (state mismatch)")
    body = await _token_call(
        request,
        {
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": CALLBACK,
            "client_id": CLIENT_ID,
            "code_verifier": s.verifier,
        },
    )
    _keep(platform, s, body)
    s.state = s.verifier = ""


def _keep(platform: Platform, s: Session, body: dict[str, Any]) -> None:
    claims = _claims(platform, body["access_token"])
    s.access_token = body["access_token"]
    s.refresh_token = body.get("refresh_token", s.refresh_token)
    s.expires = time.time() + float(body.get("expires_in", 900))
    s.username = str(claims.get("sub", ""))
    s.role = str(claims.get("role", ""))
    s.patient = claims.get("patient")


async def fresh_token(platform: Platform, request: Request, s: Session) -> str | None:
    """The session's access token, refreshed when it is about to expire; None when that fails."""
    if not s.access_token:
        return None
    if s.expires - time.time() > 30:
        return s.access_token
    if not s.refresh_token:
        return None
    try:
        body = await _token_call(
            request, {"grant_type": "refresh_token", "refresh_token": s.refresh_token, "client_id": CLIENT_ID}
        )
    except SignInError:
        return None
    _keep(platform, s, body)
    return s.access_token


async def current_context(platform: Platform, request: Request, s: Session | None) -> Context | None:
    """The signed-in user's Context, built by the platform's own context factory from the access token
    (exactly as for a /fhir request); None when nobody is signed in or the token is no longer usable."""
    if s is None:
        return None
    token = await fresh_token(platform, request, s)
    if token is None or platform.context_factory is None:
        return None
    headers = [(k, v) for k, v in request.scope["headers"] if k.lower() != b"authorization"]
    headers.append((b"authorization", f"Bearer {token}".encode()))
    scope = {**request.scope, "headers": headers, "path": "/fhir", "raw_path": b"/fhir"}
    ctx = Context(
        source="rest",
        request_id=secrets.token_hex(8),
        base_url=fhir_base(platform, request),
        client_address=request.client.host if request.client else None,
    )
    try:
        return await platform.context_factory(Request(scope), ctx)  # type: ignore[no-any-return]
    except ChangbaiError:
        return None


def current_principal(ctx: Context | None) -> Any:
    return ctx.principal if ctx is not None else None


def revoke(platform: Platform, s: Session) -> None:
    sec = platform.security
    if sec is None:
        return
    claims = sec.tokens.decode_unchecked_expiry(s.access_token) if s.access_token else None
    if claims and claims.get("jti"):
        sec.tokens.revoke_jti(str(claims["jti"]), int(claims.get("exp", 0)))
    if s.refresh_token:
        sec.tokens.revoke_refresh(s.refresh_token)


def register_client(platform: Platform) -> None:
    """The console's OAuth client account (public, PKCE), created on a node's first start."""
    sec = platform.security
    if sec is None:
        return
    from changbai.security.accounts import add_account, get_account

    if get_account(sec.db, CLIENT_ID) is None:
        add_account(
            sec.db,
            sec.policy,
            CLIENT_ID,
            "operator",
            kind="client",
            redirect_uris=[CALLBACK],
            display="长白 Web 控制台 Changbai web console (public client, PKCE)",
        )
