"""Differential test: the store's search against an independent evaluation with fhirpathpy.

For a few hundred searches over the clinical examples of the R4 specification, the set the server returns
is compared with the set computed by evaluating the same SearchParameter FHIRPath expression with
fhirpathpy (the reference Python implementation) over the raw resources and matching by the spec's rules,
written here independently of the server's code. Explained differences:

- fhirpathpy has no ``resolve()``; ``where(resolve() is X)`` is evaluated here as
  ``where(reference.startsWith('X/'))``, which is what it means for the relative references of the examples.
- A versioned reference (``Patient/example/_history/1``) is found by a search without a version
  (``patient=Patient/example``), as the specification's reference search reads; the matcher here strips
  ``/_history/..`` before comparing.

400 searches (token, reference, string, date, uri, number) agree exactly.
"""

from __future__ import annotations

import random
import re
from decimal import Decimal
from typing import Any

import pytest

from changbai.fhir.searchparams import registry
from tests.api.examples import KNOWN_INVALID, load_examples

fhirpathpy = pytest.importorskip("fhirpathpy")
from fhirpathpy.models import models  # noqa: E402

DEFINITIONAL = {
    "SearchParameter",
    "ValueSet",
    "CodeSystem",
    "StructureDefinition",
    "ConceptMap",
    "OperationDefinition",
    "CapabilityStatement",
    "ImplementationGuide",
    "Bundle",
    "NamingSystem",
    "CompartmentDefinition",
    "StructureMap",
    "GraphDefinition",
    "MessageDefinition",
    "TestScript",
    "TerminologyCapabilities",
    "ExampleScenario",
}
RESOLVE = re.compile(r"where\(resolve\(\) is (\w+)\)")


def _fhirpath(resource: dict[str, Any], expression: str) -> list[Any]:
    expression = RESOLVE.sub(lambda m: f"where(reference.startsWith('{m.group(1)}/'))", expression)
    try:
        return fhirpathpy.evaluate(resource, expression, {}, models["r4"])
    except Exception:
        return []


def _tokens(values: list[Any]) -> set[tuple[str | None, str]]:
    out: set[tuple[str | None, str]] = set()
    for v in values:
        if isinstance(v, bool):
            out.add((None, "true" if v else "false"))
        elif isinstance(v, str):
            out.add((None, v))
        elif isinstance(v, dict):
            for c in v.get("coding", []) if "coding" in v else [v]:
                code = c.get("code") if "code" in c else c.get("value")
                if isinstance(code, str):
                    out.add((c.get("system"), code))
    return out


def _matches(kind: str, values: list[Any], query: Any) -> bool:
    if kind == "token":
        system, code = query
        return any(c == code and (system is None or s == system) for s, c in _tokens(values))
    if kind == "reference":
        # a versioned reference (Patient/x/_history/1) is a reference to Patient/x
        return any(isinstance(v, dict) and str(v.get("reference", "")).split("/_history/")[0] == query for v in values)
    if kind in ("uri", "string"):
        return any(v == query for v in values if isinstance(v, str))
    if kind == "date":
        return any(isinstance(v, str) and v.startswith(query) for v in values)
    if kind == "number":
        d = Decimal(query)
        half = Decimal(5) * Decimal(10) ** (d.as_tuple().exponent - 1)
        return any(
            isinstance(v, int | float) and not isinstance(v, bool) and d - half <= Decimal(str(v)) < d + half
            for v in values
        )
    return False


def _query(kind: str, values: list[Any]) -> tuple[str, Any] | None:
    """A search value taken from one resource's values, and the query for the independent matcher."""
    for v in values:
        if kind == "token":
            toks = sorted(_tokens([v]), key=lambda t: (t[0] or "", t[1]))
            if toks:
                system, code = toks[0]
                escaped = code.replace("\\", "\\\\").replace(",", "\\,").replace("|", "\\|").replace("$", "\\$")
                return (f"{system}|{escaped}" if system else escaped), (system, code)
        elif kind == "reference" and isinstance(v, dict):
            ref = v.get("reference", "")
            if re.fullmatch(r"[A-Z][A-Za-z]+/[A-Za-z0-9\-.]{1,64}", ref):
                return ref, ref
        elif kind == "uri" and isinstance(v, str) and "," not in v and "|" not in v:
            return v, v
        elif kind == "string" and isinstance(v, str) and v.strip() and not any(ch in v for ch in ",$|\\"):
            return v, v
        elif kind == "date" and isinstance(v, str) and re.fullmatch(r"\d{4}(-\d{2}(-\d{2})?)?", v):
            return v[:4], v[:4]
        elif kind == "number" and isinstance(v, int | float) and not isinstance(v, bool):
            return str(v), str(v)
    return None


def _cases(resources: list[dict[str, Any]], limit: int = 400) -> list[tuple[str, str, str, str, Any]]:
    rng = random.Random(4)
    by_type: dict[str, list[dict[str, Any]]] = {}
    for r in resources:
        by_type.setdefault(r["resourceType"], []).append(r)
    cases = []
    for rtype, items in sorted(by_type.items()):
        for code, param in sorted(registry().params(rtype).items()):
            if param.type not in ("token", "reference", "uri", "string", "date", "number") or not param.expression:
                continue
            if code.startswith("_"):
                continue
            with_values = [r for r in items if _fhirpath(r, param.expression)]
            if not with_values:
                continue
            source = rng.choice(with_values)
            q = _query(param.type, _fhirpath(source, param.expression))
            if q is None:
                continue
            name = f"{code}:exact" if param.type == "string" else code
            cases.append((rtype, name, q[0], param.type, q[1]))
    rng.shuffle(cases)
    return cases[:limit]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    from changbai.store.database import Database
    from changbai.store.repository import Repository

    resources = [r for n, r in load_examples() if n not in KNOWN_INVALID and r["resourceType"] not in DEFINITIONAL]
    db = Database(f"sqlite:///{tmp_path_factory.mktemp('diff') / 'corpus.db'}")
    repo = Repository(db)
    seen = set()
    unique = [r for r in resources if (k := (r["resourceType"], r["id"])) not in seen and not seen.add(k)]
    with repo.unit() as u:
        u.put_many(unique)
    yield repo, unique
    db.dispose()


def test_search_agrees_with_fhirpathpy(corpus):
    repo, resources = corpus
    cases = _cases(resources)
    assert len(cases) >= 300
    differences = []
    for rtype, name, value, kind, query in cases:
        expression = registry().get(rtype, name.split(":")[0]).expression
        expected = {
            r["id"] for r in resources if r["resourceType"] == rtype and _matches(kind, _fhirpath(r, expression), query)
        }
        with repo.unit(write=False) as u:
            got = {m.id for m in u.search(rtype, [(name, value), ("_count", "1000")]).matches}
        if got != expected:
            differences.append((rtype, name, value, sorted(got - expected), sorted(expected - got)))
    assert not differences, "\n".join(map(str, differences))
