"""The official R4 examples (npm hl7.fhir.r4.examples 4.0.1), as the tests use them."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = Path(os.environ.get("CHANGBAI_FHIR_EXAMPLES", ROOT / ".cache/hl7.fhir.r4.examples/package"))

#: Examples of the package that are not valid R4, each with the reason (checked by the tests: these must be
#: refused with that reason, every other example must be accepted).
KNOWN_INVALID = {
    "ImplementationGuide-fhir.json": "ImplementationGuide.name and .status are required (min 1) but missing",
    "ig-r4.json": "ImplementationGuide.name and .status are required (min 1) but missing",
    "Questionnaire-qs1.json": "Questionnaire.item.linkId is required (min 1) but missing in nested items",
    "SearchParameter-questionnaireresponse-extensions-QuestionnaireResponse-item-subject.json": (
        "its id has 67 characters; a resource id has at most 64"
    ),
    **{
        f"SearchParameter-{vs}-extensions-{t}-{p}.json": "SearchParameter.base is required (min 1) but missing"
        for vs, t in (("codesystem", "CodeSystem"), ("valueset", "ValueSet"))
        for p in ("author", "effective", "end", "keyword", "workflow")
    },
}


def load_examples() -> list[tuple[str, dict[str, Any]]]:
    if not (EXAMPLES / "package.json").exists():
        pytest.skip(f"hl7.fhir.r4.examples not found at {EXAMPLES} (./run test fetches it with npm)")
    out = []
    for path in sorted(EXAMPLES.glob("*.json")):
        if path.name == "package.json":
            continue
        resource = json.loads(path.read_text(encoding="utf-8"))
        if "resourceType" in resource:
            out.append((path.name, resource))
    return out


def without_meta_versioning(resource: dict[str, Any]) -> dict[str, Any]:
    out = dict(resource)
    meta = {k: v for k, v in (out.pop("meta", None) or {}).items() if k not in ("versionId", "lastUpdated")}
    if meta:
        out["meta"] = meta
    return out
