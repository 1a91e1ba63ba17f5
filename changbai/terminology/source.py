"""Where the engine finds terminology resources: a protocol with an in-memory implementation.

The engine asks a :class:`TerminologySource` for CodeSystems, ValueSets and ConceptMaps by canonical url
and optional version, so the same operations run over a list of dicts (tests, the tx suite, the shipped
content) and over the store (an adapter implementing the same three methods).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from typing import Any, Protocol

Resource = dict[str, Any]


class TerminologySource(Protocol):
    def code_system(self, url: str, version: str | None = None) -> Resource | None: ...

    def value_set(self, url: str, version: str | None = None) -> Resource | None: ...

    def concept_map(self, url: str, version: str | None = None) -> Resource | None: ...

    def versions(self, resource_type: str, url: str) -> list[str]: ...

    def concept_maps(self) -> Iterable[Resource]: ...

    def supplements(self, url: str) -> list[Resource]: ...


def split_canonical(canonical: str) -> tuple[str, str | None]:
    """'url|version' -> (url, version)."""
    url, sep, version = canonical.partition("|")
    return url, (version if sep and version else None)


def version_key(version: str) -> tuple:
    """Sort key putting 1.10.0 after 1.9.0 and numbers before text."""
    parts = re.split(r"[.\-+]", version)
    return tuple((0, int(p), "") if p.isdigit() else (1, 0, p) for p in parts)


def is_wildcard(version: str | None) -> bool:
    return bool(version) and any(p in ("x", "X", "*") for p in version.split("."))  # type: ignore[union-attr]


def version_matches(pattern: str, version: str) -> bool:
    """Whether a version matches a pattern that may use x / * as wildcard parts (1.x, 1.0.x)."""
    if pattern == version:
        return True
    if not is_wildcard(pattern):
        return False
    want = pattern.split(".")
    have = version.split(".")
    for i, part in enumerate(want):
        if part in ("x", "X", "*"):
            continue
        if i >= len(have) or have[i] != part:
            return False
    return True


def pick_version(candidates: list[Resource], version: str | None) -> Resource | None:
    """The resource of that version (exact, else wildcard match, newest first), or the newest one."""
    if not candidates:
        return None
    if version:
        for r in candidates:
            if r.get("version") == version:
                return r
        matching = [r for r in candidates if r.get("version") and version_matches(version, r["version"])]
        if not matching:
            return None
        candidates = matching
    best = max(range(len(candidates)), key=lambda i: (version_key(candidates[i].get("version") or ""), i))
    return candidates[best]


class InMemorySource:
    """Resources held in dicts. Several resources may share url and version (as in a store); lookups
    then answer the one added last, and ConceptMap iteration sees them all."""

    def __init__(self, resources: Iterable[Resource] = ()) -> None:
        self._by_type: dict[str, dict[str, list[Resource]]] = {"CodeSystem": {}, "ValueSet": {}, "ConceptMap": {}}
        for r in resources:
            self.add(r)

    def add(self, resource: Resource) -> None:
        kind = resource.get("resourceType")
        url = resource.get("url")
        if kind not in self._by_type or not url:
            return
        bucket = self._by_type[kind].setdefault(url, [])
        bucket[:] = [r for r in bucket if r is not resource]
        bucket.append(resource)

    def __iter__(self) -> Iterator[Resource]:
        for by_url in self._by_type.values():
            for bucket in by_url.values():
                yield from bucket

    def _get(self, kind: str, url: str, version: str | None) -> Resource | None:
        if version is None and "|" in url:
            url, version = split_canonical(url)
        return pick_version(self._by_type[kind].get(url, []), version)

    def code_system(self, url: str, version: str | None = None) -> Resource | None:
        found = self._get("CodeSystem", url, version)
        return found

    def value_set(self, url: str, version: str | None = None) -> Resource | None:
        return self._get("ValueSet", url, version)

    def concept_map(self, url: str, version: str | None = None) -> Resource | None:
        return self._get("ConceptMap", url, version)

    def versions(self, resource_type: str, url: str) -> list[str]:
        found = {r.get("version") or "" for r in self._by_type[resource_type].get(url, [])}
        return sorted((v for v in found if v), key=version_key)

    def concept_maps(self) -> Iterable[Resource]:
        for bucket in self._by_type["ConceptMap"].values():
            yield from bucket

    def supplements(self, url: str) -> list[Resource]:
        out = []
        for bucket in self._by_type["CodeSystem"].values():
            for r in bucket:
                if r.get("content") == "supplement" and split_canonical(r.get("supplements", ""))[0] == url:
                    out.append(r)
        return out


class LayeredSource:
    """One source in front of another: a request's own resources (tx-resource parameters, contained) in
    front of the store, or the store in front of the shipped FHIR core terminology."""

    def __init__(self, front: TerminologySource, base: TerminologySource) -> None:
        self.front = front
        self.base = base

    def code_system(self, url: str, version: str | None = None) -> Resource | None:
        return self.front.code_system(url, version) or self.base.code_system(url, version)

    def value_set(self, url: str, version: str | None = None) -> Resource | None:
        return self.front.value_set(url, version) or self.base.value_set(url, version)

    def concept_map(self, url: str, version: str | None = None) -> Resource | None:
        return self.front.concept_map(url, version) or self.base.concept_map(url, version)

    def versions(self, resource_type: str, url: str) -> list[str]:
        both = set(self.front.versions(resource_type, url)) | set(self.base.versions(resource_type, url))
        return sorted(both, key=version_key)

    def concept_maps(self) -> Iterable[Resource]:
        yield from self.front.concept_maps()
        yield from self.base.concept_maps()

    def supplements(self, url: str) -> list[Resource]:
        return self.front.supplements(url) + self.base.supplements(url)


class ChosenSupplements:
    """A source whose code systems carry only the supplements a request names (useSupplement, or the value
    set's valueset-supplement extension): a supplement changes what a code system says, so it applies only
    where asked for."""

    def __init__(self, base: TerminologySource, wanted: list[str]) -> None:
        self.base = base
        self.wanted = [split_canonical(c) for c in wanted]

    def code_system(self, url: str, version: str | None = None) -> Resource | None:
        return self.base.code_system(url, version)

    def value_set(self, url: str, version: str | None = None) -> Resource | None:
        return self.base.value_set(url, version)

    def concept_map(self, url: str, version: str | None = None) -> Resource | None:
        return self.base.concept_map(url, version)

    def versions(self, resource_type: str, url: str) -> list[str]:
        return self.base.versions(resource_type, url)

    def concept_maps(self) -> Iterable[Resource]:
        return self.base.concept_maps()

    def supplements(self, url: str) -> list[Resource]:
        return [
            s
            for s in self.base.supplements(url)
            if any(s.get("url") == u and (v is None or s.get("version") == v) for u, v in self.wanted)
        ]
