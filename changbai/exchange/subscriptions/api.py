"""HTTP for subscriptions: the websocket binding token operation and the operator API.

- ``GET /subscriptions/status``: queue depth, delivered, dead letters, oldest pending, last error.
- ``GET /subscriptions/dead-letters[?subscription=id]``: the dead-letter list.
- ``POST /subscriptions/dead-letters/replay`` with ``{"ids": [...]}`` and/or ``{"subscription": id}``
  (empty body: all): back into the queue.

With security on, the operator API needs a bearer token of a role with the ``subscriptions.admin``
service (roles.json: operator).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import orjson
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from changbai.errors import ChangbaiError
from changbai.exchange.subscriptions import admin
from changbai.exchange.subscriptions.channels import WebSocketHub
from changbai.store.database import Database

if TYPE_CHECKING:
    from changbai.api.router import FhirRequest, FhirResponse, Operation, Router
    from changbai.store.repository import Unit


def ws_binding_token(hub: WebSocketHub) -> Operation:
    from changbai.api.router import FhirResponse, Operation
    from changbai.fhir.values import ms_to_instant

    def handler(
        router: Router, unit: Unit, req: FhirRequest, rtype: str | None, id: str | None, params: dict[str, Any] | None
    ) -> FhirResponse:
        assert id is not None
        resource = unit.read("Subscription", id).resource or {}
        if (resource.get("channel") or {}).get("type") != "websocket":
            from changbai.errors import InvalidInput

            raise InvalidInput(f"Subscription/{id} does not use the websocket channel")
        token, expires = hub.token(id)
        base = unit.ctx.base_url.rstrip("/")
        root = base[: -len("/fhir")] if base.endswith("/fhir") else base
        ws_url = root.replace("https://", "wss://").replace("http://", "ws://") + "/subscriptions/ws"
        body = {
            "resourceType": "Parameters",
            "parameter": [
                {"name": "token", "valueString": token},
                {"name": "expiration", "valueDateTime": ms_to_instant(int(expires * 1000))},
                {"name": "subscription", "valueString": f"Subscription/{id}"},
                {"name": "websocket-url", "valueUrl": ws_url},
            ],
        }
        return FhirResponse(200, body)

    return Operation("get-ws-binding-token", handler, types=("Subscription",), instance=True)


def operator_routes(platform: Any) -> list[Route]:
    """With security on, these need a signed-in caller whose role has the ``subscriptions.admin`` service."""
    db: Database = platform.db

    def guarded(fn: Any) -> Any:
        async def wrapped(request: Request) -> Response:
            try:
                ctx = await platform.authenticate(request, "subscriptions")
                platform.require(ctx, "subscriptions.admin", f"{request.method} {request.url.path}")
            except ChangbaiError as exc:
                return JSONResponse(exc.outcome(), exc.status, media_type="application/fhir+json")
            response: Response = await fn(request)
            return response

        return wrapped

    async def status(request: Request) -> Response:
        return JSONResponse(await run_in_threadpool(admin.status, db))

    async def dead(request: Request) -> Response:
        sub = request.query_params.get("subscription")
        return JSONResponse({"deadLetters": await run_in_threadpool(admin.dead_letters, db, sub)})

    async def replay(request: Request) -> Response:
        raw = await request.body()
        try:
            body = orjson.loads(raw) if raw else {}
        except orjson.JSONDecodeError:
            return JSONResponse({"error": 'the body must be JSON: {"ids": [...], "subscription": id}'}, 400)
        ids = body.get("ids") if isinstance(body, dict) else None
        if ids is not None and not (isinstance(ids, list) and all(isinstance(i, int) for i in ids)):
            return JSONResponse({"error": "ids must be a list of dead-letter ids (integers)"}, 400)
        sub = body.get("subscription") if isinstance(body, dict) else None
        count = await run_in_threadpool(admin.replay, db, ids, sub)
        return JSONResponse({"replayed": count})

    return [
        Route("/subscriptions/status", guarded(status), methods=["GET"]),
        Route("/subscriptions/dead-letters", guarded(dead), methods=["GET"]),
        Route("/subscriptions/dead-letters/replay", guarded(replay), methods=["POST"]),
    ]
