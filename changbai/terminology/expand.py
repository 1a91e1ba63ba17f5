"""ValueSet expansion: compose include/exclude, concept lists, filters, imports, text filter, paging.

The expander resolves each include's code system through the source (honouring the version rules of
force-system-version / system-version / check-system-version), evaluates it against the cached
:class:`CodeSystemIndex`, and returns entries in the code system's definition order.
"""

from __future__ import annotations

import threading
import uuid
from collections import OrderedDict
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from changbai.terminology.codesystem import INDEXES, CodeSystemIndex, Concept, property_value
from changbai.terminology.params import TxError, TxIssue, not_found
from changbai.terminology.source import (
    TerminologySource,
    is_wildcard,
    split_canonical,
    version_matches,
)
from changbai.terminology.textsearch import fold, words_of

Resource = dict[str, Any]

#: Largest expansion returned without paging (tx servers refuse rather than truncate silently).
MAX_EXPANSION = 10_000
_DESIGNATION_USE_PREFERRED = {
    "system": "http://terminology.hl7.org/CodeSystem/hl7TermMaintInfra",
    "code": "preferredForLanguage",
    "display": "Preferred For Language",
}


#: The ValueSet metadata repeated in an expansion; the definition (compose, descriptive text, the value set's
#: own extensions, contained resources) only when the request asks for it with includeDefinition.
_EXPANSION_KEEPS = (
    "resourceType",
    "id",
    "url",
    "identifier",
    "version",
    "name",
    "title",
    "status",
    "experimental",
    "date",
    "language",
    "immutable",
)


@dataclass
class Options:
    """Expansion / validation parameters that shape the answer."""

    active_only: bool = False
    display_languages: list[str] = field(default_factory=list)
    include_designations: bool = False
    designation_filters: list[str] = field(default_factory=list)
    properties: list[str] = field(default_factory=list)
    text_filter: str | None = None
    offset: int | None = None  # None: not asked for (and not echoed)
    count: int | None = None
    exclude_nested: bool = True
    include_definition: bool = False
    force_versions: dict[str, str] = field(default_factory=dict)
    default_versions: dict[str, str] = field(default_factory=dict)
    check_versions: dict[str, str] = field(default_factory=dict)
    default_vs_versions: dict[str, str] = field(default_factory=dict)
    echo: list[dict[str, Any]] = field(default_factory=list)
    limit: int = MAX_EXPANSION


@dataclass
class Entry:
    system: str
    version: str | None
    code: str
    display: str | None
    concept: Concept | None = None
    index: CodeSystemIndex | None = None
    designations: list[dict[str, Any]] = field(default_factory=list)
    inactive: bool = False
    abstract: bool = False
    #: how the entry was selected: "walk" (a whole code system), "filter", or None (a list, an import...)
    via: str | None = None
    #: extensions on the value set's concept reference (compose.include.concept.extension)
    extensions: list[dict[str, Any]] = field(default_factory=list)

    @property
    def key(self) -> tuple[str, str]:
        return (self.system, self.code)


class Resolution:
    """Which version of a code system an include (or a coding) ends up using, and why."""

    def __init__(self, url: str, spec: str | None, source_of_spec: str, index: CodeSystemIndex | None) -> None:
        self.url = url
        self.spec = spec
        self.source_of_spec = source_of_spec  # include | force | default | check | latest
        self.index = index

    @property
    def version(self) -> str | None:
        return self.index.version if self.index else self.spec


#: Resolution.source_of_spec -> the request parameter that supplied the version.
_VERSION_PARAMETER = {"default": "system-version", "check": "check-system-version"}


def load_index(source: TerminologySource, url: str, version: str | None) -> CodeSystemIndex | None:
    resource = source.code_system(url, version)
    if resource is None:
        return None
    supplements = [
        s
        for s in source.supplements(url)
        if not split_canonical(s.get("supplements", ""))[1]
        or version_matches(split_canonical(s["supplements"])[1] or "", resource.get("version") or "")
    ]
    return INDEXES.get(resource, supplements if supplements else None)


def resolve_include(source: TerminologySource, url: str, include_version: str | None, opts: Options) -> Resolution:
    """Pick the code system version an include uses: force > include > default/check > newest."""
    if url in opts.force_versions:
        spec, why = opts.force_versions[url], "force"
    elif include_version:
        spec, why = include_version, "include"
    elif url in opts.default_versions:
        spec, why = opts.default_versions[url], "default"
    elif url in opts.check_versions:
        spec, why = opts.check_versions[url], "check"
    else:
        spec, why = None, "latest"
    return Resolution(url, spec, why, load_index(source, url, spec))


