"""The authorisation server's HTTP endpoints (OAuth 2.0 / SMART App Launch 2.x) and the FHIR endpoint's
context factory that turns a bearer token into the request's principal.

/.well-known/smart-configuration (also under /fhir), /auth/authorize (the sign-in page, authorisation
code + PKCE S256), /auth/token (authorization_code, refresh_token, client_credentials with
private_key_jwt), /auth/revoke (RFC 7009), /auth/introspect (RFC 7662), /auth/jwks, /auth/break-glass.
"""

from __future__ import annotations

import html
import threading
import time
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

import orjson
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import Route

from changbai import logs
from changbai.errors import ChangbaiError, InvalidInput, Issue, Unauthorized, operation_outcome
from changbai.security import audit as au
from changbai.security import scopes as sc
from changbai.security.accounts import SignInFailed, authenticate, get_account
from changbai.security.enforcement import Security, _who, purpose_of, smart_configuration
from changbai.security.policy import Principal, Role
from changbai.security.tokens import OAuthError, pkce_matches
from changbai.store.pipeline import Context

if TYPE_CHECKING:
    pass

log = logs.get(__name__)
ANONYMOUS_ROLE = Role("anonymous", {}, (), frozenset(), "masked", "none", False, "none")
PUBLIC_FHIR_PATHS = ("/fhir/metadata", "/fhir/.well-known/smart-configuration")
MAX_FORM_BYTES = 64 * 1024


class RateLimiter:
    """A token bucket per key (client address): ``per_minute`` requests, refilled continuously."""

    def __init__(self, per_minute: int) -> None:
        self.capacity = max(1, per_minute)
        self.rate = self.capacity / 60.0
        self._buckets: dict[str, tuple[float, float]] = {}
        self._lock = threading.Lock()

    def allow(self, key: str) -> bool:
        now = time.monotonic()
        with self._lock:
            tokens, last = self._buckets.get(key, (float(self.capacity), now))
            tokens = min(self.capacity, tokens + (now - last) * self.rate)
            if tokens < 1:
                self._buckets[key] = (tokens, now)
                return False
            self._buckets[key] = (tokens - 1, now)
            if len(self._buckets) > 10000:
                self._buckets.clear()
            return True


def fhir_base(sec: Security, request: Request) -> str:
    """The FHIR base URL exactly as the FHIR endpoint computes it (the audience of tokens)."""
    configured = sec.platform.settings.base_url
    if configured:
        return configured.rstrip("/")
    return str(request.base_url).rstrip("/") + "/fhir"


def root_url(sec: Security, request: Request) -> str:
    return fhir_base(sec, request).rsplit("/fhir", 1)[0]


