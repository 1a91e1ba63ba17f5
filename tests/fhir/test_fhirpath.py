"""The compiled FHIRPath of search parameters gives what fhirpathpy (the reference implementation) gives,
for every parameter of every resource type, over the specification's own examples."""

from __future__ import annotations

import re
from collections import defaultdict

import pytest

from changbai.fhir.fhirpath import _Parser, compile_path
from changbai.fhir.searchparams import registry, split_union
from tests.api.examples import load_examples

fhirpathpy = pytest.importorskip("fhirpathpy")
from fhirpathpy.models import models  # noqa: E402

RESOLVE = re.compile(r"where\(resolve\(\) is (\w+)\)")


def test_every_search_parameter_expression_compiles_to_the_fast_path():
    slow = [
        p.expression
        for ps in registry().by_type.values()
        for p in ps.values()
        if p.expression
        for b in split_union(p.expression)
        if not _compiles(b)
    ]
    assert slow == []


def _compiles(expression: str) -> bool:
    try:
        _Parser(expression).parse()
        return True
    except Exception:
        return False


def test_compiled_expressions_agree_with_fhirpathpy():
    per_type: dict[str, list[dict]] = defaultdict(list)
    for _, resource in load_examples():
        if len(per_type[resource["resourceType"]]) < 6:
            per_type[resource["resourceType"]].append(resource)
    compared, differences = 0, []
    for rtype, resources in per_type.items():
        for code, param in registry().params(rtype).items():
            if not param.expression:
                continue
            # fhirpathpy has no resolve(): for literal references "where(resolve() is X)" means this match
            reference_expr = RESOLVE.sub(
                lambda m: f"where(reference.matches('(^|/){m.group(1)}/[^/]+(/_history/.*)?$'))", param.expression
            )
            # fhirpathpy does not treat a leading Resource./DomainResource. as a supertype of the resource
            reference_expr = re.sub(r"\b(Resource|DomainResource)\.", f"{rtype}.", reference_expr)
            for resource in resources:
                try:
                    expected = fhirpathpy.evaluate(resource, reference_expr, {}, models["r4"])
                except Exception:
                    continue  # the reference implementation cannot evaluate it
                got = [item.value for item in compile_path(param.expression)(resource)]
                compared += 1
                if _normal(got) != _normal(expected):
                    differences.append((rtype, code, resource.get("id"), got, expected))
    assert compared > 5000
    assert differences == [], "\n".join(map(str, differences[:15]))


def _normal(values: list) -> list:
    """Comparable forms: fhirpathpy gives Decimals where JSON has floats."""
    import json
    from decimal import Decimal

    def plain(v):
        if isinstance(v, Decimal):
            return float(v)
        if isinstance(v, dict):
            return {k: plain(x) for k, x in v.items()}
        if isinstance(v, list):
            return [plain(x) for x in v]
        return v

    return sorted(json.dumps(plain(v), sort_keys=True, default=str) for v in values)