def valid_versions(source: TerminologySource, url: str) -> str:
    versions = source.versions("CodeSystem", url)
    return " or ".join(versions) if versions else ""


def unknown_system_text(source: TerminologySource, url: str, version: str | None, purpose: str) -> str:
    """The tx wording for a code system that cannot be found (purpose: 'the code cannot be validated')."""
    versions = source.versions("CodeSystem", url)
    if version and versions:
        return (
            f"A definition for CodeSystem '{url}' version '{version}' could not be found, so {purpose}. "
            f"Valid versions: {' or '.join(versions)}"
        )
    if version:
        return (
            f"A definition for CodeSystem '{url}' version '{version}' could not be found, so {purpose}. "
            "No versions of this code system are known"
        )
    return f"A definition for CodeSystem '{url}' could not be found, so {purpose}"


class Expander:
    """Evaluates a ValueSet's compose into entries; one instance per operation call."""

    def __init__(self, source: TerminologySource, opts: Options) -> None:
        self.source = source
        self.opts = opts
        self.used_systems: dict[str, str] = {}
        self.contained: dict[str, Resource] = {}
        self.used_valuesets: list[str] = []
        self.resolved: list[tuple[str, Resource]] = []  # (import as written, the value set it resolved to)
        self.warnings: list[TxIssue] = []
        #: version parameters that decided a version here ((parameter, url) -> version), echoed in the expansion
        self.applied: dict[tuple[str, str], str] = {}
        #: whether the entries can be nested by the code systems' hierarchy: not when a value set is imported,
        #: a concept list or several filters select codes, or a code is reached twice
        self.tree_ok = True

    # resolution
    def sought(self, canonical: str) -> str:
        """The canonical an import is looked up by: a versionless one gets default-valueset-version's."""
        url, version = split_canonical(canonical)
        if version is None and url in self.opts.default_vs_versions:
            self.applied[("default-valueset-version", url)] = self.opts.default_vs_versions[url]
            return f"{url}|{self.opts.default_vs_versions[url]}"
        return canonical

    def value_set(self, canonical: str, pathway: tuple[str, ...] = ()) -> Resource:
        if canonical in self.contained:
            return self.contained[canonical]
        url, version = split_canonical(self.sought(canonical))
        vs = self.source.value_set(url, version)
        if vs is None:
            if pathway:
                shown = f"'{url}' version '{version}'" if version else f"'{url}'"
                raise not_found(f"Unable to find included value set {shown}", "Unable_to_resolve_value_Set_")
            shown = f"{url}|{version}" if version else url
            raise not_found(f"A definition for the value Set '{shown}' could not be found")
        return vs

    def entries(self, vs: Resource, pathway: tuple[str, ...] = ()) -> list[Entry]:
        """All entries of a value set (before text filter and paging), deduplicated, in order."""
        ident = f"{vs.get('url', '')}|{vs.get('version', '')}" if vs.get("url") else str(id(vs))
        if ident in pathway:
            raise TxError(
                TxIssue(
                    "error",
                    "processing",
                    "vs-invalid",
                    f"Found a circularity pointing to {ident} processing ValueSet with pathway [{', '.join(pathway)}]",
                )
            )
        pathway = (*pathway, ident)
        for inner in vs.get("contained", []):  # '#id' references, and contained value sets by url
            if inner.get("resourceType") == "ValueSet":
                self.contained.setdefault(f"#{inner.get('id')}", inner)
                if inner.get("url"):
                    self.contained.setdefault(inner["url"], inner)
        compose = vs.get("compose") or {}
        if not compose and vs.get("expansion"):
            return [
                Entry(c.get("system", ""), c.get("version"), c["code"], c.get("display"))
                for c in _flatten(vs["expansion"].get("contains", []))
            ]
        inactive_ok = compose.get("inactive", True) is not False
        versions_match = versions_match_of(compose)
        several = _systems_with_several_versions(compose)

        def include_key(e: Entry) -> tuple:
            return e.key if versions_match == "true" else (e.system, e.version, e.code)

        def exclude_key(e: Entry) -> tuple:
            by_version = versions_match == "false" or (versions_match is None and e.system in several)
            return (e.system, e.version, e.code) if by_version else e.key

        out: dict[tuple, Entry] = {}
        for part in compose.get("include", []) + compose.get("exclude", []):
            if part.get("valueSet") or part.get("concept") or len(part.get("filter", [])) > 1:
                self.tree_ok = False
        for position, inc in enumerate(compose.get("include", [])):
            for e in self._include(inc, pathway, position=position):
                if include_key(e) in out:
                    self.tree_ok = False
                out.setdefault(include_key(e), e)
        if compose.get("exclude") and out:
            for exc in compose["exclude"]:
                gone = {exclude_key(e) for e in self._include(exc, pathway, excluding=True)}
                out = {k: e for k, e in out.items() if exclude_key(e) not in gone}
        result = list(out.values())
        if not inactive_ok or self.opts.active_only:
            result = [e for e in result if not e.inactive]
        return result

    def _include(
        self, inc: dict[str, Any], pathway: tuple[str, ...], excluding: bool = False, position: int = 0
    ) -> list[Entry]:
        system = inc.get("system")
        imported: list[set[tuple[str, str]]] = []
        imported_entries: list[Entry] = []
        for i, canonical in enumerate(inc.get("valueSet", [])):
            vs = self.value_set(canonical, pathway)
            if canonical not in self.contained:
                self.used_valuesets.append(_canonical_of(vs))
                self.resolved.append((canonical, vs))
            found = self.entries(vs, pathway)
            imported.append({e.key for e in found})
            if i == 0:
                imported_entries = found
        if system is None:
            if not imported:
                return []
            keep = set.intersection(*imported)
            return [e for e in imported_entries if e.key in keep]
        res = resolve_include(self.source, system, inc.get("version"), self.opts)
        if res.source_of_spec in ("default", "check") and res.spec:
            self.applied[(_VERSION_PARAMETER[res.source_of_spec], system)] = res.spec
        index = res.index
        if index is None:
            if excluding:
                return []
            purpose = "the value set cannot be expanded"
            raise TxError(
                TxIssue(
                    "error",
                    "not-found",
                    "not-found",
                    unknown_system_text(self.source, system, res.spec, purpose),
                    message_id="UNKNOWN_CODESYSTEM_VERSION" if res.spec else "UNKNOWN_CODESYSTEM",
                ),
                status=404,
            )
        if index.content == "supplement":
            raise TxError(
                TxIssue(
                    "error",
                    "business-rule",
                    "vs-invalid",
                    f"CodeSystem {index.url}|{index.version} is a supplement, so can't be used as a value in "
                    "ValueSet.compose.include.system",
                )
            )
        check = self.opts.check_versions.get(index.url)
        if check and not excluding and index.version and not version_matches(check, index.version):
            raise TxError(
                TxIssue(
                    "error",
                    "exception",
                    "version-error",
                    f"The version '{index.version}' is not allowed for system '{index.url}': required to be "
                    f"'{check}' by a version-check parameter",
                )
            )
        label = f"{index.url}|{index.version}" if index.version else index.url
        self.used_systems[label] = label
        if inc.get("concept"):
            entries = []
            for c in inc["concept"]:
                concept = index.get(c["code"])
                if concept is None:
                    continue
                entry = self._entry(index, concept)
                if c.get("display"):
                    entry.display = c["display"]
                entry.designations = list(c.get("designation", [])) + entry.designations
                entry.extensions = list(c.get("extension", []))
                entries.append(entry)
        else:
            codes: list[str] | None = None
            for fi, f in enumerate(inc.get("filter", [])):
                if "value" not in f:
                    raise TxError(
                        TxIssue(
                            "error",
                            "invalid",
                            "vs-invalid",
                            f"The system {system} filter with property = {f.get('property')}, op = "
                            f"{f.get('op')} has no value",
                            f"ValueSet.compose.include[{position}].filter[{fi}]",
                        )
                    )
                matched = index.filter(f.get("property", ""), f.get("op", ""), f["value"])
                codes = matched if codes is None else [c for c in codes if c in set(matched)]
            via = "filter"
            if codes is None:
                codes, via = index.order, "walk"
                if any(len(index.concepts[c].parents) > 1 for c in codes):
                    self.tree_ok = False  # a poly-hierarchy: a concept would sit under two parents
            entries = [self._entry(index, index.concepts[c]) for c in codes]
            for e in entries:
                e.via = via
        if imported:
            keep = set.intersection(*imported)
            entries = [e for e in entries if e.key in keep]
        return entries

    def _entry(self, index: CodeSystemIndex, concept: Concept) -> Entry:
        return Entry(
            system=index.url,
            version=index.version,
            code=concept.code,
            display=concept.display,
            concept=concept,
            index=index,
            inactive=concept.inactive,
            abstract=concept.abstract,
        )