class AuthServer:
    def __init__(self, sec: Security) -> None:
        self.sec = sec
        self.limiter = RateLimiter(sec.platform.settings.token_rate_per_minute)

    def routes(self) -> list[Route]:
        return [
            Route("/.well-known/smart-configuration", _safe(self.smart_config), methods=["GET"]),
            Route("/auth/jwks", _safe(self.jwks), methods=["GET"]),
            Route("/auth/authorize", _safe(self.authorize), methods=["GET", "POST"]),
            Route("/auth/token", _safe(self.token), methods=["POST"]),
            Route("/auth/revoke", _safe(self.revoke), methods=["POST"]),
            Route("/auth/introspect", _safe(self.introspect), methods=["POST"]),
            Route("/auth/break-glass", _safe(self.break_glass), methods=["POST"]),
            Route("/auth/break-glass", _safe(self.break_glass_events), methods=["GET"]),
            Route("/auth/break-glass/{id}/review", _safe(self.break_glass_review), methods=["POST"]),
            Route("/auth/done", _safe(self.done), methods=["GET"]),
        ]

    # ----------------------------------------------------------------------------- context factory
    async def context_factory(self, request: Request, ctx: Context) -> Context:
        header = request.headers.get("authorization") or ""
        if not header:
            if request.url.path.rstrip("/") in PUBLIC_FHIR_PATHS and request.method in ("GET", "HEAD"):
                ctx.principal = Principal("(anonymous)", ANONYMOUS_ROLE, [])
                return ctx
            self._audit_refusal(ctx, "no bearer token", request)
            raise Unauthorized("Sign in first: this request needs a bearer token (Authorization: Bearer ...)")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            self._audit_refusal(ctx, "malformed Authorization header", request)
            raise Unauthorized("The Authorization header must be 'Bearer <access token>'")
        try:
            claims = self.sec.tokens.verify(token.strip(), ctx.base_url.rstrip("/"))
            ctx.principal = self.sec.principal(claims)
        except ChangbaiError as exc:
            self._audit_refusal(ctx, exc.message, request)
            if isinstance(exc, Unauthorized):
                raise
            raise Unauthorized(f"The access token is not usable: {exc.message}") from None
        ctx.purpose = purpose_of(request.headers.get("x-purpose-of-use"), ctx.principal)
        return ctx

    def _audit_refusal(self, ctx: Context, reason: str, request: Request) -> None:
        row = au.event(
            "denied",
            "4",
            address=ctx.client_address or "",
            detail=f"{request.method} {request.url.path[:300]}: {reason}",
            username="(unauthenticated)",
        )
        self.sec.trail.record([row])

    # -------------------------------------------------------------------------------- discovery
    async def smart_config(self, request: Request) -> Response:
        return JSONResponse(smart_configuration(root_url(self.sec, request)))

    async def jwks(self, request: Request) -> Response:
        return JSONResponse(self.sec.keys.jwks())

    # ------------------------------------------------------------------------------- authorize
    async def authorize(self, request: Request) -> Response:
        if request.method == "GET":
            params = dict(request.query_params)
        else:
            params = await _form(request)
        lang = "en" if params.get("lang") == "en" else "zh"
        try:
            client = self._check_authorize(request, params)
        except OAuthError as exc:
            return _page(lang, params, error=exc.description, status=400)
        if request.method == "GET":
            return _page(lang, params)
        address = request.client.host if request.client else ""
        if not self.limiter.allow(address):
            return _page(lang, params, error="429", status=429)
        username = str(params.get("username", ""))[:100]
        try:
            account = authenticate(self.sec.db, username, str(params.get("password", ""))[:1000])
        except SignInFailed as exc:
            self.sec.trail.record([au.event("login", "4", username=username, address=address, detail=exc.reason)])
            return _page(lang, params, error=_t(lang, "locked" if exc.locked else "wrong"), status=401)
        requested, others = sc.parse(params.get("scope", ""))
        role = self.sec.policy.role(account["role"])
        allowed = list(role.scopes)
        if account.get("scopes"):
            allowed = [s for s in sc.parse(account["scopes"])[0]]
        if sc.within(requested, allowed):
            bad = " ".join(str(s) for s in sc.within(requested, allowed))
            self.sec.trail.record(
                [au.event("login", "4", username=username, address=address, detail=f"scope refused: {bad}")]
            )
            return _redirect_error(params, "invalid_scope", f"Scopes not allowed for this account: {bad}")
        scope = " ".join([*others, *(str(s) for s in requested)])
        code = self.sec.tokens.new_grant(
            "code",
            account["username"],
            client["username"],
            scope,
            redirect_uri=params["redirect_uri"],
            challenge=params["code_challenge"],
        )
        self.sec.trail.record(
            [
                au.event(
                    "login",
                    "0",
                    username=username,
                    role=account["role"],
                    organization=account.get("organization") or "",
                    address=address,
                    detail=f"signed in to {client['username']}",
                )
            ]
        )
        query = {"code": code}
        if params.get("state"):
            query["state"] = params["state"]
        return RedirectResponse(_join(params["redirect_uri"], query), status_code=302)

    def _check_authorize(self, request: Request, params: dict[str, Any]) -> dict[str, Any]:
        client_id = str(params.get("client_id", ""))[:100]
        client = get_account(self.sec.db, client_id) if client_id else None
        if client is None or client["kind"] != "client":
            raise OAuthError("invalid_client", "Unknown client_id")
        uris = orjson.loads(client["redirect_uris"]) if client.get("redirect_uris") else []
        if params.get("redirect_uri") not in uris:
            raise OAuthError("invalid_request", "redirect_uri is not registered for this client")
        if params.get("response_type") != "code":
            raise OAuthError("unsupported_response_type", "response_type must be code")
        if params.get("code_challenge_method") != "S256" or not params.get("code_challenge"):
            raise OAuthError("invalid_request", "PKCE is required: code_challenge with code_challenge_method=S256")
        aud = params.get("aud")
        if aud and aud.rstrip("/") != fhir_base(self.sec, request):
            raise OAuthError("invalid_request", f"aud must be this server's FHIR base {fhir_base(self.sec, request)}")
        try:
            sc.parse(params.get("scope", ""))
        except InvalidInput as exc:
            raise OAuthError("invalid_scope", exc.message) from None
        return client

    async def done(self, request: Request) -> Response:
        code = html.escape(request.query_params.get("code", ""))
        return HTMLResponse(f"<!doctype html><meta charset=utf-8><title>Changbai</title><p>code: <code>{code}</code>")

    # ----------------------------------------------------------------------------------- token
    async def token(self, request: Request) -> Response:
        address = request.client.host if request.client else "unknown"
        if not self.limiter.allow(address):
            outcome = operation_outcome([Issue("Too many token requests; slow down and retry later", "throttled")])
            return JSONResponse(
                outcome, status_code=429, headers={"retry-after": "60"}, media_type="application/fhir+json"
            )
        try:
            form = await _form(request)
            body = self._token(request, form, address)
        except OAuthError as exc:
            self.sec.trail.record(
                [
                    au.event(
                        "token",
                        "4",
                        address=address,
                        detail=f"{exc.error}: {exc.description}",
                    )
                ]
            )
            return JSONResponse(
                {"error": exc.error, "error_description": exc.description},
                status_code=exc.status,
                headers={"cache-control": "no-store"},
            )
        return JSONResponse(body, headers={"cache-control": "no-store", "pragma": "no-cache"})

    def _token(self, request: Request, form: dict[str, str], address: str) -> dict[str, Any]:
        grant = form.get("grant_type")
        audience = fhir_base(self.sec, request)
        tokens = self.sec.tokens
        if grant == "client_credentials":
            if form.get("client_assertion_type") != "urn:ietf:params:oauth:client-assertion-type:jwt-bearer":
                raise OAuthError("invalid_client", "client_credentials needs a private_key_jwt client_assertion", 401)
            token_url = root_url(self.sec, request) + "/auth/token"
            client = tokens.verify_assertion(form.get("client_assertion", ""), token_url)
            scope = self._grantable(client, form.get("scope", ""), system=True)
            try:
                access, seconds = self.sec.issue_token(
                    client, scope, audience, client_id=client["username"], purpose=form.get("purpose_of_use") or None
                )
            except ChangbaiError as exc:
                raise OAuthError("invalid_request", exc.message) from None
            self.sec.trail.record(
                [
                    au.event(
                        "token",
                        "0",
                        address=address,
                        detail="client_credentials",
                        username=client["username"],
                        role=client["role"],
                        organization=client.get("organization") or "",
                    )
                ]
            )
            return {"access_token": access, "token_type": "bearer", "expires_in": seconds, "scope": scope}
        if grant == "authorization_code":
            client_id = form.get("client_id", "")
            row = tokens.use_grant("code", form.get("code", ""), client_id)
            if row["redirect_uri"] != form.get("redirect_uri"):
                raise OAuthError("invalid_grant", "redirect_uri does not match the authorisation request")
            if not pkce_matches(form.get("code_verifier", ""), row["challenge"] or ""):
                raise OAuthError("invalid_grant", "code_verifier does not match the code_challenge (PKCE)")
            return self._user_tokens(row, audience, address, family=None)
        if grant == "refresh_token":
            client_id = form.get("client_id", "")
            row = tokens.use_grant("refresh", form.get("refresh_token", ""), client_id)
            if form.get("scope"):
                wanted, _ = sc.parse(form["scope"])
                had, _ = sc.parse(row["scope"])
                if sc.within(wanted, had):
                    raise OAuthError("invalid_scope", "A refresh may narrow the scopes, never widen them")
                row = {**row, "scope": form["scope"]}
            return self._user_tokens(row, audience, address, family=row["family"])
        raise OAuthError(
            "unsupported_grant_type", "grant_type must be authorization_code, refresh_token or client_credentials"
        )

    def _user_tokens(self, row: dict[str, Any], audience: str, address: str, family: str | None) -> dict[str, Any]:
        account = get_account(self.sec.db, row["username"])
        if account is None or not account["active"]:
            raise OAuthError("invalid_grant", "The account is no longer active")
        access, seconds = self.sec.tokens.issue(account, row["scope"], audience, client_id=row["client_id"])
        body: dict[str, Any] = {
            "access_token": access,
            "token_type": "bearer",
            "expires_in": seconds,
            "scope": row["scope"],
        }
        if "offline_access" in row["scope"].split() or "online_access" in row["scope"].split():
            body["refresh_token"] = self.sec.tokens.new_grant(
                "refresh", row["username"], row["client_id"], row["scope"], family=family
            )
        if account.get("patient") and account["role"] == "resident":
            body["patient"] = account["patient"]
        self.sec.trail.record(
            [
                au.event(
                    "token",
                    "0",
                    address=address,
                    username=account["username"],
                    role=account["role"],
                    organization=account.get("organization") or "",
                    detail="refresh_token" if family else "authorization_code",
                )
            ]
        )
        return body

    def _grantable(self, account: dict[str, Any], requested_text: str, *, system: bool) -> str:
        try:
            requested, others = sc.parse(requested_text)
        except InvalidInput as exc:
            raise OAuthError("invalid_scope", exc.message) from None
        role = self.sec.policy.role(account["role"])
        allowed = sc.parse(account["scopes"])[0] if account.get("scopes") else list(role.scopes)
        if not requested:
            requested = [s for s in allowed if s.context == "system"] if system else allowed
        bad = sc.within(requested, allowed)
        if bad:
            raise OAuthError(
                "invalid_scope", f"Scopes not allowed for {account['username']}: " + " ".join(str(s) for s in bad)
            )
        if not requested:
            raise OAuthError("invalid_scope", "No scope can be granted")
        return " ".join([*others, *(str(s) for s in requested)])

    # -------------------------------------------------------------------- revoke, introspect
    async def revoke(self, request: Request) -> Response:
        form = await _form(request)
        value = form.get("token", "")
        claims = self.sec.tokens.decode_unchecked_expiry(value) if value.count(".") == 2 else None
        if claims and claims.get("jti"):
            self.sec.tokens.revoke_jti(str(claims["jti"]), int(claims.get("exp", 0)))
        elif value:
            self.sec.tokens.revoke_refresh(value)
        return Response(status_code=200)

    async def introspect(self, request: Request) -> Response:
        caller = await self._caller(request)
        form = await _form(request)
        value = form.get("token", "")
        body: dict[str, Any] = {"active": False}
        if value.count(".") == 2:
            try:
                claims = self.sec.tokens.verify(value, None)
                body = {
                    "active": True,
                    **{
                        k: claims[k]
                        for k in ("scope", "sub", "exp", "iat", "client_id", "aud", "iss", "role")
                        if k in claims
                    },
                }
                body["token_type"] = "Bearer"
                if claims.get("patient"):
                    body["patient"] = claims["patient"]
            except ChangbaiError:
                pass
        elif value:
            row = self.sec.tokens.refresh_active(value)
            if row is not None:
                body = {
                    "active": True,
                    "scope": row["scope"],
                    "sub": row["username"],
                    "client_id": row["client_id"],
                    "exp": row["expires"] // 1000,
                    "token_type": "refresh_token",
                }
        del caller
        return JSONResponse(body, headers={"cache-control": "no-store"})

    async def _caller(self, request: Request) -> Principal:
        header = request.headers.get("authorization") or ""
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token:
            raise Unauthorized("This endpoint needs the caller's bearer token")
        return self.sec.principal(self.sec.tokens.verify(token.strip(), None))

    async def break_glass(self, request: Request) -> Response:
        try:
            p = await self._caller(request)
            body = orjson.loads(await request.body() or b"{}")
            if not isinstance(body, dict):
                raise InvalidInput("The body must be a JSON object {patient, reason}")
            address = request.client.host if request.client else ""
            expires = self.sec.break_glass(p, body.get("patient"), body.get("reason"), address)
        except orjson.JSONDecodeError:
            return _outcome(400, "The body must be JSON {patient, reason}")
        except ChangbaiError as exc:
            return JSONResponse(exc.outcome(), status_code=exc.status, media_type="application/fhir+json")
        return JSONResponse({"patient": body["patient"], "expires": expires // 1000, "flagged": True, **_who(p)})

    async def break_glass_events(self, request: Request) -> Response:
        """GET /auth/break-glass?status=open|reviewed|all: emergency accesses for their reviewers."""
        from changbai.security import reviews

        p = await self._caller(request)
        address = request.client.host if request.client else ""
        status = request.query_params.get("status", "open")
        events = reviews.list_events(self.sec, p, status, address)
        return JSONResponse({"events": events}, headers={"cache-control": "no-store"})

    async def break_glass_review(self, request: Request) -> Response:
        """POST /auth/break-glass/{id}/review {outcome: justified | not-justified, comment}."""
        from changbai.security import reviews

        p = await self._caller(request)
        address = request.client.host if request.client else ""
        raw = request.path_params["id"]
        if not raw.isdigit() or len(raw) > 18:
            raise InvalidInput(f"'{raw[:40]}' is not the number of a break-the-glass event")
        try:
            body = orjson.loads(await request.body() or b"{}")
        except orjson.JSONDecodeError:
            raise InvalidInput("The body must be JSON {outcome, comment}") from None
        if not isinstance(body, dict):
            raise InvalidInput("The body must be a JSON object {outcome, comment}")
        event = reviews.review(self.sec, p, int(raw), body.get("outcome"), body.get("comment"), address)
        return JSONResponse(event)


def _safe(endpoint: Any) -> Any:
    """Errors of the auth endpoints as OAuth JSON or OperationOutcome, never a traceback."""

    async def wrapped(request: Request) -> Response:
        try:
            return await endpoint(request)
        except OAuthError as exc:
            return JSONResponse({"error": exc.error, "error_description": exc.description}, status_code=exc.status)
        except ChangbaiError as exc:
            return JSONResponse(exc.outcome(), status_code=exc.status, media_type="application/fhir+json")
        except Exception:
            log.exception("auth endpoint failed")
            return _outcome(500, "Internal error; the operators have the details")

    return wrapped


def _outcome(status: int, message: str) -> Response:
    return JSONResponse(operation_outcome([Issue(message)]), status_code=status, media_type="application/fhir+json")


async def _form(request: Request) -> dict[str, str]:
    raw = await request.body()
    if len(raw) > MAX_FORM_BYTES:
        raise OAuthError("invalid_request", "The request is too large")
    from urllib.parse import parse_qsl

    try:
        pairs = parse_qsl(raw.decode("utf-8"), keep_blank_values=True, max_num_fields=50)
    except (UnicodeDecodeError, ValueError):
        raise OAuthError("invalid_request", "The body must be application/x-www-form-urlencoded UTF-8") from None
    form: dict[str, str] = {}
    for key, value in pairs:
        if key in form:
            raise OAuthError("invalid_request", f"Parameter '{key[:40]}' appears more than once")
        form[key] = value
    return form


def _join(uri: str, query: dict[str, str]) -> str:
    return uri + ("&" if "?" in uri else "?") + urlencode(query)


def _redirect_error(params: dict[str, Any], error: str, description: str) -> Response:
    query = {"error": error, "error_description": description}
    if params.get("state"):
        query["state"] = params["state"]
    return RedirectResponse(_join(params["redirect_uri"], query), status_code=302)


TEXT = {
    "zh": {
        "title": "长白 · 区域全民健康信息平台",
        "signin": "登录",
        "username": "用户名",
        "password": "密码",
        "asks": "申请访问",
        "wrong": "用户名或密码错误",
        "locked": "多次登录失败，账号已暂时锁定，请稍后再试",
        "other": "English",
    },
    "en": {
        "title": "Changbai · Regional Health Information Platform",
        "signin": "Sign in",
        "username": "Username",
        "password": "Password",
        "asks": "asks for access to",
        "wrong": "Wrong username or password",
        "locked": "Too many failed sign-ins: the account is locked for a while",
        "other": "中文",
    },
}


def _t(lang: str, key: str) -> str:
    return TEXT[lang][key]


def _page(lang: str, params: dict[str, Any], error: str = "", status: int = 200) -> Response:
    """The sign-in page: plain HTML and inline CSS, no script and nothing fetched from elsewhere."""
    text = TEXT[lang]
    keep = (
        "response_type",
        "client_id",
        "redirect_uri",
        "scope",
        "state",
        "aud",
        "code_challenge",
        "code_challenge_method",
    )
    hidden = "".join(
        f'<input type="hidden" name="{k}" value="{html.escape(str(params[k]))}">' for k in keep if k in params
    )
    other = "en" if lang == "zh" else "zh"
    switch = "/auth/authorize?" + urlencode({**{k: params[k] for k in keep if k in params}, "lang": other})
    err = f'<p class="err" role="alert">{html.escape(error)}</p>' if error else ""
    client = html.escape(str(params.get("client_id", "")))
    scope = html.escape(str(params.get("scope", "")))
    body = f"""<!doctype html>
<html lang="{"zh-CN" if lang == "zh" else "en"}"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1"><title>{text["signin"]} · {text["title"]}</title>
<style>body{{font-family:system-ui,"PingFang SC","Microsoft YaHei",sans-serif;background:#f3f6f8;margin:0}}
main{{max-width:24rem;margin:4rem auto;background:#fff;padding:2rem;border-radius:8px;box-shadow:0 1px 4px #0002}}
h1{{font-size:1.1rem}}label{{display:block;margin:.8rem 0 .2rem}}input[type=text],input[type=password]{{width:100%;
padding:.5rem;box-sizing:border-box}}button{{margin-top:1rem;padding:.5rem 1.5rem}}.err{{color:#b00020}}
.ask{{color:#555;font-size:.9rem}}nav{{text-align:right;font-size:.9rem}}</style></head>
<body><main><nav><a href="{html.escape(switch)}">{text["other"]}</a></nav><h1>{text["title"]}</h1>
<p class="ask">{client} {text["asks"]}: <code>{scope}</code></p>{err}
<form method="post" action="/auth/authorize">{hidden}<input type="hidden" name="lang" value="{lang}">
<label for="u">{text["username"]}</label><input id="u" type="text" name="username" autocomplete="username" required>
<label for="p">{text["password"]}</label><input id="p" type="password" name="password"
autocomplete="current-password" required><button type="submit">{text["signin"]}</button></form></main></body></html>"""
    return HTMLResponse(body, status_code=status, headers={"x-frame-options": "DENY", "cache-control": "no-store"})
