"""The federation's FHIR operations and the operator view.

- ``POST [base]/$replicate``: a child node sends a batch of changes (see :mod:`.replicate`). With
  security on, only a registered node client (SMART Backend Services token, role ``node``) whose scopes
  cover the batch's writes may call it.
- ``[base]/Patient/$cross-region-retrieve?identifier=system|value``: a resident's record held anywhere in
  the province (健康档案调阅). A county or city node forwards the question up with its own bearer token and
  the signed-in user it asks for (:data:`ON_BEHALF_OF`); the province runs it through the ordinary search
  and read pipeline *as that user*, so the security module's consent, reach and audit rules apply there as
  they do to any search. Type-level on Patient, so that clinicians (not only operators) may call it.
- ``GET /federation/status``: the operator view (lag per link, failures) as JSON; with security on, for
  roles with the ``federation.status`` service.
"""

from __future__ import annotations

import base64
from typing import TYPE_CHECKING, Any

import httpx
import orjson
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from changbai.api.operations import param_value
from changbai.errors import ChangbaiError, Forbidden, InvalidInput
from changbai.exchange.federation import cursors
from changbai.exchange.federation.credentials import (
    NODE_ROLE,
    CredentialsUnavailable,
    NodeCredentials,
    sending_node,
)
from changbai.exchange.federation.node import Node
from changbai.exchange.federation.replicate import apply_bundle, head_seq
from changbai.store.repository import Repository
from changbai.store.search import compartment_condition

if TYPE_CHECKING:
    from changbai.api.app import Platform
    from changbai.api.router import FhirRequest, FhirResponse, Operation, Router
    from changbai.store.repository import Unit

#: The user a node asks for: base64url JSON of their claims (sub, role, scope, organization, ..., node).
ON_BEHALF_OF = "x-changbai-on-behalf-of"
PURPOSE = "x-changbai-purpose"
#: Claims of a signed-in user that travel with a forwarded retrieval.
FORWARDED_CLAIMS = ("sub", "role", "scope", "organization", "practitioner", "patient", "region", "node")


class LinkUnavailable(ChangbaiError):
    status = 502
    code = "transient"


def operations(platform: Platform, node: Node, credentials: NodeCredentials | None) -> list[Operation]:
    from changbai.api.router import FhirResponse, Operation

    def security_on() -> bool:
        return platform.security is not None

    def replicate(
        router: Router, unit: Unit, req: FhirRequest, rtype: str | None, id: str | None, params: dict[str, Any] | None
    ) -> FhirResponse:
        bundle = param_value(params, "resource")
        sender = sending_node(unit.ctx, security_on(), _writes(bundle))
        counts = apply_bundle(unit, node, sender, bundle)
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
        ctx = unit.ctx
        p = ctx.principal
        from_node = (p is not None and p.kind == "client" and p.role.name == NODE_ROLE) or (
            not security_on() and bool(req.header(ON_BEHALF_OF))
        )
        if from_node:
            ctx.extras["sender_node"] = sending_node(ctx, security_on())
            ctx.source = "federation"
            ctx.purpose = req.header(PURPOSE) or ctx.purpose
            ctx.extras["on_behalf_of"] = req.header(ON_BEHALF_OF) or ""
            if security_on() and node.answers_retrieval:
                ctx.principal = _forwarded_principal(platform, ctx.extras["on_behalf_of"])
        elif p is not None:
            ctx.extras["on_behalf_of"] = encode_user(p, node.id)
        if not node.answers_retrieval:
            if credentials is None:
                raise LinkUnavailable("This node has no parent to forward the retrieval to")
            return FhirResponse(200, _forward(node, credentials, unit, identifier))
        return FhirResponse(200, _answer(router, unit, identifier))

    return [
        Operation("replicate", replicate, system=True, affects_state=True),
        Operation("cross-region-retrieve", retrieve, types=("Patient",), type_level=True),
    ]


def _writes(bundle: Any) -> list[tuple[str, str]]:
    """The (type, SMART letter) pairs a replication batch needs: PUT may create or update, DELETE deletes."""
    if not isinstance(bundle, dict) or not isinstance(bundle.get("entry", []), list):
        return []
    needed: set[tuple[str, str]] = set()
    for entry in bundle.get("entry") or []:
        request = entry.get("request") if isinstance(entry, dict) else None
        if not isinstance(request, dict):
            continue
        rtype = str(request.get("url", "")).partition("/")[0]
        if not rtype:
            continue
        letters = "d" if request.get("method") == "DELETE" else "cu"
        needed |= {(rtype, letter) for letter in letters}
    return sorted(needed)


