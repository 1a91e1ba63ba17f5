"""The FHIR R4 (4.0.1) type model, compiled once from the official StructureDefinitions.

``definitions/structure.json`` is built by scripts/build_definitions.py from the npm package
hl7.fhir.r4.examples 4.0.1 (CC0). Here it becomes a tree of :class:`Node` objects: for each type, the
JSON property names it may hold (choice elements expanded, e.g. ``valueQuantity``), their cardinality and
type. Validation, index extraction and FHIRPath navigation all walk this one model.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from typing import Any

PRIMITIVE_JSON = {"boolean": bool, "integer": int, "number": (int, float), "string": str}


@dataclass(slots=True)
class Element:
    """One JSON property of a type: ``name`` as it appears in JSON."""

    name: str
    path: str
    type: str  # FHIR type code of this property (one of a choice's types for choice elements)
    min: int
    many: bool
    node: Node | None  # children for inline BackboneElement / Element definitions
    binding: tuple[str, str | None] | None
    choice_of: str | None = None  # the element name before expansion, e.g. "value" for valueQuantity
    summary: bool = False  # part of the _summary=true view
    primitive: Primitive | None = None  # the primitive type's JSON type and regex, when it is one


@dataclass(slots=True)
class Node:
    """A group of elements: a type, or an inline backbone element of a type."""

    path: str
    elements: dict[str, Element] = field(default_factory=dict)
    required: list[str] = field(default_factory=list)  # element names with min >= 1 (choice: base name)
    choices: dict[str, list[str]] = field(default_factory=dict)  # base name -> JSON names


@dataclass(slots=True)
class Primitive:
    name: str
    json_types: Any
    regex: re.Pattern[str] | None


class Spec:
    """The compiled R4 model. Use :func:`spec` to get the shared instance."""

    def __init__(self, raw: dict[str, Any]) -> None:
        self.resource_types: frozenset[str] = frozenset(raw["resources"])
        self.primitives: dict[str, Primitive] = {}
        for name, p in raw["primitives"].items():
            rx = p["regex"]
            if name == "decimal":  # JSON numbers are checked by type; the regex is for the lexical form
                rx = None
            self.primitives[name] = Primitive(
                name, PRIMITIVE_JSON[p["json"]], re.compile(xml_regex(rx), re.S) if rx else None
            )
        self._raw_types: dict[str, dict[str, Any]] = raw["types"]
        self._nodes: dict[str, Node] = {}
        self.type_kind = {name: t["kind"] for name, t in raw["types"].items()}

    def is_primitive(self, type_code: str) -> bool:
        return type_code in self.primitives

    def node(self, type_name: str) -> Node:
        """The element tree of a resource or complex type (compiled on first use)."""
        found = self._nodes.get(type_name)
        if found is None:
            found = self._compile(type_name)
        return found

    def _compile(self, type_name: str) -> Node:
        raw = self._raw_types.get(type_name)
        if raw is None:
            raise KeyError(type_name)
        nodes: dict[str, Node] = {type_name: Node(type_name)}
        self._nodes[type_name] = nodes[type_name]
        pending_refs: list[tuple[Element, str]] = []
        for path, min_, max_, types, content_ref, binding, summary in raw["elements"]:
            parent_path, _, name = path.rpartition(".")
            parent = nodes.get(parent_path)
            if parent is None:  # a child of an element we do not model (cannot happen in R4 snapshots)
                continue
            many = max_ != "1" and max_ != "0"
            if max_ == "0":
                continue
            bind = (binding[0], binding[1]) if binding else None
            if name.endswith("[x]"):
                base = name[:-3]
                names = []
                for t in types:
                    json_name = base + t[0].upper() + t[1:]
                    parent.elements[json_name] = Element(
                        json_name, path, t, min_, many, None, bind, base, summary, self.primitives.get(t)
                    )
                    names.append(json_name)
                parent.choices[base] = names
                if min_ >= 1:
                    parent.required.append(base)
                continue
            if content_ref:
                el = Element(name, path, "BackboneElement", min_, many, None, bind, None, summary)
                pending_refs.append((el, content_ref.lstrip("#")))
            elif types and types[0] in ("BackboneElement", "Element") and self._has_children(raw, path):
                child = Node(path)
                nodes[path] = child
                el = Element(name, path, types[0], min_, many, child, bind, None, summary)
            else:
                t = types[0] if types else "Element"
                el = Element(name, path, t, min_, many, None, bind, None, summary, self.primitives.get(t))
            parent.elements[name] = el
            if min_ >= 1:
                parent.required.append(name)
        for el, target in pending_refs:
            el.node = nodes.get(target) or self._find_node(target)
        return nodes[type_name]

    @staticmethod
    def _has_children(raw: dict[str, Any], path: str) -> bool:
        prefix = path + "."
        return any(e[0].startswith(prefix) for e in raw["elements"])

    def _find_node(self, path: str) -> Node | None:
        """Resolve a contentReference such as ``Questionnaire.item`` (possibly in another type)."""
        type_name = path.split(".", 1)[0]
        root = self.node(type_name)
        node: Node | None = root
        for part in path.split(".")[1:]:
            if node is None:
                return None
            el = node.elements.get(part)
            node = el.node if el else None
        return node


_XML_NOT_SPACE = "\\x00-\\x08\\x0b\\x0c\\x0e-\\x1f\\x21-\\U0010ffff"
_XML_SPACE = " \\t\\n\\r"


def xml_regex(rx: str) -> str:
    """The spec's regexes follow XML Schema, where \\s is only space, tab, CR and LF (Python's is Unicode)."""
    out: list[str] = []
    in_class = False
    i = 0
    while i < len(rx):
        ch = rx[i]
        if ch == "\\" and i + 1 < len(rx):
            nxt = rx[i + 1]
            if nxt in "sS":
                chars = _XML_SPACE if nxt == "s" else _XML_NOT_SPACE
                out.append(chars if in_class else f"[{chars}]")
            else:
                out.append(rx[i : i + 2])
            i += 2
            continue
        if ch == "[":
            in_class = True
        elif ch == "]":
            in_class = False
        out.append(ch)
        i += 1
    return "".join(out)


@cache
def spec() -> Spec:
    text = resources.files("changbai.fhir").joinpath("definitions/structure.json").read_text("utf-8")
    return Spec(json.loads(text))


def is_resource_type(name: str) -> bool:
    return name in spec().resource_types
