"""HTTP routes of the exchange module, mounted beside /fhir by ``service.install``.

- ``GET  /exchange/inbox?status=&limit=``        inbound messages and outcomes (dead letters: status=error|rejected)
- ``GET  /exchange/inbox/{id}``                  one message: raw text, problems, ACK
- ``POST /exchange/inbox/{id}/replay``           process again; the body, if any, is the corrected message
- ``POST /exchange/hl7v2``                       one HL7 v2 message over HTTP (for sites that cannot open MLLP); the
                                                 answer is the ACK, exactly as over MLLP
- ``GET  /exchange/upload/{kind}/template``      the CSV template of a record kind
- ``POST /exchange/upload/{kind}?facility=&mode=`` a CSV file; the answer is the per-row report
- ``POST /exchange/cda``                         a CDA document, stored whole with its extracted facts

Errors are OperationOutcomes with the error's HTTP status. Access control is the security module's
(these are operator and system-to-system endpoints).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from changbai.errors import ChangbaiError, InvalidInput
from changbai.exchange.intake import InboxRecord, Intake

Handler = Callable[[Request], Awaitable[Response]]

#: The services of roles.json that these routes need.
SUBMIT = "exchange.submit"
INBOX = "exchange.inbox"


def _guard(platform: Any, fn: Handler, service: str | None) -> Handler:
    """Errors become OperationOutcomes; with security on, the caller must be signed in and their role
    allowed ``service`` (roles.json); None leaves the route open (blank templates hold no personal data)."""

    async def wrapped(request: Request) -> Response:
        try:
            if service is not None:
                ctx = await platform.authenticate(request, "exchange")
                platform.require(ctx, service, f"{request.method} {request.url.path}")
            return await fn(request)
        except ChangbaiError as exc:
            return JSONResponse(exc.outcome(), exc.status, media_type="application/fhir+json")

    return wrapped


def _summary(r: InboxRecord) -> dict[str, Any]:
    return {
        "id": r.id,
        "status": r.status,
        "ack": r.ack_code,
        "event": r.event,
        "version": r.version,
        "sender": r.sender,
        "controlId": r.control_id,
        "receivedAt": r.received_at,
        "attempts": r.attempts,
        "problems": r.problems,
    }


def routes(platform: Any, intake: Intake) -> list[Route]:
    async def inbox_list(request: Request) -> Response:
        status = request.query_params.get("status") or None
        try:
            limit = int(request.query_params.get("limit", "50"))
        except ValueError:
            raise InvalidInput("limit must be a number") from None
        rows = await run_in_threadpool(intake.store.list, status, max(1, min(limit, 1000)))
        return JSONResponse({"messages": [_summary(r) for r in rows]})

    async def inbox_show(request: Request) -> Response:
        record = await run_in_threadpool(intake.store.get, _id(request))
        return JSONResponse(
            {**_summary(record), "message": record.raw.decode("utf-8", "replace"), "ackMessage": record.ack}
        )

    async def inbox_replay(request: Request) -> Response:
        body = await request.body()
        ack = await run_in_threadpool(intake.replay, _id(request), body or None)
        return Response(ack, media_type="x-application/hl7-v2+er7")

    async def hl7v2(request: Request) -> Response:
        body = await request.body()
        if not body:
            raise InvalidInput("the body must be one HL7 v2 message")
        peer = request.client.host if request.client else "http"
        # HTTP answers every message with its application ACK (original mode), batches with a batch of them
        ack = await run_in_threadpool(intake.handle, body, f"http:{peer}", False)
        return Response(ack, media_type="x-application/hl7-v2+er7")

    async def template(request: Request) -> Response:
        from changbai.exchange.csvupload import template as csv_template

        return Response(csv_template(request.path_params["kind"]), media_type="text/csv; charset=utf-8")

    async def upload(request: Request) -> Response:
        from changbai.exchange.service import upload_csv

        facility = request.query_params.get("facility")
        if not facility:
            raise InvalidInput("facility (the uploading facility's code) is required")
        mode = request.query_params.get("mode", "valid-rows")
        body = await request.body()
        result = await run_in_threadpool(upload_csv, platform, request.path_params["kind"], body, facility, mode)
        return JSONResponse(
            {
                "kind": result.kind,
                "mode": result.mode,
                "accepted": result.accepted,
                "refused": result.refused,
                "stored": bool(result.bundle["entry"]),
                "rows": [{"row": r.row, "status": r.status, "reasons": r.errors} for r in result.rows],
            }
        )

    async def cda(request: Request) -> Response:
        from changbai.exchange.service import ingest_cda

        extracted = await run_in_threadpool(ingest_cda, platform, await request.body())
        [doc] = extracted.resources("DocumentReference")
        return JSONResponse(
            {"documentReference": f"DocumentReference/{doc['id']}", "sections": extracted.sections}, 201
        )

    return [
        Route("/exchange/inbox", _guard(platform, inbox_list, INBOX), methods=["GET"]),
        Route("/exchange/inbox/{id:int}", _guard(platform, inbox_show, INBOX), methods=["GET"]),
        Route("/exchange/inbox/{id:int}/replay", _guard(platform, inbox_replay, INBOX), methods=["POST"]),
        Route("/exchange/hl7v2", _guard(platform, hl7v2, SUBMIT), methods=["POST"]),
        Route("/exchange/upload/{kind}/template", _guard(platform, template, None), methods=["GET"]),
        Route("/exchange/upload/{kind}", _guard(platform, upload, SUBMIT), methods=["POST"]),
        Route("/exchange/cda", _guard(platform, cda, SUBMIT), methods=["POST"]),
    ]


def _id(request: Request) -> int:
    return int(request.path_params["id"])
