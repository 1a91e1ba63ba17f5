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
    issues = validation.validate(resource)
    if not issues:
        issues = [Issue("No issues found: the resource is valid R4", "informational", "information")]
    return FhirResponse(200, operation_outcome(issues))


def everything_op(
    router: Router, unit: Unit, req: FhirRequest, rtype: str | None, id: str | None, params: dict[str, Any] | None
) -> FhirResponse:
    """Patient/[id]/$everything: the patient and its compartment, paged like a search."""
    from changbai.api.router import FhirResponse
    from changbai.fhir.searchparams import compartments

    assert rtype == "Patient" and id is not None
    unit.read("Patient", id)  # 404 / 410 as a read would
    types = sorted({t for t, p in compartments()["Patient"].items() if p} | {"Patient"})
    query: list[tuple[str, str]] = [("_type", ",".join(types))]
    for key in ("_count", "_offset", "_since", "_type"):
        value = param_value(params, key)
        if value is not None:
            if key == "_since":
                query.append(("_lastUpdated", f"ge{value}"))
            elif key == "_type":
                query[0] = ("_type", value)
            else:
                query.append((key, str(value)))
    result = unit.search(None, query, restrict=compartment_condition("Patient", id, types))
    bundle = router.searchset(result, unit.ctx, f"Patient/{id}/$everything")
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
    ]
