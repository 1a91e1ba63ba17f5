"""Per-CodeSystem index: code -> concept, parents and children, property values; built once and cached.

Operations must answer in milliseconds, so a CodeSystem's nested concept tree is flattened once into
dicts, and descendant sets are computed on first use. The cache key is (url, version, meta.versionId) so
a new version of a resource in the store gets a new index; resources without a versionId are keyed by
their identity as well, so two different in-memory resources never share an index.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

import re2

from changbai.errors import InvalidInput
from changbai.terminology.textsearch import TextIndex, fold

Resource = dict[str, Any]

INACTIVE_STATUSES = {"retired", "inactive"}
_NOT_SELECTABLE = ("notSelectable", "http://hl7.org/fhir/concept-properties#notSelectable")


@dataclass
class Concept:
    code: str
    display: str | None = None
    definition: str | None = None
    designations: list[dict[str, Any]] = field(default_factory=list)
    properties: list[dict[str, Any]] = field(default_factory=list)
    parents: list[str] = field(default_factory=list)
    children: list[str] = field(default_factory=list)
    extensions: list[dict[str, Any]] = field(default_factory=list)
    abstract: bool = False
    inactive: bool = False
    status: str | None = None
    #: designations a supplement added: id(designation) -> the supplement's canonical
    designation_sources: dict[int, str] = field(default_factory=dict)
    #: what the $expand text filter matches (CodeSystemIndex.search_text), kept once computed
    search_text: str | None = None

    def property_values(self, code: str) -> list[Any]:
        out = []
        for p in self.properties:
            if p.get("code") == code:
                out.extend(v for k, v in p.items() if k.startswith("value"))
        return out


def property_value(prop: dict[str, Any]) -> tuple[str, Any]:
    for k, v in prop.items():
        if k.startswith("value"):
            return k, v
    return "valueString", None


class CodeSystemIndex:
    """The concepts of one CodeSystem (plus any supplements), ready for lookups and filters."""

    def __init__(self, resource: Resource, supplements: list[Resource] | None = None) -> None:
        self.resource = resource
        self.url: str = resource.get("url", "")
        self.version: str | None = resource.get("version")
        self.language: str | None = resource.get("language")
        self.case_sensitive: bool = resource.get("caseSensitive", True) is not False
        self.content: str = resource.get("content", "complete")
        self.property_defs: dict[str, dict[str, Any]] = {p["code"]: p for p in resource.get("property", [])}
        self.concepts: dict[str, Concept] = {}
        self.order: list[str] = []
        self.roots: list[str] = []
        self.supplements = supplements or []
        self._folded: dict[str, str] | None = None
        self._text: TextIndex | None = None
        self._descendants: dict[str, frozenset[str]] = {}
        self._lock = threading.Lock()
        self._walk(resource.get("concept", []), None)
        self._link_properties()
        for supplement in self.supplements:
            self._merge_supplement(supplement)
        for c in self.concepts.values():
            self._derive_flags(c)

    # building
    def _walk(self, concepts: list[dict[str, Any]], parent: str | None) -> None:
        for raw in concepts:
            code = raw.get("code")
            if code is None:
                continue
            c = self.concepts.get(code)
            if c is None:
                c = Concept(
                    code=code,
                    display=raw.get("display"),
                    definition=raw.get("definition"),
                    designations=list(raw.get("designation", [])),
                    properties=list(raw.get("property", [])),
                    extensions=list(raw.get("extension", [])),
                )
                self.concepts[code] = c
                self.order.append(code)
            if parent is None:
                if code not in self.roots:
                    self.roots.append(code)
            else:
                self._link(parent, code)
            self._walk(raw.get("concept", []), code)

    def _link(self, parent: str, child: str) -> None:
        if parent not in self.concepts or child not in self.concepts or parent == child:
            return
        if parent not in self.concepts[child].parents:
            self.concepts[child].parents.append(parent)
        if child not in self.concepts[parent].children:
            self.concepts[parent].children.append(child)

    def _link_properties(self) -> None:
        """Flat code systems state hierarchy with parent / child / subsumedBy properties."""
        for c in list(self.concepts.values()):
            for p in c.properties:
                _kind, value = property_value(p)
                if p.get("code") in ("parent", "subsumedBy") and isinstance(value, str):
                    self._link(value, c.code)
                elif p.get("code") == "child" and isinstance(value, str):
                    self._link(c.code, value)
        self.roots = [code for code in self.order if not self.concepts[code].parents]

    def _merge_supplement(self, supplement: Resource) -> None:
        canonical = supplement.get("url", "") + (f"|{supplement['version']}" if supplement.get("version") else "")
        for p in supplement.get("property", []):
            self.property_defs.setdefault(p["code"], p)

        def merge(concepts: list[dict[str, Any]]) -> None:
            for raw in concepts:
                c = self.concepts.get(raw.get("code", ""))
                if c is not None:
                    lang = supplement.get("language")
                    added = list(raw.get("designation", []))
                    if raw.get("display") and lang and lang != self.language:
                        added.append({"language": lang, "value": raw["display"]})
                    for d in added:
                        c.designations.append(d)
                        c.designation_sources[id(d)] = canonical
                    c.properties.extend(raw.get("property", []))
                    c.extensions.extend(raw.get("extension", []))
                merge(raw.get("concept", []))

        merge(supplement.get("concept", []))

    def _derive_flags(self, c: Concept) -> None:
        for p in c.properties:
            code = p.get("code")
            uri = self.property_defs.get(code or "", {}).get("uri")
            _kind, value = property_value(p)
            if code == "status" or uri == "http://hl7.org/fhir/concept-properties#status":
                c.status = value
                if value in INACTIVE_STATUSES:
                    c.inactive = True
            elif (code == "inactive" or uri == "http://hl7.org/fhir/concept-properties#inactive") and value is True:
                c.inactive = True
            elif (code in _NOT_SELECTABLE or uri in _NOT_SELECTABLE) and value is True:
                c.abstract = True
        for ext in c.extensions:
            standards_status = "http://hl7.org/fhir/StructureDefinition/structuredefinition-standards-status"
            if ext.get("url") == standards_status and ext.get("valueCode") == "deprecated" and c.status is None:
                c.status = "deprecated"

    # queries
    def search_text(self, concept: Concept) -> str:
        """What the $expand text filter matches a concept by: code, display and designations, folded."""
        parts = [concept.code, concept.display or "", *(d.get("value", "") for d in concept.designations)]
        return fold("\n".join(parts))

    def _concept_text(self, concept: Concept) -> str:
        if concept.search_text is None:
            concept.search_text = self.search_text(concept)
        return concept.search_text

    def text_index(self) -> TextIndex:
        """The text filter's index of this code system (built on the first filtered expansion)."""
        if self._text is None:
            built = TextIndex((code, self._concept_text(self.concepts[code])) for code in self.order)
            with self._lock:
                if self._text is None:
                    self._text = built
        return self._text

    def get(self, code: str) -> Concept | None:
        c = self.concepts.get(code)
        if c is not None or self.case_sensitive:
            return c
        if self._folded is None:
            self._folded = {k.lower(): k for k in self.concepts}
        real = self._folded.get(code.lower())
        return self.concepts.get(real) if real else None

    def descendants(self, code: str) -> frozenset[str]:
        """All codes below ``code`` (not including it)."""
        found = self._descendants.get(code)
        if found is not None:
            return found
        out: set[str] = set()
        stack = list(self.concepts[code].children) if code in self.concepts else []
        while stack:
            nxt = stack.pop()
            if nxt in out:
                continue
            out.add(nxt)
            stack.extend(self.concepts[nxt].children)
        found = frozenset(out)
        with self._lock:
            self._descendants[code] = found
        return found

    def ancestors(self, code: str) -> set[str]:
        out: set[str] = set()
        stack = list(self.concepts[code].parents) if code in self.concepts else []
        while stack:
            nxt = stack.pop()
            if nxt not in out:
                out.add(nxt)
                stack.extend(self.concepts[nxt].parents)
        return out

    def subsumes(self, a: str, b: str) -> str:
        """The $subsumes outcome of code a against code b."""
        if a == b:
            return "equivalent"
        if b in self.descendants(a):
            return "subsumes"
        if a in self.descendants(b):
            return "subsumed-by"
        return "not-subsumed"

    def filter(self, prop: str, op: str, value: str) -> list[str]:
        """Codes (in definition order) that satisfy one ValueSet.compose filter."""
        hierarchical = prop in ("concept", "code", "parent", "child") and op in (
            "is-a",
            "descendent-of",
            "is-not-a",
            "generalizes",
            "child-of",
            "descendant-leaf",
        )
        if hierarchical:
            return self._hierarchy_filter(prop, op, value)
        if op == "=":
            return [c for c in self.order if value in self._values(prop, self.concepts[c])]
        if op in ("in", "not-in"):
            wanted = {v.strip() for v in value.split(",")}
            keep = op == "in"
            return [c for c in self.order if bool(wanted & set(self._values(prop, self.concepts[c]))) == keep]
        if op == "regex":
            try:  # RE2: linear time, so a hostile pattern cannot stall the server
                pattern = re2.compile(value)
            except re2.error as exc:
                raise InvalidInput(f"The regex '{value}' is not valid: {exc}") from exc
            return [c for c in self.order if any(pattern.fullmatch(v) for v in self._values(prop, self.concepts[c]))]
        if op == "exists":
            want = value.lower() == "true"
            return [c for c in self.order if bool(self._values(prop, self.concepts[c])) == want]
        raise InvalidInput(f"The filter operation '{op}' is not supported on property '{prop}'", code="not-supported")

    def _values(self, prop: str, c: Concept) -> list[str]:
        if prop in ("code", "concept"):
            return [c.code]
        if prop == "display":
            return [c.display] if c.display else []
        if prop == "parent":
            return list(c.parents)
        if prop == "child":
            return list(c.children)
        if prop in ("inactive",) and prop not in self.property_defs:
            return ["true" if c.inactive else "false"]
        out = []
        for v in c.property_values(prop):
            if isinstance(v, bool):
                out.append("true" if v else "false")
            elif isinstance(v, dict):
                out.append(v.get("code", ""))
            else:
                out.append(str(v))
        if not out and prop == "status" and c.status:
            out.append(c.status)
        return out

    def _hierarchy_filter(self, prop: str, op: str, value: str) -> list[str]:
        anchor = self.get(value)
        if anchor is None:
            return [] if op != "is-not-a" else list(self.order)
        code = anchor.code
        if op == "is-a":
            keep = self.descendants(code) | {code}
        elif op == "descendent-of":
            keep = self.descendants(code)
        elif op == "is-not-a":
            below = self.descendants(code) | {code}
            return [c for c in self.order if c not in below]
        elif op == "generalizes":
            keep = self.ancestors(code) | {code}
        elif op == "child-of":
            keep = set(self.concepts[code].children)
        else:  # descendant-leaf
            keep = {c for c in self.descendants(code) if not self.concepts[c].children}
        return [c for c in self.order if c in keep]


class IndexCache:
    """LRU of built indexes keyed by (url, version, meta.versionId)."""

    def __init__(self, size: int = 256) -> None:
        self.size = size
        self._items: OrderedDict[tuple, CodeSystemIndex] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, resource: Resource, supplements: list[Resource] | None = None) -> CodeSystemIndex:
        supplements = supplements or []
        version_id = (resource.get("meta") or {}).get("versionId")
        key: tuple = (resource.get("url"), resource.get("version"), version_id)
        if version_id is None:
            key += (id(resource),)
        key += tuple((s.get("url"), s.get("version"), id(s)) for s in supplements)
        with self._lock:
            found = self._items.get(key)
            if found is not None and (version_id is not None or found.resource is resource):
                self._items.move_to_end(key)
                return found
        built = CodeSystemIndex(resource, supplements)
        with self._lock:
            self._items[key] = built
            while len(self._items) > self.size:
                self._items.popitem(last=False)
        return built


INDEXES = IndexCache()
