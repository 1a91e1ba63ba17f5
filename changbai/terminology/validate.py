"""$validate-code against a ValueSet or a CodeSystem, with the issue wording of the tx ecosystem.

Membership is checked include by include against the cached code system index (no full expansion), so a
validation costs a few dict lookups. Version rules follow the tx test suite: force-system-version beats
the ValueSet include, which beats system-version (default) and check-system-version; a coding's own
version must agree with the one the include resolves to.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from changbai.terminology.codesystem import CodeSystemIndex, Concept
from changbai.terminology.expand import (
    Entry,
    Expander,
    Options,
    _canonical_of,
    load_index,
    pick_display,
    resolve_include,
    status_warning,
    unknown_system_text,
)
from changbai.terminology.params import TxError, TxIssue, outcome
from changbai.terminology.source import TerminologySource, split_canonical, version_key, version_matches

Resource = dict[str, Any]
CANNOT_VALIDATE = "the code cannot be validated"
_VS_DEPRECATED = "http://hl7.org/fhir/StructureDefinition/valueset-deprecated"
_STANDARDS_STATUS = "http://hl7.org/fhir/StructureDefinition/structuredefinition-standards-status"


@dataclass
class CodingResult:
    valid: bool = False
    issues: list[TxIssue] = field(default_factory=list)
    concept: Concept | None = None
    index: CodeSystemIndex | None = None
    system: str | None = None
    version: str | None = None
    code: str | None = None
    display: str | None = None
    inactive: bool = False
    unknown_systems: list[str] = field(default_factory=list)
    in_vs: bool = False
    include_unresolved: bool = False
    normalized_code: str | None = None
    unknown_outside: list[str] = field(
        default_factory=list
    )  # unknown systems the value set does not name  # the value set names a version of the system that is not known


def _p(prefix: str, leaf: str) -> str:
    return f"{prefix}.{leaf}" if prefix else leaf


class Validator:
    def __init__(
        self, source: TerminologySource, opts: Options, *, lenient_display: bool = False, abstract_ok: bool = True
    ) -> None:
        self.source = source
        self.opts = opts
        self.lenient_display = lenient_display
        self.abstract_ok = abstract_ok
        self.expander = Expander(source, opts)
        self.results: list[CodingResult] = []
        self.missing_vs: list[str] = []  # imported value sets that do not resolve: membership is unknowable
        self.imported: list[Resource] = []

    def check_imports(self, vs: Resource, pathway: tuple[str, ...] = ()) -> None:
        """Walk the value sets a value set imports (include and exclude): a cycle makes the definition
        invalid (an error whatever the code), an unresolvable import makes membership unknowable."""
        ident = f"{vs.get('url', '')}|{vs.get('version', '')}"
        for inner in vs.get("contained", []):  # '#id' imports name contained value sets
            if inner.get("resourceType") == "ValueSet":
                self.expander.contained.setdefault(f"#{inner.get('id')}", inner)
                if inner.get("url"):
                    self.expander.contained.setdefault(inner["url"], inner)
        compose = vs.get("compose") or {}
        for part in ("include", "exclude"):
            for inc in compose.get(part, []):
                for canonical in inc.get("valueSet", []):
                    try:
                        imported = self.expander.value_set(canonical, ("import",))
                    except TxError:
                        sought = self.expander.sought(canonical)
                        if sought not in self.missing_vs:
                            self.missing_vs.append(sought)
                        continue
                    if all(imported is not seen for seen in self.imported):
                        self.imported.append(imported)
                    target = f"{imported.get('url', '')}|{imported.get('version', '')}"
                    if target in (*pathway, ident):
                        verb = "excluding" if part == "exclude" else "including"
                        raise TxError(
                            TxIssue(
                                "error",
                                "processing",
                                "vs-invalid",
                                f"Found a circularity pointing to {target} processing ValueSet with pathway "
                                f"[{', '.join((*pathway, ident))}]",
                                message_id="VALUESET_CIRCULAR_REFERENCE",
                                extra={"diagnostics": f"Cyclic reference detected when {verb} {target}"},
                            )
                        )
                    self.check_imports(imported, (*pathway, ident))

    # membership
    def includes_for(self, vs: Resource, system: str, pathway: tuple[str, ...] = ()) -> list[dict[str, Any]]:
        """The include entries (recursively through imports) that name this system."""
        out = []
        for inc in (vs.get("compose") or {}).get("include", []):
            if inc.get("system") == system:
                out.append(inc)
            for canonical in inc.get("valueSet", []):
                if canonical in pathway:
                    continue
                try:
                    imported = self.expander.value_set(canonical, (*pathway, canonical))
                except Exception:
                    continue
                out.extend(self.includes_for(imported, system, (*pathway, canonical)))
        return out

    def systems_of(self, vs: Resource) -> list[str]:
        found = []
        for inc in (vs.get("compose") or {}).get("include", []):
            if inc.get("system"):
                found.append(inc["system"])
            for canonical in inc.get("valueSet", []):
                try:
                    found.extend(self.systems_of(self.expander.value_set(canonical, ("x",))))
                except Exception:
                    continue
        return list(dict.fromkeys(found))

    def in_value_set(
        self, vs: Resource, system: str, code: str, index: CodeSystemIndex | None, pathway: tuple[str, ...] = ()
    ) -> bool:
        ident = f"{vs.get('url', '')}|{vs.get('version', '')}"
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
        compose = vs.get("compose") or {}
        if not compose and vs.get("expansion"):
            return any(e.system == system and e.code == code for e in self.expander.entries(vs))
        inactive_ok = compose.get("inactive", True) is not False
        found = any(
            self._include_has(inc, system, code, index, pathway, position)
            for position, inc in enumerate(compose.get("include", []))
        )
        if found and any(self._include_has(exc, system, code, index, pathway) for exc in compose.get("exclude", [])):
            return False
        if found and not inactive_ok and index is not None:
            c = index.get(code)
            if c is not None and c.inactive:
                return False
        return found

    def _include_has(
        self,
        inc: dict[str, Any],
        system: str,
        code: str,
        index: CodeSystemIndex | None,
        pathway: tuple[str, ...] = (),
        position: int = 0,
    ) -> bool:
        if inc.get("system") is not None:
            if inc["system"] != system:
                return False
            idx = index
            if idx is None or (inc.get("version") and not version_matches(inc["version"], idx.version or "")):
                res = resolve_include(self.source, system, inc.get("version"), self.opts)
                idx = res.index if res.index is not None else index
            if idx is None:
                return False
            concept = idx.get(code)
            if concept is None:
                return False
            if inc.get("concept") and not any(c.get("code") == concept.code for c in inc["concept"]):
                return False
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
                if concept.code not in _filter_set(idx, f):
                    return False
        for canonical in inc.get("valueSet", []):
            try:
                imported = self.expander.value_set(canonical, ("import",))
            except Exception:
                return False
            if not self.in_value_set(imported, system, code, index, pathway):
                return False
        return inc.get("system") is not None or bool(inc.get("valueSet"))

    # one coding
    def check_coding(
        self,
        coding: dict[str, Any],
        prefix: str,
        vs: Resource | None,
        *,
        cs_url: str | None = None,
        in_cc: bool = False,
        infer_system: bool = False,
    ) -> CodingResult:
        r = CodingResult()
        self.results.append(r)
        system = coding.get("system") or cs_url
        code = coding.get("code")
        display = coding.get("display")
        coding_version = coding.get("version")
        vs_label = _vs_label(vs) if vs is not None else ""
        r.code = code
        if code is None:
            r.issues.append(TxIssue("error", "required", "invalid-data", "No code provided", _p(prefix, "code")))
            return r
        if not system and vs is not None and infer_system:
            searched = list(self.systems_of(vs))
            candidates = [s for s in searched if self._system_has(s, code)]
            if len(candidates) == 1:
                system = candidates[0]
            else:
                r.issues.append(
                    TxIssue(
                        "error",
                        "not-found",
                        "cannot-infer",
                        f"The System URI could not be determined for the code '{code}' in the ValueSet '{vs_label}'"
                        + (
                            f": value set expansion has multiple matches: [{', '.join(candidates)}]"
                            if len(candidates) > 1
                            else f": the code is in none of the code systems it draws on: [{', '.join(searched)}]"
                            if searched
                            else ""
                        ),
                        _p(prefix, "code"),
                    )
                )
                r.issues.append(_not_in_vs(f"#{code}", vs_label, _p(prefix, "code"), in_cc))
                return r
        if not system:
            r.issues.append(
                TxIssue(
                    "warning",
                    "invalid",
                    "invalid-data",
                    "Coding has no system. A code with no system has no defined meaning, and it cannot be validated. "
                    "A system should be provided",
                    prefix or "code",
                )
            )
            if vs is not None:
                r.issues.append(_not_in_vs(f"#{code}", vs_label, _p(prefix, "code"), in_cc))
            return r
        r.system = system
        # which version
        includes = self.includes_for(vs, system) if vs is not None else []
        include_version = next((i.get("version") for i in includes if i.get("version")), None)
        if coding_version:  # of several versions the value set includes, the one the coding names
            include_version = next(
                (i["version"] for i in includes if i.get("version") and version_matches(i["version"], coding_version)),
                include_version,
            )
        elif vs is not None and system not in self.opts.force_versions:
            include_version = self._pick_include_version(includes, system, code, display) or include_version
        res = resolve_include(self.source, system, include_version, self.opts)
        coding_index = load_index(self.source, system, coding_version) if coding_version else None
        index = res.index
        if coding_version and coding_index is None:
            r.issues.append(
                TxIssue(
                    "error",
                    "not-found",
                    "not-found",
                    unknown_system_text(self.source, system, coding_version, CANNOT_VALIDATE),
                    _p(prefix, "system"),
                    "UNKNOWN_CODESYSTEM_VERSION",
                )
            )
            if self.source.versions("CodeSystem", system):
                r.unknown_systems.append(f"{system}|{coding_version}")
            else:  # no version of it at all: the system itself is what is unknown
                r.unknown_systems.append(system)
                if not includes:
                    r.unknown_outside.append(system)
            if index is not None and res.source_of_spec in ("latest",) and vs is not None:
                r.issues.append(
                    TxIssue(
                        "warning",
                        "invalid",
                        "vs-invalid",
                        f"The code system '{system}' version '{index.version}' for the versionless include in the "
                        f"ValueSet include is different to the one in the value ('{coding_version}')",
                        _p(prefix, "version"),
                        "VALUESET_VALUE_MISMATCH_DEFAULT",
                    )
                )
        if (
            res.spec
            and index is None
            and res.source_of_spec != "latest"
            and not (coding_version and coding_version == res.spec)
        ):
            r.issues.append(
                TxIssue(
                    "error",
                    "not-found",
                    "not-found",
                    unknown_system_text(self.source, system, res.spec, CANNOT_VALIDATE),
                    _p(prefix, "system"),
                    "UNKNOWN_CODESYSTEM_VERSION",
                )
            )
            r.unknown_systems.append(f"{system}|{res.spec}")
            r.include_unresolved = True
        if coding_index is not None and (
            res.source_of_spec in ("latest", "default", "check")
            or (res.source_of_spec == "include" and version_matches(res.spec or "", coding_version or ""))
        ):
            index = coding_index
        mismatch_spec = None
        if coding_version and res.spec and res.source_of_spec != "latest" and vs is not None:
            resolved = index.version if index is not None else res.spec
            if (
                (res.source_of_spec == "include" and not version_matches(res.spec, coding_version))
                or (res.source_of_spec != "include" and (coding_index is None) and resolved != coding_version)
                or (res.source_of_spec == "force" and not version_matches(res.spec, coding_version))
            ):
                mismatch_spec = res.spec
        if mismatch_spec is not None:
            if res.source_of_spec == "include":
                text = (
                    f"The code system '{system}' version '{mismatch_spec}' in the ValueSet include is different to "
                    f"the one in the value ('{coding_version}')"
                )
            else:
                shown = index.version if res.source_of_spec == "default" and index is not None else mismatch_spec
                text = (
                    f"The code system '{system}' version '{shown}' resulting from the version "
                    f"'{include_version or ''}' in the ValueSet include is different to the one in the value "
                    f"('{coding_version}')"
                )
            r.issues.append(
                TxIssue("error", "invalid", "vs-invalid", text, _p(prefix, "version"), "VALUESET_VALUE_MISMATCH")
            )
        if index is None:
            wanted = self.opts.check_versions.get(system) or self.opts.default_versions.get(system)
            index = coding_index or load_index(self.source, system, wanted)
            if index is None and (res.spec or coding_version):
                index = load_index(self.source, system, None)
        if index is None:
            if not r.unknown_systems and self.source.value_set(system, None) is not None:
                r.issues.append(
                    TxIssue(
                        "error",
                        "invalid",
                        "invalid-data",
                        f"The Coding references a value set, not a code system ('{system}')",
                        _p(prefix, "system"),
                        "Terminology_TX_System_ValueSet2",
                    )
                )
            elif not r.unknown_systems:
                if not re.match(r"[A-Za-z][A-Za-z0-9+.-]*:", system):
                    r.issues.append(
                        TxIssue(
                            "error",
                            "invalid",
                            "invalid-data",
                            f"{prefix or 'Coding'}.system must be an absolute reference, not a local reference",
                            _p(prefix, "system"),
                            "Terminology_TX_System_Relative",
                        )
                    )
                # an absolute system the value set does not draw on is named bare (the recorded tx wording for a
                # code looked up outside the value set); one the value set names, or a relative one, quoted
                text = unknown_system_text(self.source, system, None, CANNOT_VALIDATE)
                if vs is not None and not includes and re.match(r"[A-Za-z][A-Za-z0-9+.-]*:", system):
                    text = text.replace(f"'{system}'", system, 1)
                r.issues.append(
                    TxIssue("error", "not-found", "not-found", text, _p(prefix, "system"), "UNKNOWN_CODESYSTEM")
                )
                r.unknown_systems.append(system)
                if not includes:
                    r.unknown_outside.append(system)
            if vs is not None and not includes:  # the value set names that system: membership cannot be judged
                r.issues.append(
                    _not_in_vs(_shown_code(system, coding_version, code, None), vs_label, _p(prefix, "code"), in_cc)
                )
            return r
        if index.content == "supplement":  # a supplement adds to a code system; it defines no codes of its own
            r.issues.append(
                TxIssue(
                    "error",
                    "invalid",
                    "invalid-data",
                    f"CodeSystem {index.url}|{index.version} is a supplement, so can't be used as a value in "
                    f"{prefix or 'Coding'}.system",
                    _p(prefix, "system"),
                    "CODESYSTEM_CS_NO_SUPPLEMENT",
                )
            )
            return r
        r.index = index
        r.version = index.version
        check = self.opts.check_versions.get(system)
        if check and index.version and not version_matches(check, index.version):
            r.issues.append(
                TxIssue(
                    "error",
                    "exception",
                    "version-error",
                    f"The version '{index.version}' is not allowed for system '{system}': required to be '{check}' "
                    "by a version-check parameter",
                    _p(prefix, "version"),
                    "VALUESET_VERSION_CHECK",
                )
            )
        concept = index.get(code)
        if concept is None:
            if index.content in ("fragment",):
                r.issues.append(
                    TxIssue(
                        "warning",
                        "code-invalid",
                        "invalid-code",
                        f"Unknown Code '{code}' in the CodeSystem '{system}' version '{index.version}' - note that "
                        "the code system is labeled as a fragment, so the code may be valid in some other fragment",
                        _p(prefix, "code"),
                        "Unknown_Code_in_Fragment",
                    )
                )
            else:
                r.issues.append(
                    TxIssue(
                        "error",
                        "code-invalid",
                        "invalid-code",
                        f"Unknown code '{code}' in the CodeSystem '{system}' version '{index.version}'",
                        _p(prefix, "code"),
                        "Unknown_Code_in_Version",
                    )
                )
            if index.content == "fragment":
                r.valid = not any(i.severity == "error" for i in r.issues)  # may be valid in another fragment
            elif vs is not None:
                r.issues.append(
                    _not_in_vs(_shown_code(system, coding_version, code, display), vs_label, _p(prefix, "code"), in_cc)
                )
            return r
        r.concept = concept
        r.code = code
        if concept.code != code:  # found in a case-insensitive code system with another case
            r.normalized_code = concept.code
            r.issues.append(
                TxIssue(
                    "information",
                    "business-rule",
                    "code-rule",
                    f"The code '{code}' differs from the correct code '{concept.code}' by case. Although the code "
                    f"system '{system}|{index.version}' is case insensitive, implementers are strongly encouraged to "
                    "use the correct case anyway",
                    _p(prefix, "code"),
                    "CODE_CASE_DIFFERENCE",
                )
            )
        entry = Entry(system, index.version, concept.code, concept.display, concept, index)
        r.display = pick_display(entry, self.opts.display_languages) or concept.display
        r.inactive = concept.inactive
        ok = True
        if vs is not None:
            r.in_vs = self.in_value_set(vs, system, concept.code, index)
            inactive_blocked = concept.inactive and (
                self.opts.active_only or (vs.get("compose") or {}).get("inactive") is False
            )
            if inactive_blocked:
                r.in_vs = False
                r.issues.append(
                    TxIssue(
                        "error",
                        "business-rule",
                        "code-rule",
                        f"The concept '{concept.code}' is valid but is not active",
                        _p(prefix, "code"),
                        "STATUS_CODE_WARNING_CODE",
                    )
                )
            if r.in_vs and self._deprecated_in(vs, system, concept.code):
                r.issues.append(
                    TxIssue(
                        "warning",
                        "business-rule",
                        "code-comment",
                        f"The presence of the concept '{concept.code}' in the system '{system}' in the value set "
                        f"{vs_label} is marked with a status of deprecated and its use should be reviewed",
                        _p(prefix, "code"),
                        "DEPRECATED_CONCEPT_IN_VALUESET",
                    )
                )
            if not r.in_vs and mismatch_spec is None:
                ok = False
                r.issues.append(
                    _not_in_vs(_shown_code(system, coding_version, code, display), vs_label, _p(prefix, "code"), in_cc)
                )
        if concept.inactive:
            status = concept.status if concept.status and concept.status != "inactive" else None
            text = (
                f"The concept '{concept.code}' has a status of {status} and inactive and its use should be reviewed"
                if status
                else f"The concept '{concept.code}' has a status of inactive and its use should be reviewed"
            )
            r.issues.append(
                TxIssue("warning", "business-rule", "code-comment", text, prefix or "code", "INACTIVE_CONCEPT_FOUND")
            )
        elif concept.status == "deprecated":
            r.issues.append(
                TxIssue(
                    "warning",
                    "business-rule",
                    "code-comment",
                    f"The concept '{concept.code}' is deprecated and its use should be reviewed",
                    prefix or "code",
                    "DEPRECATED_CONCEPT_FOUND",
                )
            )
        if concept.abstract and not self.abstract_ok:
            r.issues.append(
                TxIssue(
                    "error",
                    "business-rule",
                    "code-rule",
                    f"Code '{system}#{concept.code}' is abstract, and not allowed in this context",
                    _p(prefix, "code"),
                    "ABSTRACT_CODE_NOT_ALLOWED",
                )
            )
            if vs is not None and r.in_vs:  # not a member where abstract codes are not allowed
                r.in_vs = False
                r.issues.append(
                    _not_in_vs(_shown_code(system, coding_version, code, display), vs_label, _p(prefix, "code"), in_cc)
                )
        if display is not None:
            issue = self._check_display(entry, display, prefix)
            if issue is not None:
                r.issues.append(issue)
        r.valid = ok and not any(i.severity == "error" for i in r.issues)
        return r

    def _pick_include_version(
        self, includes: list[dict[str, Any]], system: str, code: str, display: str | None
    ) -> str | None:
        """When the value set includes several versions of the system and the coding names none: the newest
        version whose include holds the code and accepts the display, else the newest that holds the code."""
        versions = sorted({i["version"] for i in includes if i.get("version")}, key=version_key, reverse=True)
        if len(versions) < 2:
            return None
        holding = None
        for version in versions:
            index = load_index(self.source, system, version)
            concept = index.get(code) if index is not None else None
            if index is None or concept is None:
                continue
            if not any(self._include_has(i, system, code, index) for i in includes if i.get("version") == version):
                continue
            holding = holding or version
            entry = Entry(system, index.version, concept.code, concept.display, concept, index)
            if display is None or self._check_display(entry, display, "") is None:
                return version
        return holding

    def _deprecated_in(self, vs: Resource, system: str, code: str) -> bool:
        """The value set lists the concept with a deprecation mark (valueset-deprecated, or a standards
        status of deprecated on the include's concept entry)."""
        for inc in self.includes_for(vs, system):
            for c in inc.get("concept", []):
                if c.get("code") != code:
                    continue
                for ext in c.get("extension", []):
                    url, value = ext.get("url"), ext.get("valueBoolean", ext.get("valueCode"))
                    if url == _VS_DEPRECATED and value in (True, "true"):
                        return True
                    if url == _STANDARDS_STATUS and value == "deprecated":
                        return True
        return False

    def _system_has(self, system: str, code: str) -> bool:
        idx = load_index(self.source, system, None)
        return idx is not None and idx.get(code) is not None

    def _check_display(self, entry: Entry, display: str, prefix: str) -> TxIssue | None:
        concept, index = entry.concept, entry.index
        assert concept is not None and index is not None
        langs = self.opts.display_languages
        choices: list[tuple[str, str | None]] = []
        if concept.display:
            choices.append((concept.display, index.language))
        retired: list[str] = []  # designations marked deprecated or withdrawn: recognised, but no longer correct
        for d in concept.designations:
            if d.get("value") and _display_use(d.get("use")):
                if _standards_status(d) in ("deprecated", "withdrawn"):
                    retired.append(d["value"])
                else:
                    choices.append((d["value"], d.get("language")))
        if display in retired and all(v != display for v, _ in choices):
            correct = ",".join(f'"{v}"' if " " in v else v for v in dict.fromkeys(v for v, _ in choices))
            return TxIssue(
                "warning",
                "invalid",
                "display-comment",
                f"'{display}' is no longer considered a correct display for code '{concept.code}' (status = "
                f"deprecated). The correct display is one of {correct}.",
                _p(prefix, "display"),
                "INACTIVE_DISPLAY_FOUND",
            )
        wanted = (
            [c for c in choices if c[1] is None or any(_lang_ok(lang, c[1]) for lang in langs)] if langs else choices
        )
        if any(v == display for v, _ in wanted) or (
            not index.case_sensitive and any(v.lower() == display.lower() for v, _ in wanted)
        ):
            return None
        if not wanted and any(v == display for v, _ in choices):
            # right for the code system's own language, but nothing exists in the one asked for: say so
            return TxIssue(
                "information",
                "invalid",
                "invalid-display",
                f"There are no valid display names found for the code {entry.system}#{concept.code} for "
                f"language(s) '{','.join(langs)}'. The display is '{display}' which is a valid display for the "
                "default language",
                _p(prefix, "display"),
                "NO_VALID_DISPLAY_FOUND_LANG_SOME",
            )
        severity = "warning" if self.lenient_display else "error"
        norm = _ws(display)
        lang_label = ",".join(langs) if langs else "--"
        shown = wanted or choices
        if any(_ws(v) == norm for v, _ in shown):
            head = f"Wrong whitespace in Display Name '{display}' for {entry.system}#{concept.code}."
        else:
            head = f"Wrong Display Name '{display}' for {entry.system}#{concept.code}."
        if not wanted:
            text = (
                f"{head} There are no valid display names found for language(s) '{lang_label}'. Default display is "
                f"'{concept.display}'"
            )
        elif len(wanted) == 1:
            v, lang = wanted[0]
            text = (
                f"{head} Valid display is '{v}'"
                + (f" ({lang or index.language})" if (lang or index.language) else "")
                + f" (for the language(s) '{lang_label}')"
            )
        else:
            parts = " or ".join(f"'{v}' ({lang or index.language or '--'})" for v, lang in wanted)
            text = f"{head} Valid display is one of {len(wanted)} choices: {parts} (for the language(s) '{lang_label}')"
        return TxIssue(
            severity,
            "invalid",
            "invalid-display",
            text,
            _p(prefix, "display"),
            "Display_Name_for__should_be_one_of__instead_of",
        )


#: Designation uses that say "this is a way to display the concept" (designation-usage, SNOMED CT's
#: fully specified name and synonym, R5's preferredForLanguage). A designation with another use (an
#: abbreviation, an archaic form ...) is not a valid display; one without a use is.
_DISPLAY_USES = frozenset(
    {
        ("http://terminology.hl7.org/CodeSystem/designation-usage", "display"),
        ("http://snomed.info/sct", "900000000000003001"),
        ("http://snomed.info/sct", "900000000000013009"),
        ("http://terminology.hl7.org/CodeSystem/hl7TermMaintInfra", "preferredForLanguage"),
    }
)


def _standards_status(element: dict[str, Any]) -> str | None:
    for ext in element.get("extension", []):
        if ext.get("url") == "http://hl7.org/fhir/StructureDefinition/structuredefinition-standards-status":
            return str(ext.get("valueCode"))
    return None


def _display_use(use: Any) -> bool:
    return not isinstance(use, dict) or (use.get("system"), use.get("code")) in _DISPLAY_USES


def _lang_ok(wanted: str, have: str) -> bool:
    wanted, have = wanted.lower(), have.lower()
    return wanted == "*" or have == wanted or have.startswith(wanted + "-") or wanted.startswith(have + "-")


def _ws(s: str) -> str:
    return re.sub(r"\s+", " ", s.strip())


def _vs_label(vs: Resource) -> str:
    return f"{vs.get('url')}|{vs.get('version')}" if vs.get("version") else str(vs.get("url"))


def _shown_code(system: str, version: str | None, code: str, display: str | None) -> str:
    out = f"{system}|{version}#{code}" if version else f"{system}#{code}"
    return f"{out} ('{display}')" if display else out


def _not_in_vs(shown: str, vs_label: str, path: str, in_cc: bool) -> TxIssue:
    return TxIssue(
        "information" if in_cc else "error",
        "code-invalid",
        "this-code-not-in-vs" if in_cc else "not-in-vs",
        f"The provided code '{shown}' was not found in the value set '{vs_label}'",
        path,
        "None_of_the_provided_codes_are_in_the_value_set_one",
    )


_FILTER_CACHE_ATTR = "_filter_sets"


def _filter_set(index: CodeSystemIndex, f: dict[str, Any]) -> frozenset[str]:
    cache = index.__dict__.setdefault(_FILTER_CACHE_ATTR, {})
    key = (f.get("property"), f.get("op"), f.get("value"))
    found = cache.get(key)
    if found is None:
        found = frozenset(index.filter(f.get("property", ""), f.get("op", ""), f["value"]))
        cache[key] = found
    return found


def validate(
    source: TerminologySource,
    vs: Resource | None,
    *,
    coding: dict[str, Any] | None = None,
    codeable_concept: dict[str, Any] | None = None,
    mode: str = "coding",
    opts: Options,
    cs_url: str | None = None,
    lenient_display: bool = False,
    abstract_ok: bool = True,
    infer_system: bool = False,
    membership_only: bool = False,
) -> Resource:
    """The Parameters answer of $validate-code for one code / Coding / CodeableConcept."""
    v = Validator(source, opts, lenient_display=lenient_display, abstract_ok=abstract_ok)
    out: list[dict[str, Any]] = []
    issues: list[TxIssue] = []
    unknown: list[str] = []
    if vs is not None:
        v.check_imports(vs)
    if codeable_concept is not None:
        results = []
        for i, c in enumerate(codeable_concept.get("coding", [])):
            results.append(v.check_coding(c, f"CodeableConcept.coding[{i}]", vs, cs_url=cs_url, in_cc=True))
        found = [
            r for r in results if (r.in_vs if vs is not None else r.concept is not None) and not r.include_unresolved
        ]
        chosen = found[0] if found else next((r for r in results if r.concept is not None), None)
        for r in results:
            # once a coding is in the value set, a known coding outside it is no news; an unknown one still is
            known_outside = bool(found) and r.concept is not None
            issues.extend(i for i in r.issues if not (known_outside and i.tx_code == "this-code-not-in-vs"))
            unknown.extend(r.unknown_systems)
        # a code unknown to a fragment may be valid in another fragment: not judged, so not refused
        undecided = [r for r in results if r.valid and r.concept is None]
        if (
            not found
            and not undecided
            and vs is not None
            and results
            and not any(r.include_unresolved for r in results)
        ):
            issues.insert(
                0,
                TxIssue(
                    "error",
                    "code-invalid",
                    "not-in-vs",
                    f"No valid coding was found for the value set '{_vs_label(vs)}'",
                ),
            )
        result = bool(found or undecided) and not any(i.severity == "error" for i in issues)
        if found:
            _describe(out, chosen)  # type: ignore[arg-type]
        out.append({"name": "codeableConcept", "valueCodeableConcept": codeable_concept})
    else:
        prefix = "Coding" if mode == "coding" else ""
        r = v.check_coding(coding or {}, prefix, vs, cs_url=cs_url, infer_system=infer_system)
        issues = r.issues
        unknown = r.unknown_systems
        result = r.valid
        if r.concept is not None or r.code:
            out.append({"name": "code", "valueCode": r.code})
        if r.concept is not None or r.system:
            _describe(out, r, code=False)
    if membership_only:  # the caller asks whether the value set holds the code, nothing else
        issues = [i for i in issues if i.tx_code in ("not-in-vs", "this-code-not-in-vs", "not-found")]
        result = result or (codeable_concept is not None and bool(found))
    if v.missing_vs:  # the value set cannot be evaluated: that is the answer, not the code's membership
        issues = [
            TxIssue(
                "error",
                "not-found",
                "not-found",
                f"A definition for the value Set '{canonical}' could not be found",
                message_id="Unable_to_resolve_value_Set_",
            )
            for canonical in v.missing_vs
        ]
        unknown = []
        result = False
        if codeable_concept is not None:
            out = [{"name": "codeableConcept", "valueCodeableConcept": codeable_concept}]
    referenced = [vs] if vs is not None else []
    referenced += [r.index.resource for r in v.results if r.index is not None]
    referenced += v.imported
    for resource in {id(x): x for x in referenced}.values():
        warning = status_warning(resource)
        if warning and (resource.get("resourceType") == "CodeSystem" or warning in ("withdrawn", "deprecated")):
            issues.append(
                TxIssue(
                    "information",
                    "business-rule",
                    "status-check",
                    f"Reference to {warning} {resource['resourceType']} {_canonical_of(resource)}",
                )
            )
    out.append({"name": "result", "valueBoolean": bool(result)})
    if issues:
        messages = sorted({i.text for i in issues}) if not result else []
        if result and all(i.severity == "information" for i in issues):
            messages = sorted({i.text for i in issues if i.tx_code == "invalid-display"})
        messages = (
            sorted(
                {
                    i.text
                    for i in issues
                    if i.severity != "information"
                    and not (i.severity == "warning" and i.tx_code in ("vs-invalid", "invalid-code", "display-comment"))
                    and i.message_id != "DEPRECATED_CONCEPT_IN_VALUESET"  # a note on the value set, not the code
                }
            )
            or messages
        )
        if messages:
            out.append({"name": "message", "valueString": "; ".join(messages)})
        out.append({"name": "issues", "resource": outcome(issues)})
    outside = {u for r in v.results for u in r.unknown_outside}
    for u in dict.fromkeys(unknown):
        name = "x-unknown-system" if u in outside else "x-caused-by-unknown-system"
        out.append({"name": name, "valueCanonical": u})
    return {"resourceType": "Parameters", "parameter": out}


def _describe(out: list[dict[str, Any]], r: CodingResult, code: bool = True) -> None:
    if code and r.code:
        out.append({"name": "code", "valueCode": r.code})
    if r.system:
        out.append({"name": "system", "valueUri": r.system})
    if r.version:
        out.append({"name": "version", "valueString": r.version})
    if r.display:
        out.append({"name": "display", "valueString": r.display})
    if r.inactive:
        out.append({"name": "inactive", "valueBoolean": True})
    if r.normalized_code:
        out.append({"name": "normalized-code", "valueCode": r.normalized_code})
    # the status is said where it qualifies the answer: deprecated or withdrawn, or why the concept is inactive
    status = r.concept.status if r.concept is not None else None
    if status in ("deprecated", "withdrawn") or (r.inactive and status not in (None, "active", "inactive")):
        out.append({"name": "status", "valueCode": status})


__all__ = ["Validator", "split_canonical", "validate"]
