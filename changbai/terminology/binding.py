"""Binding checks for the validator: is a code / Coding / CodeableConcept in the bound value set?

A required binding that is violated is an error naming the code and the value set; extensible and
preferred bindings give warnings (data-quality scoring counts them); example bindings are not checked.

The value sets and code systems of FHIR R4 core bindings ship in ``data/fhir-core.json.gz`` (built by
scripts/build_core_terminology.py) beside the platform's own content. Membership is three-valued: a code
is in, out, or cannot be judged; only "out" is reported (unknown is not the same as wrong). What cannot be
judged: value sets or imports that are not known, code systems we do not hold (SNOMED CT, LOINC beyond
the shipped fragment, BCP-47, ...) unless the include lists its codes, filters over such systems, codings
without a system, CodeableConcepts with text only. A few external systems whose codes have a grammar are
judged by syntax: MIME types (RFC 6838 type/subtype; parameters as RFC 2045, but an unquoted value is
taken as written up to the next ';', as FHIR's own examples write them; and FHIR's format shorthands
xml / json / ttl), ISO 4217 currency codes (three capital letters) and UCUM expressions (the UCUM grammar,
not its table of units).

Validation is on the write path, so verdicts over the shipped content are memoised (the same few codes
come again and again); value sets an operator added to the store are judged afresh in a unit of work.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable
from functools import lru_cache
from typing import TYPE_CHECKING, Any

from changbai.errors import ChangbaiError, Issue
from changbai.terminology.codesystem import CodeSystemIndex
from changbai.terminology.content import core_content
from changbai.terminology.expand import load_index
from changbai.terminology.source import InMemorySource, LayeredSource, TerminologySource, split_canonical
from changbai.terminology.validate import _filter_set

if TYPE_CHECKING:
    from changbai.store.repository import Repository

Resource = dict[str, Any]
Verdict = bool | None  # True: in the value set; False: not in it; None: cannot be judged

_SEVERITY = {"required": "error", "extensible": "warning", "preferred": "warning"}
#: How long the answer "is this value set in the store?" is reused (asking the store for each coded
#: element of each write would be waste).
STORE_LOOKUP_TTL = 60.0
#: Verdicts kept per judge before the memo starts afresh (codes seen in practice are far fewer).
MEMO_SIZE = 50_000


@lru_cache(maxsize=1)
def core_source() -> InMemorySource:
    """The shipped FHIR core terminology alone: what every node knows behind its store."""
    return InMemorySource(core_content()["resources"])


@lru_cache(maxsize=1)
def shipped_source() -> InMemorySource:
    """The platform's shipped content and the FHIR core terminology, in memory (built once)."""
    from changbai.terminology.content import iter_content

    return InMemorySource([*core_content()["resources"], *iter_content()])


# syntax of external code systems ------------------------------------------------------------------------

_MIME_NAME = r"[A-Za-z0-9][A-Za-z0-9!#$&\-^_.+]{0,126}"
_MIME_TOKEN = r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+"
_MIME = re.compile(
    rf"{_MIME_NAME}/{_MIME_NAME}(?:[ \t]*;[ \t]*{_MIME_TOKEN}=(?:\"(?:[^\"\\]|\\.)*\"|[^;\"]*[^\s;\"]))*[ \t]*;?"
)
#: FHIR lets CapabilityStatement.format name its encodings by these short names instead of a MIME type.
_FHIR_FORMATS = {"xml", "json", "ttl"}
# UCUM (https://ucum.org/ucum, §2.1 syntax): a unit symbol is ASCII 33-126 except " ( ) + - . / = [ ] { },
# with [...] groups (anything but brackets and braces inside); it may end in a signed exponent;
# annotations are {...} of ASCII 33-126 without braces.
_UCUM_UNIT = re.compile(r"(?:[!#-'*,0-9:-<>-Z\\^-z|~]|\[[!-Z\\^-z|~]+\])+(?:[+-][0-9]+)?")
_UCUM_ANNOTATION = re.compile(r"\{[!-z|~]*\}")


def _ucum_ok(code: str) -> bool:
    """Whether ``code`` parses as a UCUM expression: ['/'] term; term = component (('.' | '/') component)*;
    component = unit [annotation] | annotation | '(' term ')'. The unit table is not checked."""
    pos = 0

    def component() -> bool:
        nonlocal pos
        if code.startswith("(", pos):
            pos += 1
            if not term() or not code.startswith(")", pos):
                return False
            pos += 1
            return True
        unit = _UCUM_UNIT.match(code, pos)
        if unit:
            pos = unit.end()
        note = _UCUM_ANNOTATION.match(code, pos)
        if note:
            pos = note.end()
        return bool(unit or note)

    def term() -> bool:
        nonlocal pos
        if not component():
            return False
        while pos < len(code) and code[pos] in "./":
            pos += 1
            if not component():
                return False
        return True

    if code.startswith("/"):
        pos = 1
    return term() and pos == len(code)


