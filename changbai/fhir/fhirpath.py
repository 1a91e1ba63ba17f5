"""A compiled, typed FHIRPath evaluator for the expressions of search parameters.

The SearchParameter definitions of R4 use a small part of FHIRPath: paths with choice types, unions,
``where(...)`` filters, ``as``/``ofType``/``is`` type tests, ``resolve() is Type`` on references,
``exists()``, ``extension(url)``, indexers and simple comparisons. Indexing evaluates dozens of them for
every stored resource, so they are compiled once into Python closures that walk the JSON together with
its FHIR type (taken from the StructureDefinitions), which is what ``as(Quantity)`` needs.

Anything outside that subset is evaluated by fhirpathpy (the reference implementation used in the tests),
so every expression of the definitions works; the fast path is a cache, not a second meaning.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import orjson

from changbai.fhir.spec import Node, spec


@dataclass(slots=True)
class Item:
    """A value with its FHIR type: a type code (``"Quantity"``, ``"dateTime"``) or an inline backbone.
    (Not frozen: a frozen dataclass costs twice as much to make, and indexing makes millions.)"""

    value: Any
    type: str | Node


Evaluator = Callable[[list[Item]], list[Item]]


class Unsupported(Exception):
    """The expression uses FHIRPath beyond the compiled subset."""


# ---------------------------------------------------------------------------------------------- tokens
_TOKEN = re.compile(
    r"\s*(?:(?P<str>'(?:[^'\\]|\\.)*')|(?P<num>\d+(?:\.\d+)?)|(?P<id>[A-Za-z_][A-Za-z0-9_]*)"
    r"|(?P<op>!=|[.()\[\]|=,]))"
)


def _tokens(expr: str) -> list[tuple[str, str]]:
    out, pos = [], 0
    expr = expr.strip()
    while pos < len(expr):
        m = _TOKEN.match(expr, pos)
        if not m or m.end() == pos:
            raise Unsupported(f"cannot read {expr[pos:]!r}")
        kind = m.lastgroup or ""
        out.append((kind, m.group(kind)))
        pos = m.end()
    return out


# ---------------------------------------------------------------------------------------------- parser
class _Parser:
    def __init__(self, expr: str) -> None:
        self.toks = _tokens(expr)
        self.i = 0

    def peek(self, value: str | None = None) -> bool:
        if self.i >= len(self.toks):
            return False
        return value is None or self.toks[self.i][1] == value

    def take(self, value: str | None = None) -> str:
        if self.i >= len(self.toks) or (value is not None and self.toks[self.i][1] != value):
            raise Unsupported(f"expected {value!r}")
        self.i += 1
        return self.toks[self.i - 1][1]

    def parse(self) -> Evaluator:
        fn = self.union()
        if self.i != len(self.toks):
            raise Unsupported(f"unexpected {self.toks[self.i][1]!r}")
        return fn

    def union(self) -> Evaluator:
        parts = [self.logical()]
        while self.peek("|"):
            self.take("|")
            parts.append(self.logical())
        if len(parts) == 1:
            return parts[0]

        def union(items: list[Item]) -> list[Item]:
            out: list[Item] = []
            for p in parts:
                out.extend(p(items))
            return _distinct(out) if len(out) > 1 else out

        return union

    def logical(self) -> Evaluator:
        left = self.equality()
        while self.peek("and") or self.peek("or"):
            op = self.take()
            right = self.equality()
            left = _logic(op, left, right)
        return left

    def equality(self) -> Evaluator:
        left = self.typed()
        if self.peek("=") or self.peek("!="):
            op = self.take()
            right = self.typed()
            return _compare(op == "=", left, right)
        return left

    def typed(self) -> Evaluator:
        fn = self.postfix()
        if self.peek("as") or self.peek("is"):
            op = self.take()
            type_name = self.take()
            return _as_type(fn, type_name) if op == "as" else _is_type(fn, type_name)
        return fn

    def postfix(self) -> Evaluator:
        fn = self.primary()
        while True:
            if self.peek("."):
                self.take(".")
                name = self.take()
                step = self.function(name) if self.peek("(") else _child(name)
                fn = _then(fn, step)
            elif self.peek("["):
                self.take("[")
                index = int(self.take())
                self.take("]")
                fn = _then(fn, _index(index))
            else:
                return fn

    def primary(self) -> Evaluator:
        kind, value = self.toks[self.i] if self.i < len(self.toks) else ("", "")
        if value == "(":
            self.take("(")
            inner = self.union()
            self.take(")")
            return inner
        if kind == "str":
            self.take()
            lit = [Item(value[1:-1].replace("\\'", "'"), "string")]
            return lambda items: lit
        if value in ("true", "false"):
            self.take()
            lit_b = [Item(value == "true", "boolean")]
            return lambda items: lit_b
        if kind == "id":
            self.take()
            if self.peek("("):
                return self.function(value)
            if value[0].isupper():  # a type name at the root: Patient.name
                return _root_type(value)
            return _child(value)
        raise Unsupported(f"unexpected {value!r}")

    def function(self, name: str) -> Evaluator:
        self.take("(")
        if name == "where":
            cond = self.union()
            self.take(")")
            return _where(cond)
        if name in ("as", "ofType", "is"):
            type_name = self.take()
            self.take(")")
            return _as_type(_identity, type_name) if name != "is" else _is_type(_identity, type_name)
        if name in ("extension", "hasExtension"):
            url = self.take()
            self.take(")")
            ext = _extension(url.strip("'"))
            if name == "extension":
                return ext
            return lambda items: [Item(bool(ext(items)), "boolean")]
        self.take(")")
        if name == "exists":
            return lambda items: [Item(bool(items), "boolean")]
        if name == "empty":
            return lambda items: [Item(not items, "boolean")]
        if name == "first":
            return lambda items: items[:1]
        if name == "resolve":
            return _resolve
        if name == "not":
            return lambda items: [Item(not items[0].value, "boolean")] if items else []
        raise Unsupported(f"function {name}()")


# -------------------------------------------------------------------------------------------- closures
def _distinct(items: list[Item]) -> list[Item]:
    """``|`` is a union: equal values appear once."""
    seen: set[Any] = set()
    out = []
    for item in items:
        v = item.value
        key = orjson.dumps(v, option=orjson.OPT_SORT_KEYS) if isinstance(v, dict | list) else (type(v), v)
        if key not in seen:
            seen.add(key)
            out.append(item)
    return out


def _identity(items: list[Item]) -> list[Item]:
    return items


def _then(first: Evaluator, second: Evaluator) -> Evaluator:
    return lambda items: second(first(items))


def _root_type(type_name: str) -> Evaluator:
    generic = type_name in ("Resource", "DomainResource")

    def root(items: list[Item]) -> list[Item]:
        return [i for i in items if generic or i.type == type_name]

    return root


_NODES: dict[str, Node | None] = {}


def _node_of(item_type: str | Node) -> Node | None:
    if isinstance(item_type, Node):
        return item_type
    try:
        return _NODES[item_type]
    except KeyError:
        pass
    s = spec()
    found: Node | None = None
    if item_type not in s.primitives:
        try:
            found = s.node(item_type)
        except KeyError:
            found = None
    _NODES[item_type] = found
    return found


def _child(name: str) -> Evaluator:
    #: node -> (JSON name, element type) pairs that ``name`` may be in it (choices expanded); the
    #: element lookups are done once per node, not once per value
    steps: dict[int, list[tuple[str, str | Node]]] = {}

    def steps_in(node: Node) -> list[tuple[str, str | Node]]:
        found = steps.get(id(node))
        if found is None:
            names = [name] if name in node.elements else node.choices.get(name, [])
            found = []
            for json_name in names:
                e = node.elements[json_name]
                found.append((json_name, e.node if e.node is not None else e.type))
            steps[id(node)] = found
        return found

    def child(items: list[Item]) -> list[Item]:
        out: list[Item] = []
        for item in items:
            obj = item.value
            if not isinstance(obj, dict):
                continue
            t = item.type
            node = t if isinstance(t, Node) else _node_of(t if t != "Resource" else obj.get("resourceType", ""))
            if node is None:
                continue
            for json_name, vt in steps_in(node):
                value = obj.get(json_name)
                if value is None:
                    continue
                if vt == "Resource" and isinstance(value, dict):
                    vt = value.get("resourceType", "Resource")
                if isinstance(value, list):
                    out.extend(Item(v, vt) for v in value if v is not None)
                else:
                    out.append(Item(value, vt))
        return out

    return child


def _index(i: int) -> Evaluator:
    return lambda items: items[i : i + 1]


def _type_matches(item: Item, type_name: str) -> bool:
    t = item.type
    if isinstance(t, Node):
        return type_name in ("BackboneElement", "Element")
    return is_of_type(t, type_name)


def is_of_type(type_code: str, type_name: str) -> bool:
    """Whether a value of FHIR type ``type_code`` passes ``as(type_name)``: the type itself, and FHIR's
    profiled quantities (Age, Duration, ...) as Quantities and canonical/url/uuid/oid as uris."""
    if type_code == type_name:
        return True
    if type_name == "Quantity" and type_code in (
        "Age",
        "Distance",
        "Duration",
        "Count",
        "SimpleQuantity",
        "MoneyQuantity",
    ):
        return True
    return type_name == "uri" and type_code in ("url", "canonical", "oid", "uuid")


def _as_type(fn: Evaluator, type_name: str) -> Evaluator:
    type_name = type_name.split(".")[-1]

    def as_type(items: list[Item]) -> list[Item]:
        return [i for i in fn(items) if _type_matches(i, type_name)]

    return as_type


def _is_type(fn: Evaluator, type_name: str) -> Evaluator:
    type_name = type_name.split(".")[-1]

    def is_type(items: list[Item]) -> list[Item]:
        got = fn(items)
        if not got:
            return []
        return [Item(_type_matches(got[0], type_name), "boolean")]

    return is_type


def _where(cond: Evaluator) -> Evaluator:
    def where(items: list[Item]) -> list[Item]:
        out = []
        for item in items:
            r = cond([item])
            if r and r[0].value is True:
                out.append(item)
        return out

    return where


def _extension(url: str) -> Evaluator:
    def extension(items: list[Item]) -> list[Item]:
        out = []
        for item in items:
            if isinstance(item.value, dict):
                for ext in item.value.get("extension", ()):
                    if ext.get("url") == url:
                        out.append(Item(ext, "Extension"))
        return out

    return extension


def reference_type(ref: Any) -> str | None:
    """The resource type a Reference points to (from its literal reference or its type element)."""
    if not isinstance(ref, dict):
        return None
    literal = ref.get("reference")
    if isinstance(literal, str) and not literal.startswith("#"):
        parts = literal.split("/_history/")[0].rstrip("/").split("/")
        if len(parts) >= 2 and parts[-2][:1].isupper():
            return parts[-2]
        if literal.startswith("urn:"):
            return ref.get("type")
    t = ref.get("type")
    return t if isinstance(t, str) else None


def _resolve(items: list[Item]) -> list[Item]:
    out = []
    for item in items:
        t = reference_type(item.value) if item.type == "Reference" else None
        if t:
            out.append(Item({"resourceType": t}, t))
    return out


def _logic(op: str, left: Evaluator, right: Evaluator) -> Evaluator:
    def logic(items: list[Item]) -> list[Item]:
        a, b = _boolean(left(items)), _boolean(right(items))
        if op == "and":
            if a is False or b is False:
                return [Item(False, "boolean")]
            if a is None or b is None:
                return []
            return [Item(True, "boolean")]
        if a is True or b is True:
            return [Item(True, "boolean")]
        if a is None or b is None:
            return []
        return [Item(False, "boolean")]

    return logic


def _boolean(items: list[Item]) -> bool | None:
    if not items:
        return None
    if len(items) == 1 and isinstance(items[0].value, bool):
        return items[0].value
    return True


def _compare(equal: bool, left: Evaluator, right: Evaluator) -> Evaluator:
    def compare(items: list[Item]) -> list[Item]:
        a, b = left(items), right(items)
        if not a or not b:
            return []
        same = len(a) == len(b) and all(x.value == y.value for x, y in zip(a, b, strict=True))
        return [Item(same if equal else not same, "boolean")]

    return compare


# ---------------------------------------------------------------------------------------------- public
@lru_cache(maxsize=4096)
def compile_path(expression: str) -> Callable[[dict[str, Any]], list[Item]]:
    """Compile a FHIRPath expression into ``f(resource) -> [Item]`` (fast subset, else fhirpathpy)."""
    try:
        fn = _Parser(expression).parse()

        def evaluate(resource: dict[str, Any]) -> list[Item]:
            return fn([Item(resource, resource.get("resourceType", "Resource"))])

        return evaluate
    except Unsupported:
        return _fallback(expression)


def compile_relative(expression: str) -> Callable[[Item], list[Item]]:
    """Compile an expression evaluated on one typed item (composite components: ``code``, ``value.as(Quantity)``)."""
    fn = _Parser(expression).parse()
    return lambda item: fn([item])


def _fallback(expression: str) -> Callable[[dict[str, Any]], list[Item]]:
    import fhirpathpy
    from fhirpathpy.models import models

    compiled = fhirpathpy.compile(expression, models["r4"])

    def evaluate(resource: dict[str, Any]) -> list[Item]:
        return [Item(v, _guess_type(v)) for v in compiled(resource, {})]

    return evaluate


def _guess_type(value: Any) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "decimal"
    if isinstance(value, str):
        return "string"
    if isinstance(value, dict):
        if "coding" in value or ("text" in value and len(value) <= 2):
            return "CodeableConcept"
        if "reference" in value:
            return "Reference"
        if "system" in value and "code" in value:
            return "Coding"
    return "Element"
