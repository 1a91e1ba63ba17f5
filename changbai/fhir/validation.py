"""Structural validation of FHIR R4 JSON against the official StructureDefinitions.

Checks what makes a resource valid R4 JSON: known resource type, no unknown elements, cardinality
(single values vs arrays, required elements), primitive JSON types and lexical forms (the spec's regexes),
the ``_element`` companions of primitives, no empty objects/arrays/strings, one type per choice element,
contained and nested resources. Each issue names its place as a FHIRPath-like expression.

Terminology bindings are checked by a ``binding_checker`` the caller passes (the terminology module
provides one), so this module stays below terminology in the dependency order.
"""

from __future__ import annotations

from collections.abc import Callable
from contextvars import ContextVar
from typing import Any

from changbai.errors import InvalidInput, InvalidResource, Issue
from changbai.fhir.spec import Element, Node, spec
from changbai.fhir.values import date_range

#: (strength, valueset_url, value, path) -> Issue | None; the terminology module makes one per store.
BindingChecker = Callable[[str, str, Any, str], "Issue | None"]
_checker: ContextVar[BindingChecker | None] = ContextVar("changbai_binding_checker", default=None)

MAX_ISSUES = 100
_CODING_TYPES = ("code", "Coding", "CodeableConcept")


def validate(resource: Any, *, path: str | None = None, binding_checker: BindingChecker | None = None) -> list[Issue]:
    """All issues of a resource (errors and warnings). An empty list means valid."""
    issues: list[Issue] = []
    token = _checker.set(binding_checker)
    try:
        _resource(resource, path, issues)
    finally:
        _checker.reset(token)
    return issues


def check(resource: Any, *, binding_checker: BindingChecker | None = None) -> list[Issue]:
    """Raise :class:`InvalidResource` when the resource has errors; return the warnings otherwise."""
    return judge(validate(resource, binding_checker=binding_checker))


def judge(issues: list[Issue]) -> list[Issue]:
    """Raise :class:`InvalidResource` when ``issues`` hold an error; return them (the warnings) otherwise."""
    errors = errors_of(issues)
    if errors:
        raise InvalidResource(errors[0].diagnostics, issues=errors)
    return issues


def errors_of(issues: list[Issue]) -> list[Issue]:
    return [i for i in issues if i.severity in ("error", "fatal")]


def _err(issues: list[Issue], path: str, message: str, code: str = "structure") -> None:
    if len(issues) < MAX_ISSUES:
        issues.append(Issue(message, code, "error", [path]))


def _resource(resource: Any, path: str | None, issues: list[Issue]) -> None:
    if not isinstance(resource, dict):
        _err(issues, path or "$", "A resource must be a JSON object")
        return
    rtype = resource.get("resourceType")
    if not isinstance(rtype, str):
        _err(issues, path or "$", "The resourceType property is missing", "required")
        return
    s = spec()
    if rtype not in s.resource_types:
        _err(issues, path or rtype, f"Unknown resource type '{rtype}'", "not-supported")
        return
    here = path or rtype
    _object(resource, s.node(rtype), here, issues, is_resource=True)
    # R4's snapshots type Resource.id as a plain string, but the specification defines it as an id
    # (1-64 of [A-Za-z0-9-.]); check that here, once, rather than loosen every id.
    rid = resource.get("id")
    id_rx = s.primitives["id"].regex
    if isinstance(rid, str) and id_rx is not None and not id_rx.fullmatch(rid):
        _err(issues, f"{here}.id", f"'{_clip(rid)}' is not a valid resource id (1-64 of A-Z a-z 0-9 - .)", "value")


def _object(obj: dict[str, Any], node: Node, path: str, issues: list[Issue], is_resource: bool = False) -> None:
    if not obj or (is_resource and len(obj) == 1):
        _err(issues, path, "An element must have content (no empty objects)")
        return
    elements = node.elements
    seen_choice: dict[str, str] = {}
    for key, value in obj.items():
        if key == "resourceType" and is_resource:
            continue
        if key.startswith("_"):
            _companion(obj, key, value, elements.get(key[1:]), path, issues)
            continue
        el = elements.get(key)
        if el is None:
            _err(issues, f"{path}.{key}", f"Unknown element '{key}' in {node.path}")
            continue
        if el.choice_of is not None:
            other = seen_choice.get(el.choice_of)
            if other is not None:
                _err(issues, f"{path}.{key}", f"Only one of {other} and {key} may be present")
            seen_choice[el.choice_of] = key
        if value is None:
            _err(issues, f"{path}.{key}", f"Element '{key}' is null")
            continue
        _element(el, value, f"{path}.{key}", issues, has_companion=("_" + key) in obj)
    for name in node.required:
        if name in obj or ("_" + name) in obj:
            continue
        if name in node.choices and any(n in obj or ("_" + n) in obj for n in node.choices[name]):
            continue
        _err(issues, f"{path}.{name}", f"Required element '{name}' is missing", "required")