#: External code systems judged by the form of their codes; the others cannot be judged without content.
SYNTAX: dict[str, Callable[[str], bool]] = {
    "urn:ietf:bcp:13": lambda code: code in _FHIR_FORMATS or _MIME.fullmatch(code) is not None,
    "urn:iso:std:iso:4217": lambda code: re.fullmatch(r"[A-Z]{3}", code) is not None,
    "http://unitsofmeasure.org": _ucum_ok,
}


# three-valued logic -------------------------------------------------------------------------------------


def _any(verdicts: list[Verdict]) -> Verdict:
    if True in verdicts:
        return True
    return None if None in verdicts else False


def _all(verdicts: list[Verdict]) -> Verdict:
    if False in verdicts:
        return False
    return None if None in verdicts else True


class Judge:
    """Membership of codes in the value sets of one source, three-valued and (optionally) memoised."""

    def __init__(self, source: TerminologySource, memo: bool = True) -> None:
        self.source = source
        self.memo: dict[tuple[Any, ...], Verdict] | None = {} if memo else None
        self._indexes: dict[tuple[str, str | None], CodeSystemIndex | None] = {}
        self._systems: dict[str, list[str]] = {}
        self._lock = threading.Lock()

    def value_set(self, canonical: str) -> Resource | None:
        url, version = split_canonical(canonical)
        found = self.source.value_set(url, version)
        if found is None and version:  # a binding to core |4.0.1: the value set of another edition will do
            found = self.source.value_set(url, None)
        return found

    def index(self, system: str, version: str | None) -> CodeSystemIndex | None:
        key = (system, version)
        if key not in self._indexes:
            found = load_index(self.source, system, version)
            if found is None and version:
                found = load_index(self.source, system, None)
            self._indexes[key] = found
        return self._indexes[key]

    def _remember(self, key: tuple[Any, ...], compute: Callable[[], Verdict]) -> Verdict:
        if self.memo is None:
            return compute()
        if key in self.memo:
            return self.memo[key]
        verdict = compute()
        with self._lock:
            if len(self.memo) >= MEMO_SIZE:
                self.memo.clear()
            self.memo[key] = verdict
        return verdict

    # the three shapes of coded values
    def code(self, vs_canonical: str, code: str) -> Verdict:
        """A bare code (a ``code`` element): in the value set under any system it draws from."""
        return self._remember(("code", vs_canonical, code), lambda: self._code(vs_canonical, code))

    def _code(self, vs_canonical: str, code: str) -> Verdict:
        vs = self.value_set(vs_canonical)
        if vs is None:
            return None
        systems = self.systems(vs)
        if not systems:
            return None
        return _any([self.member(vs, system, code) for system in systems])

    def coding(self, vs_canonical: str, coding: dict[str, Any]) -> Verdict:
        system, code, version = coding.get("system"), coding.get("code"), coding.get("version")
        if not isinstance(system, str) or not isinstance(code, str):
            return None  # no system: no defined meaning; no code: nothing to judge
        key = ("coding", vs_canonical, system, code, version)
        return self._remember(key, lambda: self._coding(vs_canonical, system, code, version))

    def _coding(self, vs_canonical: str, system: str, code: str, version: str | None) -> Verdict:
        vs = self.value_set(vs_canonical)
        if vs is None:
            return None
        verdict = self.member(vs, system, code)
        if verdict is False and version:
            index = self.index(system, None)
            if index is not None and index.version and index.version != version:
                return None  # another edition of the code system may hold the code
        return verdict

    def codeable_concept(self, vs_canonical: str, cc: dict[str, Any]) -> Verdict:
        codings = [c for c in cc.get("coding", []) if isinstance(c, dict)]
        if not codings:
            return None  # text only: nothing coded to judge
        return _any([self.coding(vs_canonical, c) for c in codings])

    # value set definitions
    def systems(self, vs: Resource, pathway: tuple[str, ...] = ()) -> list[str]:
        """The code systems a value set draws from (through its imports)."""
        key = f"{vs.get('url')}|{vs.get('version')}"
        if self.memo is not None and key in self._systems:
            return self._systems[key]
        found: list[str] = []
        compose = vs.get("compose") or {}
        for inc in compose.get("include", []):
            if inc.get("system"):
                found.append(inc["system"])
            for canonical in inc.get("valueSet", []):
                imported = self.value_set(canonical)
                if imported is not None and canonical not in pathway:
                    found.extend(self.systems(imported, (*pathway, canonical)))
        if not compose:
            found.extend(c.get("system", "") for c in _flat_contains(vs) if c.get("system"))
        out = list(dict.fromkeys(found))
        self._systems[key] = out
        return out

    def member(self, vs: Resource, system: str, code: str, pathway: tuple[str, ...] = ()) -> Verdict:
        ident = f"{vs.get('url')}|{vs.get('version')}"
        if ident in pathway:
            return None  # a circular definition: not for a binding check to decide
        pathway = (*pathway, ident)
        compose = vs.get("compose") or {}
        if not compose:
            if not vs.get("expansion"):
                return None
            return any(c.get("system") == system and c.get("code") == code for c in _flat_contains(vs))
        found = _any([self._include(inc, system, code, pathway) for inc in compose.get("include", [])])
        if found is not True:
            return found
        excluded = _any([self._include(exc, system, code, pathway) for exc in compose.get("exclude", [])])
        if excluded is not False:
            return False if excluded else None
        if compose.get("inactive") is False:
            index = self.index(system, None)
            concept = index.get(code) if index is not None else None
            if concept is not None and concept.inactive:
                return False
        return True

    def _include(self, inc: dict[str, Any], system: str, code: str, pathway: tuple[str, ...]) -> Verdict:
        parts: list[Verdict] = []
        if inc.get("system"):
            if inc["system"] != system:
                return False
            parts.append(self._in_system(inc, system, code))
        for canonical in inc.get("valueSet", []):
            imported = self.value_set(canonical)
            parts.append(None if imported is None else self.member(imported, system, code, pathway))
        return _all(parts) if parts else False

    def _in_system(self, inc: dict[str, Any], system: str, code: str) -> Verdict:
        index = self.index(system, inc.get("version"))
        listed = inc.get("concept")
        if index is None:  # a code system we do not hold
            if listed:
                return any(c.get("code") == code for c in listed)
            if inc.get("filter"):
                return None
            syntax = SYNTAX.get(system)
            return None if syntax is None else syntax(code)
        concept = index.get(code)
        if concept is None:
            return False if index.content == "complete" else None
        if listed:
            return any(c.get("code") == concept.code for c in listed)
        for f in inc.get("filter", []):
            if "value" not in f:
                return None
            try:
                if concept.code not in _filter_set(index, f):
                    return False
            except ChangbaiError:
                return None  # a filter this engine does not evaluate
        return True


