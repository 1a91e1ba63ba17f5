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
from typing import Any

from changbai.errors import InvalidInput, InvalidResource, Issue
from changbai.fhir.spec import Element, Node, spec
from changbai.fhir.values import date_range

#: (strength, valueset_url, value, path) -> Issue | None; the terminology module makes one per store.
BindingChecker = Callable[[str, str, Any, str], "Issue | None"]

MAX_ISSUES = 100
_CODING_TYPES = ("code", "Coding", "CodeableConcept")


def validate(resource: Any, *, path: str | None = None, binding_checker: BindingChecker | None = None) -> list[Issue]:
    """All issues of a resource (errors and warnings). An empty list means valid."""
    walk = _Walk(binding_checker)
    walk.resource(resource, path)
    return walk.issues


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


def _at(path: str, key: str, index: int | None) -> str:
    """The place of ``key`` (item ``index``) inside ``path``: built only where an issue or a nested
    object needs it, which keeps validation of valid resources cheap."""
    return f"{path}.{key}" if index is None else f"{path}.{key}[{index}]"


class _Walk:
    """One validation: the issues found so far and the binding checker of this call."""

    __slots__ = ("checker", "issues")

    def __init__(self, checker: BindingChecker | None) -> None:
        self.issues: list[Issue] = []
        self.checker = checker

    def err(self, path: str, message: str, code: str = "structure") -> None:
        if len(self.issues) < MAX_ISSUES:
            self.issues.append(Issue(message, code, "error", [path]))

    def resource(self, resource: Any, path: str | None) -> None:
        if not isinstance(resource, dict):
            self.err(path or "$", "A resource must be a JSON object")
            return
        rtype = resource.get("resourceType")
        if not isinstance(rtype, str):
            self.err(path or "$", "The resourceType property is missing", "required")
            return
        s = spec()
        if rtype not in s.resource_types:
            self.err(path or rtype, f"Unknown resource type '{rtype}'", "not-supported")
            return
        here = path or rtype
        self.object(resource, s.node(rtype), here, is_resource=True)
        # R4's snapshots type Resource.id as a plain string, but the specification defines it as an id
        # (1-64 of [A-Za-z0-9-.]); check that here, once, rather than loosen every id.
        rid = resource.get("id")
        id_rx = s.primitives["id"].regex
        if isinstance(rid, str) and id_rx is not None and not id_rx.fullmatch(rid):
            self.err(f"{here}.id", f"'{_clip(rid)}' is not a valid resource id (1-64 of A-Z a-z 0-9 - .)", "value")

    def object(self, obj: dict[str, Any], node: Node, path: str, is_resource: bool = False) -> None:
        if not obj or (is_resource and len(obj) == 1):
            self.err(path, "An element must have content (no empty objects)")
            return
        elements = node.elements
        seen_choice: dict[str, str] | None = None
        for key, value in obj.items():
            if key.startswith("_"):
                self.companion(obj, key, value, elements.get(key[1:]), path)
                continue
            el = elements.get(key)
            if el is None:
                if key != "resourceType" or not is_resource:
                    self.err(f"{path}.{key}", f"Unknown element '{key}' in {node.path}")
                continue
            if el.choice_of is not None:
                if seen_choice is None:
                    seen_choice = {}
                other = seen_choice.get(el.choice_of)
                if other is not None:
                    self.err(f"{path}.{key}", f"Only one of {other} and {key} may be present")
                seen_choice[el.choice_of] = key
            if value is None:
                self.err(f"{path}.{key}", f"Element '{key}' is null")
                continue
            if el.many:
                if not isinstance(value, list):
                    self.err(f"{path}.{key}", f"Element '{el.name}' must be an array")
                elif not value:
                    self.err(f"{path}.{key}", f"Element '{el.name}' must not be an empty array")
                else:
                    for i, item in enumerate(value):
                        if item is None:
                            if ("_" + key) not in obj:
                                self.err(f"{path}.{key}[{i}]", "Array items must not be null")
                            continue
                        self.value(el, item, path, key, i)
            elif isinstance(value, list):
                self.err(f"{path}.{key}", f"Element '{el.name}' must be a single value, not an array")
            else:
                self.value(el, value, path, key, None)
        for name in node.required:
            if name in obj or ("_" + name) in obj:
                continue
            if name in node.choices and any(n in obj or ("_" + n) in obj for n in node.choices[name]):
                continue
            self.err(f"{path}.{name}", f"Required element '{name}' is missing", "required")

    def value(self, el: Element, value: Any, path: str, key: str, index: int | None) -> None:
        prim = el.primitive
        if prim is not None:
            json_types = prim.json_types
            if not isinstance(value, json_types) or (isinstance(value, bool) and json_types is not bool):
                self.err(_at(path, key, index), f"Value must be a JSON {_json_name(json_types)} for type {el.type}")
                return
            if isinstance(value, str):
                if prim.regex is not None and not prim.regex.fullmatch(value):
                    self.err(_at(path, key, index), f"'{_clip(value)}' is not a valid {el.type}", "value")
                elif el.type in _DATE_TYPES and not _real_date(value):
                    self.err(_at(path, key, index), f"'{_clip(value)}' is not a real calendar {el.type}", "value")
                elif not value.strip(" \t\r\n") and el.type != "xhtml":
                    self.err(_at(path, key, index), "Strings must not be empty or only white space", "value")
                elif el.type == "xhtml" and not value.lstrip().startswith("<div"):
                    self.err(_at(path, key, index), "Narrative div must be XHTML starting with <div>", "value")
            elif (el.type == "positiveInt" and value < 1) or (el.type == "unsignedInt" and value < 0):
                self.err(_at(path, key, index), f"{value} is not a valid {el.type}", "value")
            elif el.type == "integer" and not -(2**31) <= value < 2**31:
                self.err(_at(path, key, index), f"{value} is outside the 32-bit integer range", "value")
            if el.binding and el.type == "code" and self.checker is not None:
                self.binding(el, value, _at(path, key, index))
            return
        if not isinstance(value, dict):
            self.err(_at(path, key, index), f"Element must be a JSON object of type {el.type}")
            return
        here = _at(path, key, index)
        if el.type == "Resource":
            self.resource(value, here)
            return
        node = el.node if el.node is not None else _type_node(el.type)
        if node is None:
            return
        self.object(value, node, here)
        if el.binding and el.type in _CODING_TYPES and self.checker is not None:
            self.binding(el, value, here)

    def binding(self, el: Element, value: Any, path: str) -> None:
        assert el.binding is not None and self.checker is not None
        strength, valueset = el.binding
        if not valueset:
            return
        issue = self.checker(strength, valueset, value, path)
        if issue is not None and len(self.issues) < MAX_ISSUES:
            self.issues.append(issue)

    def companion(self, obj: dict[str, Any], key: str, value: Any, el: Element | None, path: str) -> None:
        """``_name`` holds id/extension of primitive ``name``; arrays pair up item by item."""
        where = f"{path}.{key}"
        if el is None or el.primitive is None:
            self.err(where, f"Unknown element '{key}'")
            return
        ext_node = spec().node("Element")
        base = obj.get(key[1:])
        if el.many:
            if not isinstance(value, list):
                self.err(where, f"'{key}' must be an array")
                return
            if base is not None and (not isinstance(base, list) or len(base) != len(value)):
                self.err(where, f"'{key}' must have as many items as '{key[1:]}'")
            for i, item in enumerate(value):
                if item is None:
                    if base is None or (isinstance(base, list) and i < len(base) and base[i] is None):
                        self.err(f"{where}[{i}]", "A value and its extension cannot both be null")
                    continue
                if isinstance(item, dict):
                    self.object(item, ext_node, f"{where}[{i}]")
                else:
                    self.err(f"{where}[{i}]", "Must be an object with id and/or extension")
        elif isinstance(value, dict):
            self.object(value, ext_node, where)
        else:
            self.err(where, "Must be an object with id and/or extension")


_DATE_TYPES = frozenset({"date", "dateTime", "instant"})


def _real_date(value: str) -> bool:
    """The regexes accept 1990-02-30; the calendar does not."""
    try:
        date_range(value)
    except InvalidInput:
        return False
    return True


_TYPE_NODES: dict[str, Node | None] = {}


def _type_node(type_name: str) -> Node | None:
    found = _TYPE_NODES.get(type_name, False)
    if found is False:
        try:
            found = spec().node(type_name)
        except KeyError:
            found = None
        _TYPE_NODES[type_name] = found
    return found  # type: ignore[return-value]


def _json_name(t: Any) -> str:
    return {bool: "boolean", int: "integer", str: "string"}.get(t, "number")


def _clip(value: str, n: int = 60) -> str:
    return value if len(value) <= n else value[:n] + "..."
