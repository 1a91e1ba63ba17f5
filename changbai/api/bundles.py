"""Batch and transaction bundles, processed entry by entry through the same router.

A transaction is one unit of work: entries run in the order the specification prescribes (DELETE, POST,
PUT/PATCH, then GET/HEAD), ``urn:uuid`` and other fullUrls of created resources are rewritten to the ids
the server assigns, conditional references (``Patient?identifier=...``) are resolved, and any failure
rolls everything back with an OperationOutcome naming the entry. A batch runs each entry on its own.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode, urlsplit

from changbai.errors import ChangbaiError, InvalidInput, PreconditionFailed
from changbai.fhir.spec import is_resource_type
from changbai.store.pipeline import Context
from changbai.store.repository import Unit, new_id
from changbai.store.urls import parse_query

ORDER = {"DELETE": 0, "POST": 1, "PUT": 2, "PATCH": 2, "GET": 3, "HEAD": 3}
STATUS_TEXT = {200: "200 OK", 201: "201 Created", 204: "204 No Content", 304: "304 Not Modified"}


def process_bundle(router: Any, req: Any, ctx: Context) -> Any:
    from changbai.api.router import FhirResponse

    bundle = req.body
    if not isinstance(bundle, dict) or bundle.get("resourceType") != "Bundle":
        raise InvalidInput("POST to the base URL takes a Bundle of type batch or transaction")
    kind = bundle.get("type")
    if kind not in ("batch", "transaction"):
        raise InvalidInput(f"Bundle.type must be batch or transaction, not '{kind}'", expression="Bundle.type")
    entries = bundle.get("entry") or []
    if not isinstance(entries, list):
        raise InvalidInput("Bundle.entry must be an array", expression="Bundle.entry")
    requests = [_entry_request(e, i) for i, e in enumerate(entries)]
    if kind == "batch":
        responses = [_batch_entry(router, ctx, r, i) for i, r in enumerate(requests)]
        return FhirResponse(200, {"resourceType": "Bundle", "type": "batch-response", "entry": responses})
    ctx.source = ctx.source if ctx.source != "rest" else "bundle"
    with router.repo.unit(ctx) as unit:
        responses = _transaction(router, unit, requests, entries)
    return FhirResponse(200, {"resourceType": "Bundle", "type": "transaction-response", "entry": responses})


def run_transaction(router: Any, unit: Unit, bundle: dict[str, Any]) -> list[dict[str, Any]]:
    """A transaction bundle's entries processed inside ``unit`` (the caller owns the transaction, e.g. the
    HL7 v2 intake that commits the message's inbox row with its resources); returns the response entries."""
    entries = bundle.get("entry") or []
    if not isinstance(entries, list):
        raise InvalidInput("Bundle.entry must be an array", expression="Bundle.entry")
    return _transaction(router, unit, [_entry_request(e, i) for i, e in enumerate(entries)], entries)


def _entry_request(entry: Any, i: int) -> Any:
    from changbai.api.router import FhirRequest

    where = f"Bundle.entry[{i}]"
    if not isinstance(entry, dict):
        raise InvalidInput(f"{where} must be an object", expression=where)
    request = entry.get("request")
    if not isinstance(request, dict):
        raise InvalidInput(f"{where}.request is missing", expression=f"{where}.request")
    method = request.get("method")
    url = request.get("url")
    if method not in ORDER:
        raise InvalidInput(
            f"{where}.request.method '{method}' is not GET, HEAD, POST, PUT, PATCH or DELETE",
            expression=f"{where}.request.method",
        )
    if not isinstance(url, str) or not url:
        raise InvalidInput(f"{where}.request.url is missing", expression=f"{where}.request.url")
    parts = urlsplit(url)
    path = parts.path.lstrip("/")
    headers = {}
    for key, header in (
        ("ifNoneExist", "if-none-exist"),
        ("ifMatch", "if-match"),
        ("ifNoneMatch", "if-none-match"),
        ("ifModifiedSince", "if-modified-since"),
    ):
        if isinstance(request.get(key), str):
            headers[header] = request[key]
    body = entry.get("resource")
    if method == "PATCH" and isinstance(body, dict) and body.get("resourceType") == "Binary":
        import base64

        import orjson

        try:
            body = orjson.loads(base64.b64decode(body.get("data", "")))
        except Exception:
            raise InvalidInput(
                f"{where}: the PATCH Binary does not hold a JSON Patch document", expression=f"{where}.resource"
            ) from None
    if method in ("POST", "PUT") and not isinstance(body, dict):
        raise InvalidInput(f"{where}: a {method} entry needs a resource", expression=f"{where}.resource")
    return FhirRequest(method, path, parse_query(parts.query) if parts.query else [], headers, body)


def _batch_entry(router: Any, ctx: Context, req: Any, i: int) -> dict[str, Any]:
    resp = router.handle(req, ctx)
    return _response_entry(resp, ctx)


def _response_entry(resp: Any, ctx: Context) -> dict[str, Any]:
    out: dict[str, Any] = {"response": {"status": STATUS_TEXT.get(resp.status, str(resp.status))}}
    if "location" in resp.headers:
        out["response"]["location"] = resp.headers["location"]
        out["fullUrl"] = f"{ctx.base_url.rstrip('/')}/" + "/".join(resp.headers["location"].split("/")[:2])
    if "etag" in resp.headers:
        out["response"]["etag"] = resp.headers["etag"]
    if resp.body is not None:
        if resp.body.get("resourceType") == "OperationOutcome" and resp.status >= 300:
            out["response"]["outcome"] = resp.body
        else:
            out["resource"] = resp.body
    return out