def _flat_contains(vs: Resource) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    stack = list((vs.get("expansion") or {}).get("contains", []))
    while stack:
        item = stack.pop()
        out.append(item)
        stack.extend(item.get("contains", []))
    return out


@lru_cache(maxsize=1)
def shipped_judge() -> Judge:
    return Judge(shipped_source())


def _shown(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, dict) and "coding" in value:
        return ", ".join(_shown(c) for c in value.get("coding", []))
    if isinstance(value, dict):
        return f"{value.get('system', '')}#{value.get('code', '')}" if value.get("system") else str(value.get("code"))
    return str(value)


def _verdict(judge: Judge, valueset: str, value: Any) -> Verdict:
    if isinstance(value, str):
        return judge.code(valueset, value)
    if isinstance(value, dict) and "coding" in value:
        return judge.codeable_concept(valueset, value)
    if isinstance(value, dict) and ("code" in value or "system" in value):
        return judge.coding(valueset, value)
    return None  # a CodeableConcept with text only, or an empty value


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
    judge = shipped_judge() if source is None else Judge(source, memo=False)
    if _verdict(judge, valueset_url, coding_or_code) is not False:
        return None
    vs = judge.value_set(valueset_url) or {}
    url = vs.get("url") or split_canonical(valueset_url)[0]
    label = f"{url}|{vs['version']}" if vs.get("version") else url
    named = f" ({vs['title'] if vs.get('title') else vs['name']})" if vs.get("title") or vs.get("name") else ""
    text = f"The code '{_shown(coding_or_code)}' is not in the value set '{label}'{named} ({strength} binding)"
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

    shipped: dict[str, bool] = {}  # value set canonical -> shipped with the platform? (content that never changes)

    def is_shipped(valueset_url: str) -> bool:
        found = shipped.get(valueset_url)
        if found is None:
            found = shipped[valueset_url] = shipped_judge().value_set(valueset_url) is not None
        return found

    def checker(strength: str, valueset_url: str, value: Any, path: str) -> Issue | None:
        if strength not in _SEVERITY:
            return None
        if repo is None or is_shipped(valueset_url):
            return check_binding(strength, valueset_url, value, path=path)
        url, _version = split_canonical(valueset_url)
        if not in_store(url):
            return None
        from changbai.terminology.service import StoreSource

        with repo.unit(write=False) as unit:
            store = StoreSource(unit)
            # the store in front: an operator's value set may draw on the shipped code systems
            return check_binding(
                strength, valueset_url, value, path=path, source=LayeredSource(store, shipped_source())
            )

    return checker


def binding_checker_for_url(database_url: str) -> Any:
    """The same checker in another process (bulk load's workers), reading the store at ``database_url``."""
    from changbai.store.database import Database
    from changbai.store.repository import Repository

    return binding_checker_for(Repository(Database(database_url, migrate=False)))
