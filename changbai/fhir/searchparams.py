"""The search parameters of every resource type, from the official R4 SearchParameter definitions.

``definitions/search-parameters.json`` holds the 1,375 SearchParameters of the R4 specification
(Bundle-searchParams.json of hl7.fhir.r4.examples 4.0.1, CC0). Each is split per base resource type:
for a resource of type T only the union branches of the expression that start at T (or at Resource /
DomainResource) are compiled, so indexing a Patient never evaluates the Observation branches of a
shared parameter such as ``clinical-patient``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from typing import Any

from changbai.fhir.fhirpath import Item, compile_path, is_of_type

#: Parameters with no FHIRPath expression handled by the search engine itself, not by indexes.
ENGINE_PARAMS = frozenset({"_content", "_text", "_query", "_filter", "_list", "_has", "_type"})


@dataclass(slots=True)
class Component:
    code: str  # the component parameter's code, e.g. "code" for Observation-code-value-quantity
    definition_url: str
    expression: str


@dataclass(slots=True)
class SearchParam:
    code: str
    type: str  # number | date | string | token | reference | composite | quantity | uri | special
    resource_type: str
    expression: str
    url: str
    targets: tuple[str, ...] = ()
    modifiers: tuple[str, ...] = ()
    components: tuple[Component, ...] = ()
    evaluate: Callable[[dict[str, Any]], list[Item]] = field(repr=False, default=lambda r: [])
    #: JSON keys of the resource that the expression starts from; a resource with none of them has no
    #: value for this parameter, so indexing skips it without evaluating (None: always evaluate).
    roots: frozenset[str] | None = None


def split_union(expression: str) -> list[str]:
    """Top-level ``|`` branches of an expression (parentheses and strings respected)."""
    parts, depth, start, quote = [], 0, 0, False
    for i, ch in enumerate(expression):
        if ch == "'":
            quote = not quote
        elif quote:
            continue
        elif ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        elif ch == "|" and depth == 0:
            parts.append(expression[start:i].strip())
            start = i + 1
    parts.append(expression[start:].strip())
    return parts


def _root(branch: str) -> str:
    return branch.lstrip("(").split(".", 1)[0].split(" ", 1)[0]


_YIELDS_WHEN_ABSENT = re.compile(r"\b(exists|empty|not|count|iif)\(|\s(and|or|xor|implies)\s")
_FIRST_STEP = re.compile(
    r"^\(*([A-Za-z]+)\.([a-z][A-Za-z0-9]*)\b(?:\s+as\s+([A-Za-z]+)\b|\.(?:as|ofType)\(([A-Za-z]+)\))?"
)


def root_keys(expression: str, resource_type: str) -> frozenset[str] | None:
    """The top-level JSON keys every branch of ``expression`` starts from (choice types expanded)."""
    from changbai.fhir.spec import spec

    if _YIELDS_WHEN_ABSENT.search(expression):  # e.g. "deceased.exists() and ...": false when absent
        return None
    node = spec().node(resource_type)
    keys: set[str] = set()
    for branch in split_union(expression):
        m = _FIRST_STEP.match(branch)
        if m is None:
            return None
        name, as_type = m.group(2), m.group(3) or m.group(4)
        if name in node.elements:
            keys.add(name)
        elif name in node.choices:
            # "value as Quantity" starts only from the choices of that type (valueQuantity)
            choices = node.choices[name]
            keys.update(c for c in choices if as_type is None or is_of_type(node.elements[c].type, as_type))
        else:
            return None
    return frozenset(keys) if keys else None


def _for_type(expression: str, resource_type: str) -> str:
    keep = [b for b in split_union(expression) if _root(b) in (resource_type, "Resource", "DomainResource")]
    return " | ".join(keep)


class Registry:
    """Search parameters by resource type and code; the url index serves composite components."""

    def __init__(self, definitions: list[dict[str, Any]], resource_types: frozenset[str]) -> None:
        self.by_type: dict[str, dict[str, SearchParam]] = {t: {} for t in resource_types}
        self.by_url: dict[str, dict[str, Any]] = {d["url"]: d for d in definitions}
        for d in definitions:
            self.add(d, resource_types)

    def add(self, d: dict[str, Any], resource_types: frozenset[str]) -> None:
        bases = d.get("base", [])
        if "Resource" in bases or "DomainResource" in bases:
            bases = sorted(resource_types)
        for base in bases:
            if base not in self.by_type:
                continue
            expression = _for_type(d.get("expression") or "", base)
            if not expression and d["code"] not in ENGINE_PARAMS:
                continue
            components = tuple(
                Component(self.by_url.get(c["definition"], {}).get("code", ""), c["definition"], c["expression"])
                for c in d.get("component", [])
            )
            self.by_type[base][d["code"]] = SearchParam(
                code=d["code"],
                type=d["type"],
                resource_type=base,
                expression=expression,
                url=d["url"],
                targets=tuple(d.get("target", ())),
                modifiers=tuple(d.get("modifier", ())),
                components=components,
                evaluate=compile_path(expression) if expression else (lambda r: []),
                roots=root_keys(expression, base) if expression else None,
            )
            self.by_url.setdefault(d["url"], d)

    def params(self, resource_type: str) -> dict[str, SearchParam]:
        return self.by_type.get(resource_type, {})

    def get(self, resource_type: str, code: str) -> SearchParam | None:
        return self.by_type.get(resource_type, {}).get(code)


@cache
def registry() -> Registry:
    from changbai.fhir.spec import spec

    text = resources.files("changbai.fhir").joinpath("definitions/search-parameters.json").read_text("utf-8")
    return Registry(json.loads(text), spec().resource_types)


@cache
def compartments() -> dict[str, dict[str, list[str]]]:
    """CompartmentDefinitions: compartment type -> resource type -> parameter codes linking it."""
    text = resources.files("changbai.fhir").joinpath("definitions/compartments.json").read_text("utf-8")
    data: dict[str, dict[str, list[str]]] = json.loads(text)
    return data
