"""FHIR patch with JSON Patch (RFC 6902), applied by the mature ``jsonpatch`` library."""

from __future__ import annotations

from typing import Any

import jsonpatch

from changbai.errors import InvalidInput, Unprocessable


def apply_json_patch(resource: dict[str, Any], operations: Any) -> dict[str, Any]:
    """Apply a JSON Patch document; a malformed patch is a 400, one that cannot apply is a 422."""
    if not isinstance(operations, list) or not all(isinstance(op, dict) for op in operations):
        raise InvalidInput("A JSON Patch body must be an array of operation objects")
    try:
        patch = jsonpatch.JsonPatch(operations)
    except (jsonpatch.InvalidJsonPatch, TypeError, ValueError) as exc:
        raise InvalidInput(f"Invalid JSON Patch: {exc}") from None
    try:
        result = patch.apply(resource, in_place=False)
    except jsonpatch.JsonPatchTestFailed as exc:
        raise Unprocessable(f"JSON Patch test failed: {exc}") from None
    except (jsonpatch.JsonPatchConflict, jsonpatch.JsonPointerException, TypeError, ValueError) as exc:
        raise Unprocessable(f"JSON Patch cannot be applied: {exc}") from None
    if not isinstance(result, dict):
        raise Unprocessable("JSON Patch must leave a resource (a JSON object)")
    return result