def _transaction(router: Any, unit: Unit, requests: list[Any], entries: list[dict[str, Any]]) -> list[Any]:
    # 1. ids for created resources, so that references to their fullUrls can be rewritten first
    mapping: dict[str, str] = {}
    for i, (req, entry) in enumerate(zip(requests, entries, strict=True)):
        full_url = entry.get("fullUrl")
        if req.method == "POST" and isinstance(req.body, dict):
            rtype = req.path.split("/")[0]
            if req.header("if-none-exist"):
                try:
                    found = unit.find(rtype, req.header("if-none-exist"))
                except ChangbaiError as exc:
                    raise _at(exc, i) from None
                if len(found) > 1:
                    raise _at(PreconditionFailed(f"ifNoneExist matched {len(found)} resources"), i)
                if found:
                    if isinstance(full_url, str):
                        mapping[full_url] = f"{rtype}/{found[0][0]}"
                    continue
            req.assigned_id = new_id()
            if isinstance(full_url, str):
                mapping[full_url] = f"{rtype}/{req.assigned_id}"
        elif req.method == "PUT" and isinstance(full_url, str) and isinstance(req.body, dict):
            rtype, _, rest = req.path.partition("/")
            if rest:
                mapping[full_url] = f"{rtype}/{rest}"
            elif req.query:  # conditional update: the match, or the id the create will get
                try:
                    found = unit.find(rtype, urlencode(req.query))
                except ChangbaiError as exc:
                    raise _at(exc, i) from None
                if len(found) == 1:
                    target = found[0][0]
                else:
                    target = req.body.get("id") or new_id()
                    req.body = {**req.body, "id": target}
                mapping[full_url] = f"{rtype}/{target}"
    # 2. rewrite references (fullUrl mapping and conditional references) in every resource
    cache: dict[str, str] = {}
    for i, req in enumerate(requests):
        if isinstance(req.body, dict):
            try:
                _rewrite(req.body, mapping, unit, cache)
            except ChangbaiError as exc:
                raise _at(exc, i) from None
    # 3. run in the prescribed order; answer in the bundle's order
    order = sorted(range(len(requests)), key=lambda i: ORDER[requests[i].method])
    seen_targets: dict[str, int] = {}
    responses: list[Any] = [None] * len(requests)
    for i in order:
        req = requests[i]
        if req.method != "GET" and req.method != "HEAD" and not req.query:
            changed = req.path if req.method != "POST" else None
            if changed is not None:
                if changed in seen_targets:
                    raise _at(InvalidInput(f"Entries {seen_targets[changed]} and {i} both change {changed}"), i)
                seen_targets[changed] = i
        try:
            if req.method == "POST" and req.header("if-none-exist") and req.assigned_id is None:
                resp = router.handle_in(unit, _as_get_existing(req, unit))
                resp.status = 200
            else:
                resp = router.handle_in(unit, req)
        except ChangbaiError as exc:
            raise _at(exc, i) from None
        responses[i] = _response_entry(resp, unit.ctx)
    return responses


def _as_get_existing(req: Any, unit: Unit) -> Any:
    """A conditional create that matched: answer with the existing resource."""
    from changbai.api.router import FhirRequest

    rtype = req.path.split("/")[0]
    found = unit.find(rtype, req.header("if-none-exist"))
    return FhirRequest("GET", f"{rtype}/{found[0][0]}", [], {})


def _rewrite(node: Any, mapping: dict[str, str], unit: Unit, cache: dict[str, str]) -> None:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "reference" and isinstance(value, str):
                new = _resolve(value, mapping, unit, cache)
                if new is not None:
                    node[key] = new
            elif isinstance(value, dict | list):
                _rewrite(value, mapping, unit, cache)
    elif isinstance(node, list):
        for item in node:
            if isinstance(item, dict | list):
                _rewrite(item, mapping, unit, cache)


def _resolve(ref: str, mapping: dict[str, str], unit: Unit, cache: dict[str, str]) -> str | None:
    if ref in mapping:
        return mapping[ref]
    if "?" in ref and not ref.startswith("#"):
        if ref in cache:
            return cache[ref]
        rtype, _, query = ref.partition("?")
        if not is_resource_type(rtype):
            raise InvalidInput(f"Conditional reference '{ref}' names no resource type")
        found = unit.find(rtype, query)
        if len(found) != 1:
            raise PreconditionFailed(f"Conditional reference '{ref}' matched {len(found)} resources, not one")
        cache[ref] = f"{rtype}/{found[0][0]}"
        return cache[ref]
    return None


def _at(exc: ChangbaiError, i: int) -> ChangbaiError:
    """Name the failing entry in every issue of the error."""
    for issue in exc.issues:
        issue.diagnostics = f"Bundle.entry[{i}]: {issue.diagnostics}"
        issue.expression = [
            f"Bundle.entry[{i}]" + ("." + e if e and not e.startswith("Bundle") else "") for e in issue.expression
        ] or [f"Bundle.entry[{i}]"]
    return exc
