"""The federation's FHIR operations and the operator view.

- ``POST [base]/$replicate``: a child node sends a batch of changes (see :mod:`.replicate`); node
  credentials required.
- ``[base]/$cross-region-retrieve?identifier=system|value``: a resident's record held anywhere in the
  province (健康档案调阅). A county or city node forwards the question up with its node credentials and
  the clinician's context; the province answers from its replicated copy through the ordinary search and
  read pipeline, so the security module's consent and audit steps apply there as they do to any search.
- ``GET /federation/status``: the operator view (lag per link, failures) as JSON.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import httpx
import orjson
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from changbai.api.operations import param_value
from changbai.errors import ChangbaiError, InvalidInput
from changbai.exchange.federation import cursors
from changbai.exchange.federation.credentials import HEADER, NodeCredentials
from changbai.exchange.federation.node import Node
from changbai.exchange.federation.replicate import apply_bundle, head_seq
from changbai.store.repository import Repository
from changbai.store.search import compartment_condition

if TYPE_CHECKING:
    from changbai.api.router import FhirRequest, FhirResponse, Operation, Router
    from changbai.store.repository import Unit

ON_BEHALF_OF = "x-changbai-on-behalf-of"
PURPOSE = "x-changbai-purpose"


class LinkUnavailable(ChangbaiError):
    status = 502
    code = "transient"


def operations(node: Node, credentials: NodeCredentials) -> list[Operation]:
    from changbai.api.router import FhirResponse, Operation

    def replicate(
        router: Router, unit: Unit, req: FhirRequest, rtype: str | None, id: str | None, params: dict[str, Any] | None
    ) -> FhirResponse:
        sender = credentials.verify(req.headers)
        counts = apply_bundle(unit, node, sender, param_value(params, "resource"))
        body = {
            "resourceType": "Parameters",
            "parameter": [{"name": k, "valueInteger": v} for k, v in counts.items()],
        }
        return FhirResponse(200, body)

    def retrieve(
        router: Router, unit: Unit, req: FhirRequest, rtype: str | None, id: str | None, params: dict[str, Any] | None
    ) -> FhirResponse:
        identifier = param_value(params, "identifier")
        if not isinstance(identifier, str) or "|" not in identifier:
            raise InvalidInput("$cross-region-retrieve needs identifier=system|value (e.g. the resident ID)")
        if req.header(HEADER):
            unit.ctx.extras["sender_node"] = credentials.verify(req.headers)
            unit.ctx.source = "federation"
            unit.ctx.extras["on_behalf_of"] = req.header(ON_BEHALF_OF)
            unit.ctx.purpose = req.header(PURPOSE) or unit.ctx.purpose
        if not node.answers_retrieval:
            return FhirResponse(200, _forward(node, credentials, unit, identifier))
        return FhirResponse(200, _answer(router, unit, identifier))

    return [
        Operation("replicate", replicate, system=True, affects_state=True),
        Operation("cross-region-retrieve", retrieve, system=True),
    ]


def _answer(router: Router, unit: Unit, identifier: str) -> dict[str, Any]:
    from changbai.fhir.searchparams import compartments

    patients = unit.search("Patient", [("identifier", identifier), ("_count", "10")])
    types = sorted({t for t, p in compartments()["Patient"].items() if p} | {"Patient"})
    entries: list[dict[str, Any]] = []
    base = unit.ctx.base_url.rstrip("/")
    for p in patients.matches:
        result = unit.search(
            None,
            [("_type", ",".join(types)), ("_count", "1000")],
            restrict=compartment_condition("Patient", p.id, types),
        )
        entries.extend(
            {"fullUrl": f"{base}/{m.rtype}/{m.id}", "resource": m.resource, "search": {"mode": "match"}}
            for m in result.matches
        )
    bundle: dict[str, Any] = {"resourceType": "Bundle", "type": "searchset", "total": len(entries)}
    if entries:
        bundle["entry"] = entries
    return bundle


def _forward(node: Node, credentials: NodeCredentials, unit: Unit, identifier: str) -> dict[str, Any]:
    headers = {"accept": "application/fhir+json", **credentials.headers()}
    principal = unit.ctx.extras.get("on_behalf_of") or (str(unit.ctx.principal) if unit.ctx.principal else "")
    if principal:
        headers[ON_BEHALF_OF] = principal
    if unit.ctx.purpose:
        headers[PURPOSE] = unit.ctx.purpose
    try:
        r = httpx.get(
            f"{node.parent_url}/$cross-region-retrieve", params={"identifier": identifier}, headers=headers, timeout=30
        )
    except httpx.HTTPError as exc:
        raise LinkUnavailable(f"The parent node cannot be reached ({type(exc).__name__})") from None
    try:
        body = r.json() if r.content else {}
    except ValueError:
        body = {}
    if r.status_code != 200:
        if isinstance(body, dict) and body.get("resourceType") == "OperationOutcome":
            raise _outcome_error(r.status_code, body)
        raise ChangbaiError(f"The parent node refused the retrieval ({r.status_code})", status=502, code="exception")
    return dict(body)


def _outcome_error(status: int, outcome: dict[str, Any]) -> ChangbaiError:
    from changbai.errors import Issue

    issues = [
        Issue(i.get("diagnostics", ""), i.get("code", "exception"), i.get("severity", "error"))
        for i in outcome.get("issue", [])
    ]
    return ChangbaiError(issues[0].diagnostics if issues else "refused", issues=issues or None, status=status)


def link_status(repo: Repository, node: Node) -> dict[str, Any]:
    """Lag per link (outbox rows not yet sent, age of the oldest), totals and the last failure."""
    from sqlalchemy import select

    from changbai.store import schema

    head = head_seq(repo)
    links = []
    for c in cursors.all_cursors(repo.db):
        with repo.db.read() as conn:
            oldest = conn.execute(
                select(schema.outbox.c.created)
                .where(schema.outbox.c.seq > c.seq)
                .order_by(schema.outbox.c.seq)
                .limit(1)
            ).scalar()
        links.append(
            {
                "name": c.name,
                "target": node.parent_url if c.name == "uplink" else None,
                "checkpoint": c.seq,
                "head": head,
                "pending": max(0, head - c.seq),
                "lagSeconds": round(max(0, cursors.now_ms() - oldest) / 1000, 3) if oldest else 0.0,
                "sent": c.sent,
                "failuresInARow": c.failures,
                "lastSuccess": c.last_success,
                "lastError": c.last_error,
                "lastErrorAt": c.last_error_at,
            }
        )
    return {
        "node": {"id": node.id, "tier": node.tier, "region": node.region, "parent": node.parent_url or None},
        "links": links,
    }


def status_route(repo: Repository, node: Node) -> Any:
    async def status(request: Request) -> Response:
        from starlette.concurrency import run_in_threadpool

        body = await run_in_threadpool(link_status, repo, node)
        return JSONResponse(orjson.loads(orjson.dumps(body)))

    return status