#: Properties every code system has, with their canonical uris (R5 concept-properties).
_STANDARD_PROPERTIES = {
    p: f"http://hl7.org/fhir/concept-properties#{p}"
    for p in ("definition", "status", "inactive", "notSelectable", "parent", "child", "deprecated")
}
_STANDARDS_STATUS = "http://hl7.org/fhir/StructureDefinition/structuredefinition-standards-status"


def status_warning(resource: Resource) -> str | None:
    """withdrawn / deprecated (standards-status), draft, experimental: what users should be warned of."""
    for ext in resource.get("extension", []):
        if ext.get("url") == _STANDARDS_STATUS and ext.get("valueCode") in ("withdrawn", "deprecated"):
            return str(ext["valueCode"])
    if resource.get("status") == "draft":
        return "draft"
    if resource.get("experimental") is True:
        return "experimental"
    return None


def _canonical_of(resource: Resource) -> str:
    return f"{resource.get('url')}|{resource.get('version')}" if resource.get("version") else str(resource.get("url"))


def _expansion_parameter(compose: dict[str, Any], name: str) -> str | None:
    for ext in compose.get("extension", []):
        if ext.get("url") == "http://hl7.org/fhir/StructureDefinition/valueset-expansion-parameter":
            parts = {
                e.get("url"): next((v for k, v in e.items() if k.startswith("value")), None)
                for e in ext.get("extension", [])
            }
            if parts.get("name") == name:
                return str(parts.get("value")).lower()
    return None


