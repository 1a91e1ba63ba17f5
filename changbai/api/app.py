"""The platform as one ASGI application: the FHIR endpoint and whatever the modules mount beside it."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import Route

from changbai.api.http import FhirEndpoint, request_context
from changbai.api.operations import core_operations
from changbai.api.router import Router
from changbai.settings import Settings, get_settings
from changbai.store.database import Database
from changbai.store.pipeline import Context
from changbai.store.repository import Repository

#: Functions that extend a freshly built platform (add routes, pipeline steps, operations). Modules
#: append to this list from their ``install`` functions; see :func:`create_app`.
Extension = Callable[["Platform"], None]


class Platform:
    """Everything one running node holds: settings, database, repository, router, ASGI app."""

    def __init__(self, settings: Settings, db: Database | None = None) -> None:
        self.settings = settings
        self.db = db or Database(settings.resolved_database_url())
        self.repo = Repository(self.db)
        self.router = Router(self.repo, settings)
        for op in core_operations():
            self.router.register(op)
        self.routes: list[Any] = []
        self.context_factory: Any = None
        self.on_startup: list[Callable[[], Any]] = []
        self.on_shutdown: list[Callable[[], Any]] = []
        #: The security module's enforcement object, when it is installed and on.
        self.security: Any = None

    async def authenticate(self, request: Request, source: str) -> Context:
        """The caller of a route beside /fhir, as the FHIR endpoint would see them (401 when security is
        on and there is no valid token)."""
        return await request_context(request, self.settings, self.context_factory, source)

    def require(self, ctx: Context, service: str, what: str = "") -> None:
        """Refuse (403, audited) unless the caller's role may use ``service`` (roles.json "services")."""
        if self.security is not None:
            self.security.require_service(ctx, service, what)

    def build_app(self) -> Starlette:
        endpoint = FhirEndpoint(self.router, self.settings, self.context_factory)
        methods = ["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD"]
        routes = [
            Route("/", _home),
            Route("/healthz", _health),
            Route("/fhir", endpoint.handle, methods=methods),
            Route("/fhir/{path:path}", endpoint.handle, methods=methods),
            *self.routes,
        ]
        app = Starlette(routes=routes, lifespan=self._lifespan)
        app.state.platform = self
        return app

    @asynccontextmanager
    async def _lifespan(self, app: Starlette) -> AsyncIterator[None]:
        for start in self.on_startup:
            result = start()
            if hasattr(result, "__await__"):
                await result
        try:
            yield
        finally:
            for stop in reversed(self.on_shutdown):
                result = stop()
                if hasattr(result, "__await__"):
                    await result


async def _home(request: Request) -> Response:
    return RedirectResponse("/fhir/metadata")


async def _health(request: Request) -> Response:
    return JSONResponse({"status": "ok"})


def create_platform(
    settings: Settings | None = None, db: Database | None = None, extensions: list[Extension] | None = None
) -> Platform:
    platform = Platform(settings or get_settings(), db)
    for extend in extensions if extensions is not None else default_extensions():
        extend(platform)
    return platform


def default_extensions() -> list[Extension]:
    """The modules installed on every node. Each entry is a module's ``install(platform)`` function."""
    from changbai import security, web
    from changbai.exchange import federation, service, subscriptions
    from changbai.identity import install as identity
    from changbai.terminology import service as terminology

    return [
        security.install,
        identity.install,
        terminology.install,
        service.install,
        federation.install,
        subscriptions.install,
        web.install,
    ]


def create_app(settings: Settings | None = None) -> Starlette:
    return create_platform(settings).build_app()
