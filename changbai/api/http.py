"""The ASGI adapter: HTTP requests under /fhir become FhirRequests for the router; responses go back as
FHIR JSON. Content negotiation, body limits and error mapping live here and nowhere else."""

from __future__ import annotations

import uuid
from typing import Any
from urllib.parse import parse_qsl

import orjson
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from changbai import logs
from changbai.errors import (
    ChangbaiError,
    InvalidInput,
    Issue,
    NotAcceptable,
    TooLarge,
    UnsupportedMediaType,
    operation_outcome,
)
from changbai.settings import Settings
from changbai.store.pipeline import Context

log = logs.get(__name__)

FHIR_JSON = "application/fhir+json"
JSON_TYPES = ("application/fhir+json", "application/json", "application/json-patch+json", "text/json")
XML_TYPES = ("application/fhir+xml", "application/xml", "text/xml", "xml")


class FhirEndpoint:
    """Serves the FHIR base: every method and path below it goes through ``router.handle``."""

    def __init__(self, router: Any, settings: Settings, context_factory: Any = None) -> None:
        self.router = router
        self.settings = settings
        self.context_factory = context_factory

    async def handle(self, request: Request) -> Response:
        request_id = request.headers.get("x-request-id") or str(uuid.uuid4())
        try:
            response = await self._handle(request, request_id)
        except ChangbaiError as exc:
            response = _json(exc.status, exc.outcome())
        except Exception:
            log.exception("unhandled error", extra={"fields": {"request_id": request_id, "path": request.url.path}})
            response = _json(
                500,
                operation_outcome(
                    [
                        Issue(
                            f"Internal error (request {request_id}); the operators have the details",
                            "exception",
                            "fatal",
                        )
                    ]
                ),
            )
        response.headers["x-request-id"] = request_id
        return response

    async def _handle(self, request: Request, request_id: str) -> Response:
        from changbai.api.router import FhirRequest

        path = request.path_params.get("path", "")
        query = parse_qsl(request.url.query, keep_blank_values=True)
        fmt = next((v for k, v in query if k == "_format"), None)
        _negotiate(request.headers.get("accept"), fmt)
        body: Any = None
        if request.method in ("POST", "PUT", "PATCH"):
            body = await self._body(request, path)
        ctx = await request_context(request, self.settings, self.context_factory, "rest", request_id)
        method = "GET" if request.method == "HEAD" else request.method  # HEAD: a GET without the body
        freq = FhirRequest(method, path, query, {k.lower(): v for k, v in request.headers.items()}, body)
        fresp = await run_in_threadpool(self.router.handle, freq, ctx)
        headers = dict(fresp.headers)
        if request.method == "HEAD":
            return Response(status_code=fresp.status, headers=headers, media_type=f"{FHIR_JSON}; charset=utf-8")
        if "location" in headers and not headers["location"].startswith("http"):
            headers["location"] = f"{ctx.base_url.rstrip('/')}/{headers['location']}"
        if fresp.body is None:
            return Response(status_code=fresp.status, headers=headers)
        pretty = next((v for k, v in query if k == "_pretty"), "false") == "true"
        return _json(fresp.status, fresp.body, headers, pretty)

    async def _body(self, request: Request, path: str) -> Any:
        limit = self.settings.max_body_bytes
        declared = request.headers.get("content-length")
        if declared and declared.isdigit() and int(declared) > limit:
            raise TooLarge(f"The body is larger than the limit of {limit} bytes")
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise TooLarge(f"The body is larger than the limit of {limit} bytes")
            chunks.append(chunk)
        raw = b"".join(chunks)
        ctype = (request.headers.get("content-type") or "").split(";")[0].strip().lower()
        if ctype == "application/x-www-form-urlencoded" and path.endswith("_search"):
            return parse_qsl(raw.decode("utf-8", "replace"), keep_blank_values=True)
        if not raw:
            return None
        if ctype and ctype not in JSON_TYPES:
            if ctype in XML_TYPES:
                raise UnsupportedMediaType("FHIR XML is not supported; send application/fhir+json")
            raise UnsupportedMediaType(f"Unsupported content type '{ctype}'; send application/fhir+json")
        try:
            return orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise InvalidInput(f"The body is not valid JSON: {exc}") from None


async def request_context(
    request: Request, settings: Settings, context_factory: Any, source: str, request_id: str | None = None
) -> Context:
    """Who asks and from where, for any HTTP route: the modules' context factory (security) sees it."""
    base = settings.base_url.rstrip("/") if settings.base_url else f"{str(request.base_url).rstrip('/')}/fhir"
    ctx = Context(
        source=source,
        request_id=request_id or request.headers.get("x-request-id") or str(uuid.uuid4()),
        base_url=base,
        client_address=request.client.host if request.client else None,
    )
    if context_factory is not None:
        ctx = await context_factory(request, ctx)
    return ctx


def _negotiate(accept: str | None, fmt: str | None) -> None:
    wanted = (fmt or "").lower()
    if wanted:
        if wanted in ("json", "application/json", FHIR_JSON) or "json" in wanted:
            return
        raise NotAcceptable(f"_format '{fmt}' is not supported; this server speaks JSON")
    if not accept:
        return
    types = [a.split(";")[0].strip().lower() for a in accept.split(",")]
    if any(t in JSON_TYPES or t in ("*/*", "application/*") or "json" in t for t in types):
        return
    if any(t in XML_TYPES or "html" in t for t in types):
        raise NotAcceptable("Only JSON is served (application/fhir+json)")


def _json(status: int, body: Any, headers: dict[str, str] | None = None, pretty: bool = False) -> Response:
    option = orjson.OPT_INDENT_2 if pretty else 0
    return Response(
        orjson.dumps(body, option=option), status_code=status, headers=headers, media_type=f"{FHIR_JSON}; charset=utf-8"
    )
