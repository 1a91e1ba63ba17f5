"""The FHIR REST router: a request (method, path, query, headers, body) in, a response out.

It knows nothing of HTTP servers: the ASGI adapter (:mod:`changbai.api.http`), batch and transaction
bundles (:mod:`changbai.api.bundles`) and tests all call :meth:`Router.handle`. Each interaction maps to
repository calls inside one unit of work.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from email.utils import formatdate
from typing import Any, Protocol
from urllib.parse import urlencode

from changbai.errors import (
    ChangbaiError,
    InvalidInput,
    Issue,
    MethodNotAllowed,
    NotFound,
    operation_outcome,
)
from changbai.fhir.spec import is_resource_type
from changbai.settings import Settings, get_settings
from changbai.store.pipeline import Context
from changbai.store.repository import Outcome, Repository, Stored, Unit, check_id, check_type
from changbai.store.search import SearchResult, compartment_condition, summarise

#: The unit of work a transaction bundle's entries share (None outside a transaction).
_open_unit: ContextVar[Unit | None] = ContextVar("changbai_open_unit", default=None)


@dataclass
class FhirRequest:
    method: str
    path: str  # relative to the FHIR base, no leading slash: "Patient/123/_history/2"
    query: list[tuple[str, str]] = field(default_factory=list)
    headers: dict[str, str] = field(default_factory=dict)  # lower-case names
    body: Any = None  # parsed JSON
    assigned_id: str | None = None  # a create's id chosen beforehand (transaction urn:uuid resolution)

    def header(self, name: str) -> str | None:
        return self.headers.get(name.lower())

    @property
    def prefer(self) -> dict[str, str]:
        out = {}
        for part in (self.header("prefer") or "").split(","):
            key, _, value = part.strip().partition("=")
            if key:
                out[key.strip()] = value.strip().strip('"')
        return out


@dataclass
class FhirResponse:
    status: int
    body: dict[str, Any] | None = None
    headers: dict[str, str] = field(default_factory=dict)


OperationHandler = Callable[["Router", Unit, FhirRequest, str | None, str | None, dict[str, Any] | None], FhirResponse]


@dataclass
class Operation:
    name: str  # without $
    handler: OperationHandler
    types: tuple[str, ...] | None = None  # None: any type
    system: bool = False
    type_level: bool = False
    instance: bool = False
    affects_state: bool = False
    definition: str | None = None  # canonical of the OperationDefinition


class RequestObserver(Protocol):
    """Sees each top-level request whole: ``enter`` before it, ``leave`` with its final response."""

    def enter(self, req: FhirRequest, ctx: Context) -> Any: ...

    def leave(self, req: FhirRequest, ctx: Context, resp: FhirResponse, token: Any) -> None: ...


BeforeHook = Callable[[FhirRequest, Context], "FhirResponse | None"]
AfterHook = Callable[[FhirRequest, Context, FhirResponse], None]
#: (unit, id) -> (a Patient to show for the id, the stored Patient ids it stands for), or None when the id
#: is not one the hook knows (the master index's golden records: one person, many source records).
PersonResolver = Callable[[Unit, str], "tuple[dict[str, Any], list[str]] | None"]


@dataclass
class RouterHooks:
    """Named points where modules plug into every request: HAPI's interceptors as plain functions.

    ``before`` runs ahead of each interaction (top-level requests and every bundle entry) and may answer
    instead or raise; ``after`` sees each successful interaction's response and may filter it in place;
    ``observers`` see each top-level request once, after errors have become responses (for audit);
    ``persons`` resolve a Patient id that is not stored (a golden record) for ``Patient/[id]/$everything``.
    """

    before: list[BeforeHook] = field(default_factory=list)
    after: list[AfterHook] = field(default_factory=list)
    observers: list[RequestObserver] = field(default_factory=list)
    persons: list[PersonResolver] = field(default_factory=list)


class Router:
    """Maps FHIR interactions to repository calls. ``base_url`` comes from the request context."""

    def __init__(self, repo: Repository, settings: Settings | None = None) -> None:
        self.repo = repo
        self.settings = settings or get_settings()
        self.operations: dict[str, list[Operation]] = {}
        self.hooks = RouterHooks()
        #: GET metadata?mode=X answered by a module (e.g. terminology -> TerminologyCapabilities)
        self.metadata_modes: dict[str, Callable[[Router, Context], dict[str, Any]]] = {}

    def register(self, op: Operation) -> None:
        self.operations.setdefault(op.name, []).append(op)

    # -------------------------------------------------------------------------------------- dispatch
    def handle(self, req: FhirRequest, ctx: Context) -> FhirResponse:
        tokens = [(o, o.enter(req, ctx)) for o in self.hooks.observers]
        try:
            resp = self._dispatch(req, ctx)
        except ChangbaiError as exc:
            resp = FhirResponse(exc.status, exc.outcome())
        for observer, token in reversed(tokens):
            observer.leave(req, ctx, resp, token)
        return resp

    def transaction(self, unit: Unit, bundle: dict[str, Any]) -> list[dict[str, Any]]:
        """Process a transaction bundle inside a unit the caller owns; returns the response entries."""
        from changbai.api.bundles import run_transaction

        return run_transaction(self, unit, bundle)

    def handle_in(self, unit: Unit, req: FhirRequest) -> FhirResponse:
        """Handle one request inside an open unit of work (a transaction bundle's entry); errors propagate."""
        token = _open_unit.set(unit)
        try:
            return self._dispatch(req, unit.ctx)
        finally:
            _open_unit.reset(token)

    @contextmanager
    def _unit(self, ctx: Context, write: bool = True) -> Iterator[Unit]:
        current = _open_unit.get()
        if current is not None:
            yield current
        else:
            with self.repo.unit(ctx, write=write) as u:
                yield u

    def _dispatch(self, req: FhirRequest, ctx: Context) -> FhirResponse:
        for before in self.hooks.before:
            answer = before(req, ctx)
            if answer is not None:
                return answer
        resp = self._interact(req, ctx)
        for after in self.hooks.after:
            after(req, ctx, resp)
        return resp

    def _interact(self, req: FhirRequest, ctx: Context) -> FhirResponse:
        parts = [p for p in req.path.strip("/").split("/") if p]
        m = req.method.upper()
        if not parts:
            if m == "POST":
                from changbai.api.bundles import process_bundle

                return process_bundle(self, req, ctx)
            if m == "GET":
                return self._search(req, ctx, None, req.query)
            raise MethodNotAllowed(f"{m} is not allowed on the base URL")
        if parts[0] == "metadata" and len(parts) == 1:
            if m != "GET":
                raise MethodNotAllowed("Use GET for metadata")
            from changbai.api.capability import capability_statement

            mode = next((v for k, v in req.query if k == "mode"), None)
            if mode in self.metadata_modes:
                return FhirResponse(200, self.metadata_modes[mode](self, ctx))
            return FhirResponse(200, capability_statement(self, ctx))
        if parts[0].startswith("$"):
            return self._operation(req, ctx, parts[0][1:], None, None)
        if parts[0] == "_history" and len(parts) == 1:
            return self._history(req, ctx, None, None)
        if parts[0] == "_search" and len(parts) == 1 and m == "POST":
            return self._search(req, ctx, None, req.query + _form(req))
        rtype = parts[0]
        if not is_resource_type(rtype):
            raise NotFound(f"Unknown resource type '{rtype}'", code="not-supported")
        if len(parts) == 1:
            return self._type_level(req, ctx, rtype, m)
        second = parts[1]
        if second == "_search" and len(parts) == 2:
            if m != "POST":
                raise MethodNotAllowed("Use POST for _search")
            return self._search(req, ctx, rtype, req.query + _form(req))
        if second == "_history" and len(parts) == 2:
            return self._history(req, ctx, rtype, None)
        if second.startswith("$"):
            return self._operation(req, ctx, second[1:], rtype, None)
        id = second
        check_id(id)
        if len(parts) == 2:
            return self._instance(req, ctx, rtype, id, m)
        third = parts[2]
        if third == "_history":
            if len(parts) == 3:
                return self._history(req, ctx, rtype, id)
            if len(parts) == 4 and m == "GET":
                with self._unit(ctx, write=False) as u:
                    return self._read_response(u.vread(rtype, id, parts[3]), req)
        if third.startswith("$") and len(parts) == 3:
            return self._operation(req, ctx, third[1:], rtype, id)
        if len(parts) == 3 and m == "GET" and (is_resource_type(third) or third == "*"):
            return self._compartment(req, ctx, rtype, id, third)
        raise NotFound(f"No FHIR interaction at '{req.path}'", code="not-supported")

    def _type_level(self, req: FhirRequest, ctx: Context, rtype: str, m: str) -> FhirResponse:
        if m == "GET":
            return self._search(req, ctx, rtype, req.query)
        if m == "POST":
            body = self._body(req, rtype)
            with self._unit(ctx) as u:
                outcome = u.create(body, id=req.assigned_id, if_none_exist=req.header("if-none-exist"))
            return self._write_response(outcome, req)
        if m == "PUT":
            if not req.query:
                raise MethodNotAllowed(f"PUT {rtype} needs an id or a search condition")
            body = self._body(req, rtype)
            with self._unit(ctx) as u:
                outcome = u.conditional_update(rtype, urlencode(req.query), body, if_match=req.header("if-match"))
            return self._write_response(outcome, req)
        if m == "DELETE":
            if not req.query:
                raise MethodNotAllowed(f"DELETE {rtype} needs a search condition")
            with self._unit(ctx) as u:
                outcomes = u.conditional_delete(rtype, urlencode(req.query))
            return self._delete_response(outcomes)
        if m == "PATCH":
            if not req.query:
                raise MethodNotAllowed(f"PATCH {rtype} needs an id or a search condition")
            with self._unit(ctx) as u:
                found = u.find(rtype, urlencode(req.query))
                if len(found) != 1:
                    from changbai.errors import PreconditionFailed

                    if not found:
                        raise NotFound(f"No {rtype} matches the condition")
                    raise PreconditionFailed(f"The condition matched {len(found)} resources")
                outcome = u.patch(rtype, found[0][0], req.body, if_match=req.header("if-match"))
            return self._write_response(outcome, req)
        raise MethodNotAllowed(f"{m} is not allowed on {rtype}")

    def _instance(self, req: FhirRequest, ctx: Context, rtype: str, id: str, m: str) -> FhirResponse:
        if m == "GET":
            with self._unit(ctx, write=False) as u:
                return self._read_response(u.read(rtype, id), req)
        if m == "PUT":
            body = self._body(req, rtype)
            with self._unit(ctx) as u:
                outcome = u.update(rtype, id, body, if_match=req.header("if-match"))
            return self._write_response(outcome, req)
        if m == "DELETE":
            with self._unit(ctx) as u:
                outcome = u.delete(rtype, id, if_match=req.header("if-match"))
            return self._delete_response([outcome])
        if m == "PATCH":
            with self._unit(ctx) as u:
                outcome = u.patch(rtype, id, req.body, if_match=req.header("if-match"))
            return self._write_response(outcome, req)
        raise MethodNotAllowed(f"{m} is not allowed on {rtype}/{id}")

    # ------------------------------------------------------------------------------------- responses
    @staticmethod
    def _body(req: FhirRequest, rtype: str) -> dict[str, Any]:
        if req.body is None:
            raise InvalidInput("The request has no body; a FHIR resource was expected")
        if not isinstance(req.body, dict):
            raise InvalidInput("The body must be a FHIR resource (a JSON object)")
        got = req.body.get("resourceType")
        if got != rtype:
            raise InvalidInput(
                f"The body is a {got or 'resource without resourceType'}, the URL says {rtype}",
                expression="resourceType",
            )
        return req.body

    def _read_response(self, stored: Stored, req: FhirRequest) -> FhirResponse:
        assert stored.resource is not None
        summary = next((v for k, v in req.query if k == "_summary"), None)
        elements = next((v for k, v in req.query if k == "_elements"), None)
        body = stored.resource
        if summary not in (None, "false") or elements:
            body = summarise(body, summary if summary != "false" else None, elements.split(",") if elements else None)
        return FhirResponse(200, body, _version_headers(stored))

    def _write_response(self, outcome: Outcome, req: FhirRequest, base: str = "") -> FhirResponse:
        stored = outcome.stored
        assert stored is not None
        headers = _version_headers(stored)
        headers["location"] = f"{stored.rtype}/{stored.id}/_history/{stored.version}"
        prefer = req.prefer.get("return", "representation")
        if prefer == "minimal":
            return FhirResponse(outcome.http_status, None, headers)
        if prefer == "OperationOutcome":
            issues = [
                Issue(
                    f"{outcome.status.capitalize()} {stored.rtype}/{stored.id} version {stored.version}",
                    "informational",
                    "information",
                )
            ]
            issues.extend(w for w in outcome.warnings if isinstance(w, Issue))
            return FhirResponse(outcome.http_status, operation_outcome(issues), headers)
        return FhirResponse(outcome.http_status, stored.resource, headers)

    @staticmethod
    def _delete_response(outcomes: list[Outcome]) -> FhirResponse:
        deleted = [o for o in outcomes if o.status == "deleted"]
        if not deleted:
            return FhirResponse(200, operation_outcome([Issue("Nothing to delete", "not-found", "information")]))
        msg = ", ".join(f"{o.stored.rtype}/{o.stored.id}" for o in deleted if o.stored)
        headers = {"etag": f'W/"{deleted[0].stored.version}"'} if len(deleted) == 1 and deleted[0].stored else {}
        return FhirResponse(200, operation_outcome([Issue(f"Deleted {msg}", "informational", "information")]), headers)

    # --------------------------------------------------------------------------------------- search
    def _search(
        self,
        req: FhirRequest,
        ctx: Context,
        rtype: str | None,
        params: list[tuple[str, str]],
        restrict: Any = None,
        path: str | None = None,
    ) -> FhirResponse:
        strict = req.prefer.get("handling", "strict") != "lenient"
        with self._unit(ctx, write=False) as u:
            result = u.search(rtype, params, strict=strict, restrict=restrict)
        return FhirResponse(200, self.searchset(result, ctx, path if path is not None else (rtype or "")))

    def _compartment(self, req: FhirRequest, ctx: Context, ctype: str, id: str, rtype: str) -> FhirResponse:
        from changbai.fhir.searchparams import compartments

        definition = compartments().get(ctype)
        if definition is None:
            raise NotFound(f"There is no {ctype} compartment", code="not-supported")
        types = [rtype] if rtype != "*" else [t for t, params in definition.items() if params]
        if rtype != "*" and not definition.get(rtype):
            raise InvalidInput(f"{rtype} is not in the {ctype} compartment")
        cond = compartment_condition(ctype, id, types)
        search_type = rtype if rtype != "*" else None
        params = req.query if rtype != "*" else [("_type", ",".join(types)), *req.query]
        return self._search(req, ctx, search_type, params, restrict=cond, path=f"{ctype}/{id}/{rtype}")

    def searchset(self, result: SearchResult, ctx: Context, path: str) -> dict[str, Any]:
        base = ctx.base_url.rstrip("/")
        request = result.request
        entries = []
        for m in result.matches:
            entries.append(
                {
                    "fullUrl": f"{base}/{m.rtype}/{m.id}",
                    "resource": summarise(m.resource, request.summary, request.elements),
                    "search": {"mode": "match"},
                }
            )
        for m in result.included:
            entries.append(
                {
                    "fullUrl": f"{base}/{m.rtype}/{m.id}",
                    "resource": summarise(m.resource, request.summary, request.elements),
                    "search": {"mode": "include"},
                }
            )
        bundle: dict[str, Any] = {"resourceType": "Bundle", "type": "searchset"}
        if (result.total is not None and request.total != "none") or (
            request.summary == "count" and result.total is not None
        ):
            bundle["total"] = result.total
        used = [(k, v) for k, v in request.used if k not in ("_offset", "_cursor")]

        def link(relation: str, paging: list[tuple[str, str]]) -> dict[str, str]:
            q = used + paging
            return {"relation": relation, "url": f"{base}/{path}" + (f"?{urlencode(q)}" if q else "")}

        here = [("_cursor", f"{request.cursor[0]}.{request.cursor[1]}")] if request.cursor else []
        links = [link("self", here + ([("_offset", str(request.offset))] if request.offset else []))]
        if request.count:
            links.append(link("first", []))
            if result.next_cursor is not None:
                links.append(link("next", [("_cursor", result.next_cursor)]))
            else:
                if request.offset > 0:
                    links.append(link("previous", [("_offset", str(max(0, request.offset - request.count)))]))
                if result.has_more:
                    links.append(link("next", [("_offset", str(request.offset + request.count))]))
        bundle["link"] = links
        if request.ignored:
            entries.append(
                {
                    "resource": operation_outcome(
                        [
                            Issue(
                                f"Ignored unknown or malformed search parameter '{n}'", "not-supported", "warning", [n]
                            )
                            for n in request.ignored
                        ]
                    ),
                    "search": {"mode": "outcome"},
                }
            )
        if entries:
            bundle["entry"] = entries
        return bundle

    # -------------------------------------------------------------------------------------- history
    def _history(self, req: FhirRequest, ctx: Context, rtype: str | None, id: str | None) -> FhirResponse:
        from changbai.store.history import history

        if rtype is not None:
            check_type(rtype)
        with self._unit(ctx, write=False) as u:
            page = history(u, rtype, id, req.query)
        base = ctx.base_url.rstrip("/")
        path = "/".join(x for x in (rtype, id, "_history") if x)
        entries = []
        for v in page.versions:
            entry: dict[str, Any] = {"fullUrl": f"{base}/{v.rtype}/{v.id}"}
            if v.resource is not None:
                entry["resource"] = v.resource
            entry["request"] = {"method": v.method, "url": f"{v.rtype}/{v.id}" if v.method != "POST" else v.rtype}
            entry["response"] = {
                "status": "201 Created" if v.method == "POST" else ("204 No Content" if v.deleted else "200 OK"),
                "etag": f'W/"{v.version}"',
                "lastModified": v.last_updated_text,
            }
            entries.append(entry)
        q = [(k, val) for k, val in req.query if k not in ("_page", "_offset")]
        links = [{"relation": "self", "url": f"{base}/{path}" + (f"?{urlencode(req.query)}" if req.query else "")}]
        if page.next_cursor is not None:
            links.append({"relation": "next", "url": f"{base}/{path}?{urlencode([*q, ('_page', page.next_cursor)])}"})
        bundle: dict[str, Any] = {"resourceType": "Bundle", "type": "history", "link": links}
        if page.total is not None:
            bundle["total"] = page.total
        if entries:
            bundle["entry"] = entries
        return FhirResponse(200, bundle)

    # ----------------------------------------------------------------------------------- operations
    def _operation(self, req: FhirRequest, ctx: Context, name: str, rtype: str | None, id: str | None) -> FhirResponse:
        candidates = self.operations.get(name, [])
        level = "instance" if id else ("type" if rtype else "system")
        for op in candidates:
            if op.types is not None and rtype is not None and rtype not in op.types:
                continue
            if (
                (level == "instance" and op.instance)
                or (level == "type" and op.type_level)
                or (level == "system" and op.system)
            ):
                if req.method not in ("GET", "POST"):
                    raise MethodNotAllowed(f"${name} takes GET or POST")
                if req.method == "GET" and op.affects_state:
                    raise MethodNotAllowed(f"${name} changes data; use POST")
                params = _parameters(req)
                with self._unit(ctx, write=op.affects_state) as u:
                    return op.handler(self, u, req, rtype, id, params)
        where = f"{rtype}/{id}" if id else rtype or "the system level"
        raise NotFound(f"Operation ${name} is not supported on {where}", code="not-supported")


def _parameters(req: FhirRequest) -> dict[str, Any] | None:
    """Operation input: a Parameters body (POST) or query parameters (GET), as a Parameters resource."""
    if req.method == "POST" and req.body is not None:
        body = req.body
        if not isinstance(body, dict):
            raise InvalidInput("Operation input must be a Parameters resource")
        if body.get("resourceType") != "Parameters":
            return {"resourceType": "Parameters", "parameter": [{"name": "resource", "resource": body}]}
        return body
    params = [{"name": k, "valueString": v} for k, v in req.query]
    return {"resourceType": "Parameters", "parameter": params} if params else None


def _form(req: FhirRequest) -> list[tuple[str, str]]:
    """The form-encoded body of a POST _search (already parsed by the adapter into req.body)."""
    if isinstance(req.body, list):
        return [(str(k), str(v)) for k, v in req.body]
    return []


def _version_headers(stored: Stored) -> dict[str, str]:
    return {"etag": stored.etag, "last-modified": formatdate(stored.last_updated / 1000, usegmt=True)}
