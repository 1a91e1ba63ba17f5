"""The console's URL table, its static files and its response headers (no script or style from elsewhere)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from changbai import logs
from changbai.errors import ChangbaiError
from changbai.web.pages import TEXT, Console

if TYPE_CHECKING:
    from changbai.api.app import Platform

log = logs.get(__name__)
Endpoint = Callable[[Request], Awaitable[Response]]
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; form-action 'self'; "
    "base-uri 'none'; frame-ancestors 'none'"
)


def _wrap(console: Console, fn: Endpoint) -> Endpoint:
    """Security headers on every page; errors as a page in the user's language, never a traceback."""

    async def endpoint(request: Request) -> Response:
        try:
            resp = await fn(request)
        except ChangbaiError as exc:
            s = await console.session_of(request)
            resp = console.render(request, "message.html", status=exc.status, s=s, message=exc.message)
        except Exception:
            log.exception("console page failed", extra={"fields": {"path": request.url.path}})
            t = TEXT[console.lang(request)]
            resp = console.render(request, "message.html", status=500, s=None, message=t["error"])
        resp.headers["content-security-policy"] = CSP
        resp.headers["x-content-type-options"] = "nosniff"
        resp.headers["referrer-policy"] = "same-origin"
        resp.headers.setdefault("cache-control", "no-store")
        return resp

    return endpoint


def routes(platform: Platform) -> list[Route | Mount]:
    c = Console(platform)
    platform.web_console = c  # type: ignore[attr-defined]

    def r(path: str, fn: Endpoint, methods: tuple[str, ...] = ("GET",)) -> Route:
        return Route(path, _wrap(c, fn), methods=list(methods))

    async def to_console(request: Request) -> Response:
        return RedirectResponse("/console/", status_code=307)

    return [
        Route("/console", to_console),
        r("/console/", c.home),
        r("/console/login", c.login),
        r("/console/callback", c.callback),
        r("/console/logout", c.logout, ("POST",)),
        r("/console/find", c.find),
        r("/console/patient/{pid:str}", c.patient),
        r("/console/patient/{pid:str}/break-glass", c.break_glass, ("POST",)),
        r("/console/me", c.me),
        r("/console/me/results", c.my_results),
        r("/console/me/access", c.my_access),
        r("/console/me/consent", c.my_consent, ("GET", "POST")),
        r("/console/me/family", c.my_family),
        r("/console/review", c.review, ("GET", "POST")),
        r("/console/ops", c.ops),
        r("/console/admin", c.admin, ("GET", "POST")),
        Mount("/console/static", StaticFiles(directory=str(Path(__file__).parent / "static")), name="console-static"),
    ]
