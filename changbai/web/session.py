"""Console sessions: sign-in through the platform's own OAuth 2.0 authorisation server (authorisation code
+ PKCE S256, the console being a public client), the tokens kept on the server, the browser holding only a
random secret in an HttpOnly, SameSite=Lax cookie.

Sessions live in the platform database (``web_session``, see :mod:`changbai.web.tables`), so a restart or a
second worker process keeps everyone signed in. The row is keyed by a digest of the cookie's secret and its
tokens are sealed (AES-GCM) with a key derived from that secret: the database alone yields neither a cookie
nor a token. A session ends after ``IDLE_SECONDS`` without use, ``LIFE_SECONDS`` after sign-in however busy,
or at sign-out, which also revokes its tokens at the authorisation server.

Every data call of the console is made with a :class:`Context` whose principal comes from the access token
through the platform's ``context_factory`` (the same function the /fhir endpoint uses), so the console sees
exactly what its user would see through the API, and every read is audited by the security module.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import os
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

import httpx
import orjson
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from sqlalchemy import delete, insert, select, update
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request

from changbai.errors import ChangbaiError
from changbai.store.pipeline import Context
from changbai.web.tables import web_session

if TYPE_CHECKING:
    from changbai.api.app import Platform
    from changbai.store.database import Database

CLIENT_ID = "changbai-console"
CALLBACK = "/console/callback"
COOKIE = "changbai_console"
#: A signed-in session ends after this long without use.
IDLE_SECONDS = 2 * 3600
#: ... and this long after sign-in however busy (a working shift; the refresh token's own life too).
LIFE_SECONDS = 12 * 3600
#: A sign-in that has not come back from the authorisation page by then is forgotten.
PENDING_SECONDS = 600
#: The last use is written at most this often per session (a page view is a read, not a write).
TOUCH_SECONDS = 60
#: Scopes asked for by each kind of sign-in. The authorisation server refuses scopes beyond the account's
#: role, so the console asks for the role's own scopes (from security's policy) when it knows the role.
RESIDENT_SCOPES = "patient/*.rs patient/Consent.cruds"
#: What the sealed part of a row holds (everything a thief of the database must not get).
SEALED = ("patient", "access_token", "refresh_token", "expires", "csrf", "state", "verifier", "next")


@dataclass
class Session:
    id: str  # the cookie's secret; never stored, only its digest
    username: str = ""
    role: str = ""
    patient: str | None = None
    access_token: str = ""
    refresh_token: str = ""
    expires: float = 0.0  # of the access token, epoch seconds
    csrf: str = field(default_factory=lambda: secrets.token_urlsafe(24))
    created: int = 0  # epoch ms
    # while signing in
    state: str = ""
    verifier: str = ""
    next: str = "/console/"


def _digest(secret: str) -> str:
    return hashlib.sha256(b"changbai-console-session\x00id\x00" + secret.encode()).hexdigest()


def _key(secret: str) -> bytes:
    return hashlib.sha256(b"changbai-console-session\x00key\x00" + secret.encode()).digest()


class SessionStore:
    """Sessions in the platform database, shared by every process serving the node."""

    def __init__(self, db: Database, clock: Callable[[], float] = time.time) -> None:
        self.db = db
        self.clock = clock
        self._pruned = 0

    def _now(self) -> int:
        return int(self.clock() * 1000)

    def new(self) -> Session:
        """A session not yet stored (:meth:`save` stores it)."""
        return Session(secrets.token_urlsafe(32), created=self._now())

    def _expiry(self, s: Session, now: int) -> int:
        idle = IDLE_SECONDS if s.access_token else PENDING_SECONDS
        return min(now + idle * 1000, s.created + LIFE_SECONDS * 1000)

    def save(self, s: Session) -> None:
        now = self._now()
        digest = _digest(s.id)
        nonce = os.urandom(12)
        payload = orjson.dumps({k: getattr(s, k) for k in SEALED})
        values = {
            "username": s.username,
            "role": s.role,
            "last_used": now,
            "expires": self._expiry(s, now),
            "sealed": nonce + AESGCM(_key(s.id)).encrypt(nonce, payload, digest.encode()),
        }
        c = web_session.c
        with self.db.write() as conn:
            if conn.execute(update(web_session).where(c.digest == digest).values(**values)).rowcount == 0:
                conn.execute(insert(web_session).values(digest=digest, created=s.created, **values))
            if now - self._pruned > TOUCH_SECONDS * 1000:
                self._pruned = now
                conn.execute(delete(web_session).where(c.expires <= now))

    def get(self, secret: str | None) -> Session | None:
        """The live session of a cookie's secret, its last use noted; None when unknown, ended or tampered."""
        if not secret or len(secret) > 100:
            return None
        digest, now, c = _digest(secret), self._now(), web_session.c
        with self.db.read() as conn:
            row = conn.execute(select(web_session).where(c.digest == digest)).first()
        if row is None or row.expires <= now:
            return None
        sealed = bytes(row.sealed)
        try:
            data = orjson.loads(AESGCM(_key(secret)).decrypt(sealed[:12], sealed[12:], digest.encode()))
        except (InvalidTag, ValueError):
            return None
        s = Session(secret, username=row.username, role=row.role, created=row.created, **data)
        if now - row.last_used > TOUCH_SECONDS * 1000:
            with self.db.write() as conn:
                conn.execute(
                    update(web_session)
                    .where(c.digest == digest, c.expires > now)
                    .values(last_used=now, expires=self._expiry(s, now))
                )
        return s

    def drop(self, s: Session) -> None:
        with self.db.write() as conn:
            conn.execute(delete(web_session).where(web_session.c.digest == _digest(s.id)))


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


#: One refresh at a time per session in this process: a refresh token is good once, so two pages loaded
#: together must not both spend it (the second spend would revoke the whole token family).
_refreshing: dict[str, asyncio.Lock] = {}


async def fresh_token(platform: Platform, request: Request, store: SessionStore, s: Session) -> str | None:
    """The session's access token, refreshed (and the session saved) when it is about to expire; None when
    that fails."""
    if not s.access_token:
        return None
    if s.expires - time.time() > 30:
        return s.access_token
    if len(_refreshing) > 1000:
        for key in [k for k, lock in _refreshing.items() if not lock.locked()]:
            del _refreshing[key]
    async with _refreshing.setdefault(s.id, asyncio.Lock()):
        latest = await run_in_threadpool(store.get, s.id)  # another page may have refreshed it meanwhile
        if latest is None or not latest.refresh_token:
            return None
        if latest.expires - time.time() <= 30:
            try:
                body = await _token_call(
                    request,
                    {"grant_type": "refresh_token", "refresh_token": latest.refresh_token, "client_id": CLIENT_ID},
                )
            except SignInError:
                return None
            _keep(platform, latest, body)
            await run_in_threadpool(store.save, latest)
        for key in SEALED:
            setattr(s, key, getattr(latest, key))
        return s.access_token


async def current_context(
    platform: Platform, request: Request, store: SessionStore, s: Session | None
) -> Context | None:
    """The signed-in user's Context, built by the platform's own context factory from the access token
    (exactly as for a /fhir request); None when nobody is signed in or the token is no longer usable."""
    if s is None:
        return None
    token = await fresh_token(platform, request, store, s)
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