def versions_match_of(compose: dict[str, Any]) -> str | None:
    """Whether codes of different versions of one code system are the same code ("true"), distinct ("false"),
    or neither said (None): the compose's versionsMatch expansion parameter, else "true" where the value set
    includes some versions of one code system and excludes others (it excludes codes, whatever version)."""
    said = _expansion_parameter(compose, "versionsMatch")
    if said is not None or not compose.get("exclude"):
        return said
    parts = compose.get("include", []) + compose["exclude"]
    included = {p.get("version") for p in compose.get("include", [])}
    if (
        len({p.get("system") for p in parts}) == 1
        and all(p.get("system") and p.get("version") for p in parts)
        and not any(p["version"] in included for p in compose["exclude"])
    ):
        return "true"
    return None


def _systems_with_several_versions(compose: dict[str, Any]) -> set[str]:
    """Systems the compose names with different versions (or with and without one): there, with versionsMatch
    unsaid, an exclude removes a code of the version it names only."""
    seen: dict[str, set[str | None]] = {}
    for part in compose.get("include", []) + compose.get("exclude", []):
        if part.get("system"):
            seen.setdefault(part["system"], set()).add(part.get("version"))
    return {system for system, versions in seen.items() if len(versions) > 1}


def _flatten(contains: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The coded entries of a (possibly nested) contains list, parents before their children."""
    out = []
    stack = list(reversed(contains))
    while stack:
        c = stack.pop()
        if "code" in c:
            out.append(c)
        if "contains" in c:
            stack.extend(reversed(c["contains"]))
    return out


def _search_text(entry: Entry) -> str:
    """What the text filter matches an entry by: its concept's code, display and designations (folded, kept
    on the concept), or, where the value set gives its own display, the code and that display."""
    concept = entry.concept
    if concept is not None and entry.index is not None and entry.display == concept.display:
        if concept.search_text is None:
            concept.search_text = entry.index.search_text(concept)
        return concept.search_text
    return fold("\n".join([entry.code, entry.display or ""]))


def text_matches(entry: Entry, words: list[str]) -> bool:
    hay = _search_text(entry)
    return all(w in hay for w in words)


#: Below this many entries the text filter scans them; above, it asks each code system's text index.
_SCAN_BELOW = 1000


@dataclass
class CachedExpansion:
    """A value set's entries before text filter and paging, with what an answer says about them; reused
    while the value set, the code system indexes and the imported value sets are unchanged, so a filtered
    page of a big value set costs a lookup in the text index, not a new expansion."""

    vs: Resource
    entries: list[Entry]
    used_systems: dict[str, str]
    used_valuesets: list[str]
    indexes: list[CodeSystemIndex]
    resolved: list[tuple[str, Resource]]
    tree_ok: bool
    #: per system, the versions its entries come from
    versions: dict[str, set[str | None]] = field(default_factory=dict)
    #: whether some entries come from a whole code system (a text filter then flattens the answer)
    walked: bool = False
    _positions: dict[tuple[int, str], int] | None = None
    _irregular: list[int] = field(default_factory=list)

    def __post_init__(self) -> None:
        for e in self.entries:
            self.versions.setdefault(e.system, set()).add(e.version)
            self.walked = self.walked or e.via == "walk"

    def matching(self, words: list[str]) -> list[Entry]:
        """The entries that contain every word, in expansion order."""
        if len(self.entries) < _SCAN_BELOW:
            return [e for e in self.entries if text_matches(e, words)]
        positions, irregular = self._where()
        hits = [i for i in irregular if text_matches(self.entries[i], words)]
        for index in self.indexes:
            for code in index.text_index().search(words):
                found = positions.get((id(index), code))
                if found is not None:
                    hits.append(found)
        hits.sort()
        return [self.entries[i] for i in hits]

    def _where(self) -> tuple[dict[tuple[int, str], int], list[int]]:
        """Where each entry of a code system sits, and the entries the text index cannot answer for (no
        code system behind them, or a display the value set gives)."""
        if self._positions is None:
            positions: dict[tuple[int, str], int] = {}
            irregular: list[int] = []
            for i, e in enumerate(self.entries):
                if e.concept is not None and e.index is not None and e.display == e.concept.display:
                    positions[(id(e.index), e.code)] = i
                else:
                    irregular.append(i)
            self._irregular = irregular
            self._positions = positions
        return self._positions, self._irregular


_EXPANSIONS: OrderedDict[tuple, CachedExpansion] = OrderedDict()
_EXPANSIONS_LOCK = threading.Lock()


def _expansion_key(vs: Resource, opts: Options) -> tuple:
    version_id = (vs.get("meta") or {}).get("versionId")
    return (
        vs.get("url"),
        vs.get("version"),
        version_id if version_id is not None else id(vs),
        opts.active_only,
        tuple(sorted(opts.force_versions.items())),
        tuple(sorted(opts.default_versions.items())),
        tuple(sorted(opts.check_versions.items())),
        tuple(sorted(opts.default_vs_versions.items())),
    )


def _same_imports(source: TerminologySource, opts: Options, resolved: list[tuple[str, Resource]]) -> bool:
    """Whether every imported value set still resolves to the resource the cached expansion used (an
    import may have got a new version in the store, or a request may bring its own)."""
    probe = Expander(source, opts)
    for canonical, used in resolved:
        try:
            now = probe.value_set(canonical)
        except TxError:
            return False
        version_id = (used.get("meta") or {}).get("versionId")
        if now is not used and (version_id is None or (now.get("meta") or {}).get("versionId") != version_id):
            return False
    return True


def cached_entries(source: TerminologySource, vs: Resource, opts: Options) -> tuple[CachedExpansion, Expander]:
    key = _expansion_key(vs, opts)
    with _EXPANSIONS_LOCK:
        hit = _EXPANSIONS.get(key)
    if hit is not None and (hit.vs is vs or (vs.get("meta") or {}).get("versionId")):
        fresh = all(load_index(source, i.url, i.version) is i for i in hit.indexes)
        if fresh and _same_imports(source, opts, hit.resolved):
            expander = Expander(source, opts)
            expander.used_systems, expander.used_valuesets = dict(hit.used_systems), list(hit.used_valuesets)
            expander.tree_ok = hit.tree_ok
            return hit, expander
    expander = Expander(source, opts)
    entries = expander.entries(vs)
    cached = CachedExpansion(
        vs,
        entries,
        dict(expander.used_systems),
        list(expander.used_valuesets),
        list({id(e.index): e.index for e in entries if e.index is not None}.values()),
        list(expander.resolved),
        expander.tree_ok,
    )
    with _EXPANSIONS_LOCK:
        _EXPANSIONS[key] = cached
        while len(_EXPANSIONS) > 64:
            _EXPANSIONS.popitem(last=False)
    return cached, expander


def pick_display(entry: Entry, languages: list[str]) -> str | None:
    """The display in the first requested language the concept has (designations), else the default."""
    if not languages or entry.index is None or entry.concept is None:
        return entry.display
    cs_lang = entry.index.language
    for lang in languages:
        if lang == "-*":
            return None  # '*; q=0': only the languages asked for
        if lang == "*":
            return entry.display
        if cs_lang and _lang_match(lang, cs_lang) and entry.display:
            return entry.display
        for d in entry.designations + entry.concept.designations:
            if d.get("language") and _lang_match(lang, d["language"]) and _usable_as_display(d):
                return d.get("value")
    return entry.display


def _usable_as_display(d: dict[str, Any]) -> bool:
    use = d.get("use")
    return not use or use.get("code") in ("display", "preferredForLanguage") or use.get("code") == "900000000000013009"


def _lang_match(wanted: str, have: str) -> bool:
    wanted, have = wanted.lower(), have.lower()
    return have == wanted or have.startswith(wanted + "-") or wanted.startswith(have + "-")


def expand(source: TerminologySource, vs: Resource, opts: Options) -> Resource:
    """$expand: the ValueSet with an ``expansion``: ``contains`` nested by the code systems' hierarchy where the
    selection allows (flat with excludeNested=true), paged by offset/count."""
    cached, expander = cached_entries(source, vs, opts)
    fragments = {
        f"{index.url}|{index.version}" if index.version else index.url: index.url
        for index in cached.indexes
        if index.content == "fragment"
    }
    entries = cached.matching(words_of(opts.text_filter)) if opts.text_filter else cached.entries
    total = len(entries)
    if opts.count is None and total > opts.limit:
        raise TxError(
            TxIssue(
                "error",
                "too-costly",
                "",  # tx-issue-type has no code for this; the issue type says it
                f"The value set '{vs.get('url')}|{vs.get('version')}' expansion has too many codes to display "
                f"(>{opts.limit})",
                message_id="VALUESET_TOO_COSTLY",
            ),
            status=422,
        )
    start = opts.offset or 0
    page = entries[start : start + opts.count if opts.count is not None else None]
    out = {k: v for k, v in vs.items() if k in _EXPANSION_KEEPS or (opts.include_definition and k != "expansion")}
    expansion: dict[str, Any] = {
        "identifier": f"urn:uuid:{uuid.uuid4()}",
        "timestamp": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S+00:00"),
        "total": total,
    }
    if opts.offset is not None:
        expansion["offset"] = opts.offset
    parameters = list(opts.echo)
    if versions_match_of(vs.get("compose") or {}) == "true":
        parameters.append({"name": "versionsMatch", "valueBoolean": True})
    for canonical in expander.used_systems.values():
        parameters.append({"name": "used-codesystem", "valueUri": canonical})
    for index in cached.indexes:
        for supplement in index.supplements:
            parameters.append({"name": "used-supplement", "valueUri": _canonical_of(supplement)})
    for canonical in dict.fromkeys(expander.used_valuesets):
        parameters.append({"name": "used-valueset", "valueUri": canonical})
    for canonical in fragments:  # drawn from a fragment: codes may exist that no one listed
        parameters.append({"name": "used-fragment", "valueUri": canonical})
    if fragments:
        reason = (
            f"This extension is based on a fragment of the code system {', '.join(dict.fromkeys(fragments.values()))}"
        )
        expansion["extension"] = [
            {"url": _SD + "valueset-unclosed", "valueBoolean": True},
            {"url": _SD + "valueset-unclosed-reason", "valueString": reason},
        ]
    for url, ver in opts.force_versions.items():
        parameters.append({"name": "force-system-version", "valueUri": f"{url}|{ver}"})
    for (name, url), ver in expander.applied.items():
        parameters.append({"name": name, "valueUri": f"{url}|{ver}"})
    flagged = [vs, *(index.resource for index in cached.indexes)]
    imported = [source.value_set(*split_canonical(c)) for c in dict.fromkeys(expander.used_valuesets)]
    flagged += [r for r in imported if r is not None]
    for resource in flagged:
        warning = status_warning(resource)
        if warning and (resource.get("resourceType") == "CodeSystem" or warning in ("withdrawn", "deprecated")):
            parameters.append({"name": f"warning-{warning}", "valueUri": _canonical_of(resource)})
    if parameters:
        expansion["parameter"] = parameters
    if opts.properties:
        declared: list[dict[str, Any]] = []
        for p in opts.properties:
            uri = next((i.property_defs[p].get("uri") for i in cached.indexes if p in i.property_defs), None)
            uri = uri or _STANDARD_PROPERTIES.get(p)
            declared.append({"code": p, "uri": uri} if uri else {"code": p})
        expansion["property"] = declared
    # Versions are shown where the meaning of a code may differ by version: the expansion draws on several
    # versions of a system, or the value set itself tells versions apart (includes/excludes naming different ones).
    versions = {system: set(found) for system, found in cached.versions.items()}
    named: dict[str, set[str]] = {}
    for part in (vs.get("compose") or {}).get("include", []) + (vs.get("compose") or {}).get("exclude", []):
        if part.get("system") and part.get("version"):
            named.setdefault(part["system"], set()).add(part["version"])
    for system, named_versions in named.items():
        if len(named_versions) > 1:
            versions.setdefault(system, set()).update(named_versions)
    several = {system for system, found in versions.items() if len(found) > 1}
    contains = [_contains(e, opts, e.system in several) for e in page]
    nest = (
        not opts.exclude_nested
        and expander.tree_ok
        and not fragments
        and not opts.offset
        and (opts.count is None or opts.count > total)
        and not (opts.text_filter and cached.walked)
    )
    if nest:
        contains = _nested(page, contains, opts)
    items = _flatten(contains) if nest else contains
    used = {p.get("code") for item in items if "property" in item for p in item["property"]}
    declared_codes = {d["code"] for d in expansion.get("property", [])}
    for code, uri in _DERIVED_PROPERTIES.items():
        if code in used and code not in declared_codes:
            expansion.setdefault("property", []).append({"code": code, "uri": uri})
    if contains:
        expansion["contains"] = contains
    out["expansion"] = _as_r4(expansion, items)
    return out


#: R5 elements of an expansion that R4 has no place for travel as these cross-version extensions (the tx
#: ecosystem IG's R4 page): expansion.property and expansion.contains.property.
R5_EXPANSION = "http://hl7.org/fhir/5.0/StructureDefinition/extension-ValueSet.expansion."


def _as_r4(expansion: dict[str, Any], items: list[dict[str, Any]]) -> dict[str, Any]:
    """The expansion with its R5 property declarations and values (on ``items``, its contains entries)
    moved into their R4 extensions."""
    declared = expansion.pop("property", None)
    if declared:
        expansion.setdefault("extension", []).extend(
            {
                "url": R5_EXPANSION + "property",
                "extension": [{"url": "code", "valueCode": d["code"]}]
                + ([{"url": "uri", "valueUri": d["uri"]}] if d.get("uri") else []),
            }
            for d in declared
        )
    for item in items:
        values = item.pop("property", None) if "property" in item else None
        if values:
            extensions = []
            for v in values:
                kind, value = property_value(v)
                extensions.append(
                    {
                        "url": R5_EXPANSION + "contains.property",
                        "extension": [{"url": "code", "valueCode": v.get("code")}, {"url": "value", kind: value}],
                    }
                )
            item["extension"] = [*item.get("extension", []), *extensions]
    return expansion


def _nested(entries: list[Entry], items: list[dict[str, Any]], opts: Options) -> list[dict[str, Any]]:
    """The expansion as a tree (excludeNested=false): each code under its nearest parent in the expansion.
    Walking a whole code system, a parent left out only for being inactive (activeOnly) hands its children to
    its own parent; codes selected by a filter go under their parent only if it was selected too."""
    node = {(e.system, e.version, e.code): item for e, item in zip(entries, items, strict=True)}
    roots = []
    for e, item in zip(entries, items, strict=True):
        parent = None
        concept, index = e.concept, e.index
        while concept is not None and index is not None and concept.parents:
            above = index.concepts.get(concept.parents[0])
            if above is None:
                break
            parent = node.get((e.system, e.version, above.code))
            if parent is not None or e.via != "walk" or not (opts.active_only and above.inactive):
                break
            concept = above
        if parent is None:
            roots.append(item)
        else:
            parent.setdefault("contains", []).append(item)
    return roots


def _contains(e: Entry, opts: Options, show_version: bool = False) -> dict[str, Any]:
    item: dict[str, Any] = {"system": e.system}
    if show_version and e.version:
        item["version"] = e.version
    if e.abstract:
        item["abstract"] = True
    if e.inactive:
        item["inactive"] = True
    item["code"] = e.code
    display = pick_display(e, opts.display_languages)
    if display:
        item["display"] = display
    if opts.include_designations and e.concept is not None:
        designations = []
        lang = e.index.language if e.index else None
        if display != e.display and e.display and lang:
            # the display was taken from another language: the default one becomes a designation
            designations.append({"language": lang, "use": dict(_DESIGNATION_USE_PREFERRED), "value": e.display})
        skipped = False
        for d in e.designations + e.concept.designations:
            if d.get("value") == display and not skipped:
                d_lang = d.get("language")
                if display == e.display:
                    same = not d_lang or d_lang == lang
                else:
                    same = any(_lang_match(want, d_lang or "") for want in opts.display_languages)
                if same:
                    skipped = display != e.display
                    continue
            designations.append(d)
        if opts.designation_filters:  # the 'designation' parameter: only these uses / languages
            designations = [d for d in designations if _designation_wanted(d, opts.designation_filters)]
        if designations:
            item["designation"] = designations
    props = []
    if opts.properties and e.concept is not None:
        for p in e.concept.properties:
            if p.get("code") in opts.properties:
                props.append(p)
        if "definition" in opts.properties and e.concept.definition:
            props.append({"code": "definition", "valueString": e.concept.definition})
    concept = e.concept
    status = concept_status(concept) if concept is not None and (concept.status or concept.extensions) else None
    if status and not any(p.get("code") == "status" for p in props):
        props.append({"code": "status", "valueCode": status})  # why a code is inactive or deprecated
    code_system_ext = e.concept.extensions if e.concept is not None else []
    if code_system_ext or e.extensions:
        all_ext = [*code_system_ext, *e.extensions]  # the value set's word is the last one
        for code, sources in _EXTENSION_PROPERTIES.items():
            value = None
            for ext in all_ext:
                if ext.get("url") in sources:
                    _kind, value = property_value(ext)
            if value is not None and not any(p.get("code") == code for p in props):
                props.append({"code": code, f"value{'String' if code == 'label' else 'Decimal'}": value})
        extensions = [x for x in code_system_ext if x.get("url") in _ECHOED_CS_EXTENSIONS]
        extensions += [x for x in e.extensions if x.get("url") in _ECHOED_VS_EXTENSIONS]
        if extensions:
            item = {"extension": extensions, **item}
    if props:
        item["property"] = props
    return item


_SD = "http://hl7.org/fhir/StructureDefinition/"
#: R5 concept properties an expansion shows from extensions on the concept (code system first, then the
#: value set's concept reference): code -> extension urls
_EXTENSION_PROPERTIES = {
    "label": (_SD + "codesystem-label", _SD + "valueset-label"),
    "order": (_SD + "codesystem-conceptOrder", _SD + "valueset-conceptOrder"),
    "weight": (_SD + "itemWeight",),
}
#: properties an expansion may add on its own, with their R5 concept-properties uris
_DERIVED_PROPERTIES = {
    "status": "http://hl7.org/fhir/concept-properties#status",
    "label": "http://hl7.org/fhir/concept-properties#label",
    "order": "http://hl7.org/fhir/concept-properties#order",
    "weight": "http://hl7.org/fhir/concept-properties#itemWeight",
}
#: extensions of a code system concept repeated on its expansion entry
_ECHOED_CS_EXTENSIONS = frozenset(
    _SD + n for n in ("coding-sctdescid", "rendering-style", "rendering-xhtml", "codesystem-alternate")
)
#: extensions of a value set's concept reference repeated on the expansion entry
_ECHOED_VS_EXTENSIONS = frozenset(
    _SD + n
    for n in (
        "valueset-supplement",
        "valueset-deprecated",
        "structuredefinition-standards-status",
        "valueset-concept-definition",
        "coding-sctdescid",
        "rendering-style",
        "rendering-xhtml",
    )
)


def _designation_wanted(d: dict[str, Any], wanted: list[str]) -> bool:
    """Whether a designation is one the request names (system|code of its use, or urn:ietf:bcp:47|language)."""
    use = d.get("use") or {}
    for token in wanted:
        system, _, code = token.partition("|")
        if use.get("system") == system and use.get("code") == code:
            return True
        if system == "urn:ietf:bcp:47" and d.get("language") == code:
            return True
    return False


def concept_status(concept: Concept | None) -> str | None:
    """A status worth showing beside a code (R5 concept-properties#status): the concept's own status
    property when it is not 'active', else the standards-status of its definition."""
    if concept is None:
        return None
    if concept.status and str(concept.status).lower() != "active":
        return str(concept.status)
    for ext in concept.extensions:
        if ext.get("url") == _STANDARDS_STATUS and ext.get("valueCode"):
            return str(ext["valueCode"])
    return None


__all__ = [
    "Entry",
    "Expander",
    "Options",
    "Resolution",
    "expand",
    "is_wildcard",
    "load_index",
    "pick_display",
    "resolve_include",
]
