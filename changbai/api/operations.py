"""The core FHIR operations ($validate, Patient/$everything) and the table other modules add to.

Each module that offers operations exposes plain functions; :func:`core_operations` lists the core ones
and :mod:`changbai.api.app` registers every module's list on the router at start.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from changbai.errors import InvalidInput, Issue, operation_outcome
from changbai.fhir import validation
from changbai.store.search import compartment_condition

if TYPE_CHECKING:
    from changbai.api.router import FhirRequest, FhirResponse, Operation, Router
    from changbai.store.repository import Unit


def param_value(params: dict[str, Any] | None, name: str) -> Any:
    """The first value of a named parameter of a Parameters resource (value[x] or resource)."""
    for p in (params or {}).get("parameter", []):
        if p.get("name") == name:
            if "resource" in p:
                return p["resource"]
            for key, value in p.items():
                if key.startswith("value"):
                    return value
    return None


def validate_op(
    router: Router, unit: Unit, req: FhirRequest, rtype: str | None, id: str | None, params: dict[str, Any] | None
) -> FhirResponse:
    from changbai.api.router import FhirResponse

    resource = param_value(params, "resource")
    if resource is None and id is not None:
        resource = unit.read(rtype or "", id).resource
    if not isinstance(resource, dict):
        raise InvalidInput("$validate needs a resource (the body, or a 'resource' parameter)")
    if rtype is not None and resource.get("resourceType") != rtype:
        raise InvalidInput(f"$validate on {rtype} got a {resource.get('resourceType')}")
    issues = validation.validate(resource, binding_checker=router.repo.pipeline.binding_checker)
    if not issues:
        issues = [Issue("No issues found: the resource is valid R4", "informational", "information")]
    return FhirResponse(200, operation_outcome(issues))


def everything_op(
    router: Router, unit: Unit, req: FhirRequest, rtype: str | None, id: str | None, params: dict[str, Any] | None
) -> FhirResponse:
    """Patient/[id]/$everything: the patient and its compartment, paged like a search. An id that is not a
    stored Patient may be a golden record (``router.hooks.persons``): then the union of its source
    records' compartments, with the golden Patient first. Either way it runs as one search, so the
    search steps (access scope, consent) narrow it exactly as they narrow any search."""
    from sqlalchemy import or_

    from changbai.api.router import FhirResponse
    from changbai.fhir.searchparams import compartments

    assert rtype == "Patient" and id is not None
    head, ids = None, [id]
    if not unit.exists("Patient", id):
        for resolve in router.hooks.persons:
            found = resolve(unit, id)
            if found is not None:
                head, ids = found
                break
    if head is None:
        unit.read("Patient", id)  # 404 / 410 as a read would
    types = sorted({t for t, p in compartments()["Patient"].items() if p} | {"Patient"})
    query: list[tuple[str, str]] = [("_type", ",".join(types))]
    for key in ("_count", "_offset", "_cursor", "_since", "_type"):
        value = param_value(params, key)
        if value is not None:
            if key == "_since":
                query.append(("_lastUpdated", f"ge{value}"))
            elif key == "_type":
                query[0] = ("_type", value)
            else:
                query.append((key, str(value)))
    restrict = or_(*(compartment_condition("Patient", i, types) for i in ids))
    result = unit.search(None, query, restrict=restrict)
    bundle = router.searchset(result, unit.ctx, f"Patient/{id}/$everything")
    if head is not None and "Patient" in result.request.types:
        if "total" in bundle:
            bundle["total"] += 1
        if not result.request.offset and result.request.cursor is None:  # the golden record opens page one
            entry = {"fullUrl": f"{unit.ctx.base_url.rstrip('/')}/Patient/{id}", "resource": head}
            bundle["entry"] = [{**entry, "search": {"mode": "match"}}, *bundle.get("entry", [])]
    return FhirResponse(200, bundle)


def core_operations() -> list[Operation]:
    from changbai.api.router import Operation

    return [
        Operation(
            "validate",
            validate_op,
            type_level=True,
            instance=True,
            definition="http://hl7.org/fhir/OperationDefinition/Resource-validate",
        ),
        Operation(
            "everything",
            everything_op,
            types=("Patient",),
            instance=True,
            definition="http://hl7.org/fhir/OperationDefinition/Patient-everything",
        ),
        # $import writes through its own units (one per chunk), so it runs outside a write transaction.
        Operation(
            "import", import_op, system=True, definition="http://hl7.org/fhir/uv/bulkdata/OperationDefinition/import"
        ),
    ]


def import_op(
    router: Router, unit: Unit, req: FhirRequest, rtype: str | None, id: str | None, params: dict[str, Any] | None
) -> FhirResponse:
    """$import in the style of FHIR Bulk Data: NDJSON files named by ``input.url`` (file:// paths inside
    the import directory) are loaded through the bulk path, the same pipeline as every write. Answers with
    an OperationOutcome that counts what was loaded and names each refused line."""
    from pathlib import Path

    from changbai.api.router import FhirResponse
    from changbai.store.bulk import LoadReport, load_file

    if req.method != "POST":
        from changbai.errors import MethodNotAllowed

        raise MethodNotAllowed("$import changes data; use POST")
    root = (Path(router.settings.data_dir) / "import").resolve()
    files = []
    for p in (params or {}).get("parameter", []):
        if p.get("name") != "input":
            continue
        url = next(
            (
                part.get("valueUrl") or part.get("valueUri") or part.get("valueString")
                for part in p.get("part", [])
                if part.get("name") == "url"
            ),
            None,
        )
        if not isinstance(url, str) or not url.startswith("file://"):
            raise InvalidInput("Each input needs a url part with a file:// URL of an NDJSON file", expression="input")
        path = Path(url[len("file://") :]).resolve()
        if not path.is_relative_to(root) or not path.is_file():
            raise InvalidInput(f"{url} is not a file inside the import directory {root}", expression="input")
        files.append(path)
    if not files:
        raise InvalidInput("$import needs at least one input (type and url)", expression="input")
    report = LoadReport()
    for path in files:
        load_file(router.repo, path, report, ctx=unit.ctx)
    issues = [
        Issue(
            f"read {report.read}, created {report.created}, updated {report.updated}, "
            f"unchanged {report.unchanged}, refused {len(report.errors)}",
            "informational",
            "information",
        )
    ]
    issues += [
        Issue(f"{e['file']} line {e['line']}: {e['error']}", "invalid", "error", [f"{e['file']}:{e['line']}"])
        for e in report.errors[:100]
    ]
    return FhirResponse(200, operation_outcome(issues))