def encode_user(p: Any, node_id: str) -> str:
    """The signed-in user's claims for the parent, as a header value."""
    claims = {
        "sub": p.username,
        "role": p.role.name,
        "scope": " ".join(str(s) for s in p.scopes),
        "organization": p.organization,
        "practitioner": p.practitioner,
        "patient": p.patient,
        "region": p.region,
        "node": node_id,
    }
    raw = orjson.dumps({k: v for k, v in claims.items() if v})
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _forwarded_principal(platform: Platform, header: str) -> Any:
    """The user a node asks for, as a principal of this node's security module (same consent, reach and
    audit). The asking node vouches for them; roles that see everything are never accepted this way."""
    if not header:
        raise Forbidden("Cross-region retrieval is answered for a signed-in user; the asking node named none")
    try:
        claims = orjson.loads(base64.urlsafe_b64decode(header + "=" * (-len(header) % 4)))
    except (ValueError, orjson.JSONDecodeError):
        raise InvalidInput(f"The {ON_BEHALF_OF} header is not base64url JSON") from None
    if (
        not isinstance(claims, dict)
        or not isinstance(claims.get("sub"), str)
        or not isinstance(claims.get("role"), str)
    ):
        raise InvalidInput(f"The {ON_BEHALF_OF} header needs the user's sub and role")
    claims = {k: v for k, v in claims.items() if k in FORWARDED_CLAIMS and isinstance(v, str)}
    try:
        role = platform.security.policy.role(claims["role"])
    except InvalidInput:
        raise Forbidden(f"The role '{claims['role'][:40]}' is not known here") from None
    if "all" in role.reach or role.name == NODE_ROLE:
        raise Forbidden(f"A forwarded {role.name} may not retrieve across regions; sign in at the province")
    claims["sub"] = f"{claims['sub']}@{claims.get('node', 'node')}"
    return platform.security.principal({**claims, "kind": "user"})


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
    headers = {"accept": "application/fhir+json"}
    if unit.ctx.extras.get("on_behalf_of"):
        headers[ON_BEHALF_OF] = unit.ctx.extras["on_behalf_of"]
    if unit.ctx.purpose:
        headers[PURPOSE] = unit.ctx.purpose
    url = f"{node.parent_url}/Patient/$cross-region-retrieve"
    for attempt in (1, 2):
        try:
            r = httpx.get(
                url, params={"identifier": identifier}, headers={**headers, **credentials.headers()}, timeout=30
            )
        except CredentialsUnavailable as exc:
            raise LinkUnavailable(f"No token from the parent node: {exc}") from None
        except httpx.HTTPError as exc:
            raise LinkUnavailable(f"The parent node cannot be reached ({type(exc).__name__})") from None
        if r.status_code == 401 and attempt == 1:
            credentials.invalidate()  # revoked or the parent's keys rotated: one fresh token, one retry
            continue
        break
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


def link_status(repo: Repository, node: Node, live: dict[str, dict[str, Any]] | None = None) -> dict[str, Any]:
    """Lag per link (outbox rows not yet sent, age of the oldest), totals and the last failure. ``live``:
    what the running transports add per link (the JetStream stream, batches waiting there)."""
    from sqlalchemy import select

    from changbai.exchange.federation.inbound import PREFIX
    from changbai.store import schema

    head = head_seq(repo)
    live = live or {}
    links = []
    for c in cursors.all_cursors(repo.db):
        if c.name.startswith(PREFIX):  # batches taken from JetStream: the checkpoint is a stream sequence
            links.append(
                {
                    "name": c.name,
                    "source": c.name[len(PREFIX) :],
                    "checkpoint": c.seq,
                    "sent": c.sent,
                    "failuresInARow": c.failures,
                    "lastSuccess": c.last_success,
                    "lastError": c.last_error,
                    "lastErrorAt": c.last_error_at,
                    **live.get(c.name, {}),
                }
            )
            continue
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
                **live.get(c.name, {}),
            }
        )
    return {
        "node": {"id": node.id, "tier": node.tier, "region": node.region, "parent": node.parent_url or None},
        "links": links,
    }


def live_status(platform: Platform) -> dict[str, dict[str, Any]]:
    """What the running uplink's transport and the JetStream receiver say of their links."""
    from changbai.exchange.federation.worker import UPLINK

    out: dict[str, dict[str, Any]] = {}
    uplink = getattr(platform, "uplink", None)
    if uplink is not None:
        out[UPLINK] = uplink.transport.status()
    receiver = getattr(platform, "receiver", None)
    if receiver is not None:
        out.update(receiver.status())
    return out


def status_route(platform: Platform, node: Node) -> Any:
    async def status(request: Request) -> Response:
        from starlette.concurrency import run_in_threadpool

        try:
            ctx = await platform.authenticate(request, "federation")
            platform.require(ctx, "federation.status", "GET /federation/status")
        except ChangbaiError as exc:
            return JSONResponse(exc.outcome(), exc.status, media_type="application/fhir+json")
        body = await run_in_threadpool(link_status, platform.repo, node, live_status(platform))
        return JSONResponse(orjson.loads(orjson.dumps(body)))

    return status
