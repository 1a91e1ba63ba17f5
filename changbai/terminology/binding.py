"""Binding checks for the validator: is a code / Coding / CodeableConcept in the bound value set?

A required binding that is violated is an error naming the code and the value set; extensible and
preferred bindings give warnings (data-quality scoring counts them); example bindings are not checked.
When the value set or its code system is not known to the terminology service the binding cannot be
judged and nothing is reported (unknown is not the same as wrong).
"""

from __future__ import annotations

import time
from functools import lru_cache
from typing import TYPE_CHECKING, Any

from changbai.errors import ChangbaiError, Issue
from changbai.terminology.expand import Options
from changbai.terminology.source import InMemorySource, LayeredSource, TerminologySource, split_canonical
from changbai.terminology.validate import validate

if TYPE_CHECKING:
    from changbai.store.repository import Repository

_SEVERITY = {"required": "error", "extensible": "warning", "preferred": "warning"}
#: How long the answer "is this value set in the store?" is reused (most bindings name FHIR core value
#: sets that are not loaded; asking the store for each coded element of each write would be waste).
STORE_LOOKUP_TTL = 60.0


@lru_cache(maxsize=1)
def shipped_source() -> InMemorySource:
    """The platform's shipped content, in memory (built once)."""
    from changbai.terminology.content import iter_content

    return InMemorySource(iter_content())


def _shown(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, dict) and "coding" in value:
        return ", ".join(_shown(c) for c in value.get("coding", []))
    if isinstance(value, dict):
        return f"{value.get('system', '')}#{value.get('code', '')}" if value.get("system") else str(value.get("code"))
    return str(value)


def check_binding(
    strength: str,
    valueset_url: str,
    coding_or_code: Any,
    *,
    path: str | None = None,
    source: TerminologySource | None = None,
) -> Issue | None:
    """None when the value is in the value set (or cannot be judged); otherwise the Issue to report."""
    severity = _SEVERITY.get(strength)
    if severity is None or coding_or_code is None:
        return None
    source = source or shipped_source()
    url, version = split_canonical(valueset_url)
    vs = source.value_set(url, version)
    if vs is None:
        return None
    kwargs: dict[str, Any] = {"opts": Options()}
    try:
        if isinstance(coding_or_code, str):
            answer = validate(source, vs, coding={"code": coding_or_code}, mode="code", infer_system=True, **kwargs)
        elif isinstance(coding_or_code, dict) and "coding" in coding_or_code:
            answer = validate(source, vs, codeable_concept=coding_or_code, mode="cc", **kwargs)
        elif isinstance(coding_or_code, dict):
            answer = validate(source, vs, coding=coding_or_code, mode="coding", **kwargs)
        else:
            return None
    except ChangbaiError:
        return None
    params = {p["name"]: p for p in answer["parameter"]}
    if params["result"]["valueBoolean"]:
        return None
    issues = params.get("issues", {}).get("resource", {}).get("issue", [])
    if any(i["details"]["coding"][0]["code"] == "not-found" for i in issues):
        return None  # the code system is unknown here: cannot judge
    label = f"{url}|{vs['version']}" if vs.get("version") else url
    kind = {"required": "required", "extensible": "extensible", "preferred": "preferred"}[strength]
    text = f"The code '{_shown(coding_or_code)}' is not in the value set '{label}' ({kind} binding)"
    return Issue(text, "code-invalid", severity, [path] if path else [])


def binding_checker_for(repo: Repository | None = None) -> Any:
    """The hook for changbai.fhir.validation: (strength, valueset_url, value, path) -> Issue | None.

    Looks in the shipped content first, then in the store (value sets an operator has added)."""

    stored: dict[str, tuple[float, bool]] = {}  # value set url -> (until, in the store?)

    def in_store(url: str) -> bool:
        now = time.monotonic()
        hit = stored.get(url)
        if hit is not None and hit[0] > now:
            return hit[1]
        with repo.unit(write=False) as unit:  # type: ignore[union-attr]
            exists = bool(unit.search("ValueSet", [("url", url), ("_count", "1")]).matches)
        stored[url] = (now + STORE_LOOKUP_TTL, exists)
        return exists

    def checker(strength: str, valueset_url: str, value: Any, path: str) -> Issue | None:
        if strength not in _SEVERITY:
            return None
        found = check_binding(strength, valueset_url, value, path=path)
        if found is not None or repo is None:
            return found
        url, version = split_canonical(valueset_url)
        if shipped_source().value_set(url, version) is not None or not in_store(url):
            return None
        from changbai.terminology.service import StoreSource

        with repo.unit(write=False) as unit:
            store = StoreSource(unit)
            return check_binding(
                strength, valueset_url, value, path=path, source=LayeredSource(shipped_source(), store)
            )

    return checker


def binding_checker_for_url(database_url: str) -> Any:
    """The same checker in another process (bulk load's workers), reading the store at ``database_url``."""
    from changbai.store.database import Database
    from changbai.store.repository import Repository

    return binding_checker_for(Repository(Database(database_url, migrate=False)))
