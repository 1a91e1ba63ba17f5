"""This module's transaction bundles (HL7 v2, CDA, CSV) written through the store's batch write.

Our mappers build bundles of ``PUT Type/id``, conditional ``PUT Type?query`` and ``POST`` +
``ifNoneExist`` entries whose references to each other are ``urn:uuid`` fullUrls. Once the conditions
are resolved every entry is an update-or-create with a known id, written with :meth:`Unit.put_many`
(the same pipeline per resource as any update: validate, authorise, identify, store, audit, outbox).

Several messages committed in one unit (group commit) share their ``put_many`` calls: :class:`Writes`
collects their resources and writes them together, earlier only when a later message depends on them
(it looks up a resource that an earlier one is about to write, or writes the same resource again).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qsl

import orjson

from changbai.errors import ChangbaiError, InvalidInput, PreconditionFailed
from changbai.fhir.searchparams import registry
from changbai.store.repository import Outcome, Unit

#: (resource type, conditional query) -> ids of the resources matching it (at most two are needed)
Find = Callable[[str, str], list[str]]


def store_find(unit: Unit) -> Find:
    return lambda rtype, query: [id for id, _ in unit.find(rtype, query)]


def apply_bundle(unit: Unit, bundle: dict[str, Any]) -> list[Outcome]:
    """Write a transaction Bundle built by this module's mappers inside ``unit``, with one
    :meth:`Unit.put_many`. A refusal names ``Bundle.entry[i]`` as the platform's transaction does, so the
    ACK can name the segment the entry came from."""
    resources, positions = plan(bundle["entry"], store_find(unit))
    if not resources:
        return []
    try:
        return unit.put_many(resources)
    except ChangbaiError as exc:
        raise _named(unit, resources, positions, exc) from None


def plan(entries: list[dict[str, Any]], find: Find) -> tuple[list[dict[str, Any]], list[int]]:
    """The resources to write for ``entries`` (conditions resolved with ``find``, references pointing to
    the ids written or found; copies, the entries are left as they are) and the entry index of each."""
    writes, mapping = resolve_conditional_updates(find, entries)
    if not writes:
        return [], []
    resources = orjson.loads(orjson.dumps([entry["resource"] for _, entry in writes]))
    conditional = redirect(resources, mapping)
    if conditional:  # e.g. to a patient whose update was skipped as out of order: Patient?identifier=...
        redirect(resources, _resolve_references(find, conditional))
    return resources, [i for i, _ in writes]


def _named(unit: Unit, resources: list[dict[str, Any]], positions: list[int], exc: ChangbaiError) -> ChangbaiError:
    """The refusal of a batch, with the entry that caused it: each resource is written alone in a
    savepoint that is rolled back, until one is refused. Only a failing message pays for this."""
    for resource, where in zip(resources, positions, strict=True):
        savepoint = unit.conn.begin_nested()
        try:
            Unit(unit.repo, unit.conn, unit.ctx).put_many([orjson.loads(orjson.dumps(resource))])
        except ChangbaiError as alone:
            for issue in alone.issues:
                issue.diagnostics = f"Bundle.entry[{where}]: {issue.diagnostics}"
            return alone
        except Exception:  # the database cannot tell more: the refusal as it came
            return exc
        finally:
            savepoint.rollback()
    return exc


def resolve_conditional_updates(
    find: Find, entries: list[dict[str, Any]]
) -> tuple[list[tuple[int, dict[str, Any]]], dict[str, str]]:
    """Resolve the conditions of a bundle: the writes as ``(entry index, PUT Type/id entry)`` and where
    each fullUrl now points (``Type/id``).

    - ``PUT Type?query``: one match -> update that id; none -> create with the entry's own deterministic
      id (its ``urn:uuid``); more -> refused;
    - ``POST`` with ``ifNoneExist``: a match -> nothing written, references point to the match; none ->
      created with the entry's own id.
    """
    writes: list[tuple[int, dict[str, Any]]] = []
    mapping: dict[str, str] = {}
    for i, entry in enumerate(entries):
        req = entry.get("request") or {}
        method, url = req.get("method"), req.get("url", "")
        query = url.partition("?")[2] if method == "PUT" else req.get("ifNoneExist", "") if method == "POST" else ""
        rtype = url.partition("?")[0]
        if not query:
            if method != "PUT" or rtype.count("/") != 1:
                raise InvalidInput(f"Bundle.entry[{i}]: '{method} {url}' is not a write this intake makes")
            writes.append((i, entry))
        else:
            found = find(rtype, query)
            if len(found) > 1:
                raise PreconditionFailed(f"Bundle.entry[{i}]: the condition '{query}' matched {len(found)} resources")
            if found and method == "POST":
                mapping[entry["fullUrl"]] = f"{rtype}/{found[0]}"
                continue
            rid = found[0] if found else entry["fullUrl"].rsplit(":", 1)[-1]
            url = f"{rtype}/{rid}"
            writes.append(
                (i, {**entry, "resource": {**entry["resource"], "id": rid}, "request": {"method": "PUT", "url": url}})
            )
        if entry.get("fullUrl"):
            mapping[entry["fullUrl"]] = url
    return writes, mapping


def redirect(node: Any, mapping: dict[str, str], conditional: set[str] | None = None) -> set[str]:
    """Point references through ``mapping`` (in place); returns the conditional references
    (``Type?query``) left, which :func:`_resolve_references` resolves."""
    conditional = set() if conditional is None else conditional
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "reference" and isinstance(value, str):
                if value in mapping:
                    node[key] = mapping[value]
                elif "?" in value:
                    conditional.add(value)
            elif isinstance(value, dict | list):
                redirect(value, mapping, conditional)
    elif isinstance(node, list):
        for item in node:
            redirect(item, mapping, conditional)
    return conditional


def _resolve_references(find: Find, references: set[str]) -> dict[str, str]:
    """Conditional references -> ``Type/id``; each must match exactly one resource (FHIR transaction rule)."""
    out = {}
    for ref in sorted(references):
        rtype, _, query = ref.partition("?")
        found = find(rtype, query)
        if len(found) != 1:
            raise PreconditionFailed(f"Conditional reference '{ref}' matched {len(found)} resources, not one")
        out[ref] = f"{rtype}/{found[0]}"
    return out


# ------------------------------------------------------------------------------------ several messages
_FOLD = re.compile(r"[\s\-]+")


def _fold(value: str) -> str:
    """Loose form of an identifier value: a looked-up value and a planned one that fold differently
    cannot match, however the store or a search step normalises them (case, blanks, hyphens)."""
    return _FOLD.sub("", value).casefold()


def _identifier_values(rtype: str, query: str) -> set[str] | None:
    """The values an ``identifier=...`` condition asks for, folded; None when the condition is anything
    else (another parameter, a modifier, escapes, or a type whose identifier parameter reads more than
    ``Type.identifier``): such a condition counts as touching every planned resource of its type."""
    param = registry().get(rtype, "identifier")
    if param is None or param.expression != f"{rtype}.identifier" or "\\" in query:
        return None
    pairs = parse_qsl(query, keep_blank_values=True)
    if not pairs or any(name != "identifier" for name, _ in pairs):
        return None
    return {_fold(token.rpartition("|")[2]) for _, value in pairs for token in value.split(",")}


def _held_values(resource: dict[str, Any]) -> set[str]:
    return {
        _fold(ident["value"])
        for ident in resource.get("identifier") or []
        if isinstance(ident, dict) and isinstance(ident.get("value"), str)
    }


class Writes:
    """Resources of several messages in one unit, written with as few :meth:`Unit.put_many` calls as
    their dependencies allow.

    :meth:`find` answers a condition from the store (each distinct condition looked up once between two
    writes) as long as no planned, unwritten resource could change the answer: one of that type whose
    identifiers could match it, or one the store's answer names (its update could drop the identifier).
    Otherwise the planned resources are written first and the store asked again, so a message sees what
    the earlier messages of its unit wrote exactly as if each had its own transaction. :meth:`add` writes
    first too when a message writes a resource that is already planned."""

    def __init__(self, unit: Unit) -> None:
        self.unit = unit
        self.pending: list[dict[str, Any]] = []
        self._keys: set[tuple[str, str]] = set()
        self._by_type: dict[str, list[dict[str, Any]]] = {}
        self._found: dict[tuple[str, str], list[str]] = {}

    def find(self, rtype: str, query: str) -> list[str]:
        found = self._found.get((rtype, query))
        if found is None:
            found = self._found[(rtype, query)] = [id for id, _ in self.unit.find(rtype, query)]
        if self._touches(rtype, query, found):
            self.write()
            return self.find(rtype, query)
        return found

    def _touches(self, rtype: str, query: str, found: list[str]) -> bool:
        planned = self._by_type.get(rtype)
        if not planned:
            return False
        if any((rtype, id) in self._keys for id in found):
            return True
        wanted = _identifier_values(rtype, query)
        return wanted is None or any(wanted & _held_values(r) for r in planned)

    def add(self, resources: list[dict[str, Any]]) -> None:
        if any((r["resourceType"], r["id"]) in self._keys for r in resources):
            self.write()
        for r in resources:
            self.pending.append(r)
            self._keys.add((r["resourceType"], r["id"]))
            self._by_type.setdefault(r["resourceType"], []).append(r)

    def write(self) -> None:
        """Write what is planned (one put_many); the store is then the answer to every condition."""
        if self.pending:
            self.unit.put_many(self.pending)
        self.pending, self._keys, self._by_type, self._found = [], set(), {}, {}