def _element(el: Element, value: Any, path: str, issues: list[Issue], has_companion: bool) -> None:
    if el.many:
        if not isinstance(value, list):
            _err(issues, path, f"Element '{el.name}' must be an array")
            return
        if not value:
            _err(issues, path, f"Element '{el.name}' must not be an empty array")
            return
        for i, item in enumerate(value):
            if item is None:
                if not has_companion:
                    _err(issues, f"{path}[{i}]", "Array items must not be null")
                continue
            _value(el, item, f"{path}[{i}]", issues)
    else:
        if isinstance(value, list):
            _err(issues, path, f"Element '{el.name}' must be a single value, not an array")
            return
        _value(el, value, path, issues)


def _value(el: Element, value: Any, path: str, issues: list[Issue]) -> None:
    s = spec()
    prim = s.primitives.get(el.type)
    if prim is not None:
        json_types = prim.json_types
        if not isinstance(value, json_types) or (isinstance(value, bool) and json_types is not bool):
            _err(issues, path, f"Value must be a JSON {_json_name(json_types)} for type {el.type}")
            return
        if isinstance(value, str):
            if prim.regex is not None and not prim.regex.fullmatch(value):
                _err(issues, path, f"'{_clip(value)}' is not a valid {el.type}", "value")
            elif el.type in ("date", "dateTime", "instant") and not _real_date(value):
                _err(issues, path, f"'{_clip(value)}' is not a real calendar {el.type}", "value")
            elif not value.strip(" \t\r\n") and el.type != "xhtml":
                _err(issues, path, "Strings must not be empty or only white space", "value")
            elif el.type == "xhtml" and not value.lstrip().startswith("<div"):
                _err(issues, path, "Narrative div must be XHTML starting with <div>", "value")
        elif (el.type == "positiveInt" and value < 1) or (el.type == "unsignedInt" and value < 0):
            _err(issues, path, f"{value} is not a valid {el.type}", "value")
        elif el.type == "integer" and not -(2**31) <= value < 2**31:
            _err(issues, path, f"{value} is outside the 32-bit integer range", "value")
        if el.binding and el.type == "code" and _checker.get() is not None:
            _binding(el, value, path, issues)
        return
    if not isinstance(value, dict):
        _err(issues, path, f"Element must be a JSON object of type {el.type}")
        return
    if el.type == "Resource":
        _resource(value, path, issues)
        return
    node = el.node if el.node is not None else _type_node(el.type)
    if node is None:
        return
    _object(value, node, path, issues)
    if el.binding and el.type in _CODING_TYPES and _checker.get() is not None:
        _binding(el, value, path, issues)


def _binding(el: Element, value: Any, path: str, issues: list[Issue]) -> None:
    checker = _checker.get()
    assert el.binding is not None and checker is not None
    strength, valueset = el.binding
    if not valueset:
        return
    issue = checker(strength, valueset, value, path)
    if issue is not None and len(issues) < MAX_ISSUES:
        issues.append(issue)


def _companion(obj: dict[str, Any], key: str, value: Any, el: Element | None, path: str, issues: list[Issue]) -> None:
    """``_name`` holds id/extension of primitive ``name``; arrays pair up item by item."""
    where = f"{path}.{key}"
    if el is None or not spec().is_primitive(el.type):
        _err(issues, where, f"Unknown element '{key}'")
        return
    ext_node = spec().node("Element")
    base = obj.get(key[1:])
    if el.many:
        if not isinstance(value, list):
            _err(issues, where, f"'{key}' must be an array")
            return
        if base is not None and (not isinstance(base, list) or len(base) != len(value)):
            _err(issues, where, f"'{key}' must have as many items as '{key[1:]}'")
        for i, item in enumerate(value):
            if item is None:
                if base is None or (isinstance(base, list) and i < len(base) and base[i] is None):
                    _err(issues, f"{where}[{i}]", "A value and its extension cannot both be null")
                continue
            if isinstance(item, dict):
                _object(item, ext_node, f"{where}[{i}]", issues)
            else:
                _err(issues, f"{where}[{i}]", "Must be an object with id and/or extension")
    elif isinstance(value, dict):
        _object(value, ext_node, where, issues)
    else:
        _err(issues, where, "Must be an object with id and/or extension")


def _real_date(value: str) -> bool:
    """The regexes accept 1990-02-30; the calendar does not."""
    try:
        date_range(value)
    except InvalidInput:
        return False
    return True


def _type_node(type_name: str) -> Node | None:
    try:
        return spec().node(type_name)
    except KeyError:
        return None


def _json_name(t: Any) -> str:
    return {bool: "boolean", int: "integer", str: "string"}.get(t, "number")


def _clip(value: str, n: int = 60) -> str:
    return value if len(value) <= n else value[:n] + "..."
