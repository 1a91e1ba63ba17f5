"""The CapabilityStatement, generated from what the server really has: types, parameters, operations."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from changbai import FHIR_VERSION, __version__
from changbai.fhir.searchparams import registry
from changbai.fhir.spec import spec
from changbai.store.indexer import COLUMN_PARAMS
from changbai.store.pipeline import Context

if TYPE_CHECKING:
    from changbai.api.router import Router

INTERACTIONS = [
    "read",
    "vread",
    "update",
    "patch",
    "delete",
    "history-instance",
    "history-type",
    "create",
    "search-type",
]
SEARCHABLE = frozenset({"string", "token", "reference", "date", "number", "quantity", "uri", "composite"})

_cache: dict[tuple[str, int], dict[str, Any]] = {}


def capability_statement(router: Router, ctx: Context) -> dict[str, Any]:
    key = (ctx.base_url, sum(len(v) for v in router.operations.values()))
    if key not in _cache:
        _cache[key] = _build(router, ctx.base_url)
    return _cache[key]


def _build(router: Router, base_url: str) -> dict[str, Any]:
    resources = []
    for rtype in sorted(spec().resource_types):
        params = [
            {"name": code, "definition": p.url, "type": p.type}
            for code, p in sorted(registry().params(rtype).items())
            if p.type in SEARCHABLE and (p.expression or code in COLUMN_PARAMS)
        ]
        ops = [
            {"name": name, "definition": op.definition or f"{base_url}/OperationDefinition/{name}"}
            for name, defs in sorted(router.operations.items())
            for op in defs
            if (op.type_level or op.instance) and (op.types is None or rtype in op.types)
        ]
        entry: dict[str, Any] = {
            "type": rtype,
            "profile": f"http://hl7.org/fhir/StructureDefinition/{rtype}",
            "interaction": [{"code": c} for c in INTERACTIONS],
            "versioning": "versioned-update",
            "readHistory": True,
            "updateCreate": True,
            "conditionalCreate": True,
            "conditionalRead": "not-supported",
            "conditionalUpdate": True,
            "conditionalDelete": "single",
            "referencePolicy": ["literal", "logical"],
            "searchInclude": ["*"],
            "searchRevInclude": ["*"],
            "searchParam": params,
        }
        if ops:
            entry["operation"] = ops
        resources.append(entry)
    system_ops = [
        {"name": name, "definition": op.definition or f"{base_url}/OperationDefinition/{name}"}
        for name, defs in sorted(router.operations.items())
        for op in defs
        if op.system
    ]
    rest: dict[str, Any] = {
        "mode": "server",
        "resource": resources,
        "interaction": [
            {"code": "transaction"},
            {"code": "batch"},
            {"code": "search-system"},
            {"code": "history-system"},
        ],
        "searchParam": [{"name": "_type", "type": "token"}],
    }
    if system_ops:
        rest["operation"] = system_ops
    return {
        "resourceType": "CapabilityStatement",
        "status": "active",
        "date": "2026-11-23",
        "publisher": "Changbai",
        "kind": "instance",
        "software": {"name": "Changbai", "version": __version__},
        "implementation": {"description": "Changbai regional health information platform", "url": base_url},
        "fhirVersion": FHIR_VERSION,
        "format": ["application/fhir+json", "application/json"],
        "patchFormat": ["application/json-patch+json"],
        "rest": [rest],
    }
