"""The terminology operations as handlers: FHIR Parameters (dict) in, Parameters / ValueSet out.

Each handler takes a :class:`TerminologySource`, the operation's input Parameters, and optionally the
resource the operation is invoked on (instance level, e.g. ``ValueSet/123/$expand``). Errors are raised
as :mod:`changbai.errors` exceptions whose ``outcome()`` is the OperationOutcome to return. The HTTP layer
registers these functions; nothing here knows about HTTP.
"""

from __future__ import annotations

import re
from typing import Any

from changbai.errors import ChangbaiError, InvalidInput
from changbai.terminology.codesystem import property_value
from changbai.terminology.expand import Entry, Options, load_index, pick_display
from changbai.terminology.expand import expand as _expand
from changbai.terminology.params import Inputs, TxError, TxIssue, not_found
from changbai.terminology.source import (
    ChosenSupplements,
    InMemorySource,
    LayeredSource,
    TerminologySource,
    split_canonical,
)
from changbai.terminology.validate import validate

Resource = dict[str, Any]

_ECHO = (
    "activeOnly",
    "displayLanguage",
    "excludeNested",
    "includeDesignations",
    "filter",
    "count",
    "offset",
    "designation",
    "excludeNotForUI",
    "excludePostCoordinated",
    "limitedExpansion",
)


def _request_source(source: TerminologySource, inputs: Inputs) -> TerminologySource:
    extra = [r for r in inputs.all("tx-resource") if isinstance(r, dict)]
    if not extra:
        return source
    return LayeredSource(InMemorySource(extra), source)


def _canonicals(values: list[Any]) -> dict[str, str]:
    out = {}
    for v in values:
        url, version = split_canonical(str(v))
        if version:
            out[url] = version
    return out


#: BCP 47 language tags as displayLanguage and Accept-Language carry them ('*' is any language).
_LANGUAGE_TAG = re.compile(r"\*|[A-Za-z]{1,8}(-[A-Za-z0-9]{1,8})*")


def options(inputs: Inputs, *, accept_language: str | None = None) -> Options:
    langs = inputs.get("displayLanguage") or accept_language
    display_languages = []
    for part in (langs or "").split(","):
        tag, _, quality = part.partition(";")
        if inputs.get("displayLanguage") and not _LANGUAGE_TAG.fullmatch(tag.strip()):
            raise TxError(
                TxIssue(
                    "error",
                    "processing",
                    "invalid-display",
                    f"Invalid displayLanguage: '{inputs.get('displayLanguage')}'",
                ),
                status=400,
            )
        if tag.strip() == "*" and quality.replace(" ", "") == "q=0":
            display_languages.append("-*")  # no fallback to other languages
        elif tag.strip():
            display_languages.append(tag.strip())
    echo = []
    for name in _ECHO:
        for value in inputs.all(name):
            kind = {
                bool: "Boolean",
                int: "Integer",
            }.get(type(value), "Code" if name == "displayLanguage" else "String")
            if name == "displayLanguage" and isinstance(value, str) and ";" in value:
                value = ", ".join(part.strip() for part in value.split(","))
            echo.append({"name": name, f"value{kind}": value})
    return Options(
        active_only=inputs.bool("activeOnly"),
        display_languages=[lang for lang in display_languages if lang],
        include_designations=inputs.bool("includeDesignations"),
        designation_filters=[str(d) for d in inputs.all("designation")],
        properties=[str(p) for p in inputs.all("property")],
        text_filter=inputs.get("filter"),
        offset=inputs.int("offset"),
        count=inputs.int("count"),
        exclude_nested=inputs.bool("excludeNested", False),
        include_definition=inputs.bool("includeDefinition"),
        force_versions=_canonicals(inputs.all("force-system-version")),
        default_versions=_canonicals(inputs.all("system-version")),
        check_versions=_canonicals(inputs.all("check-system-version")),
        default_vs_versions=_canonicals(inputs.all("default-valueset-version")),
        echo=echo,
    )


_VS_SUPPLEMENT = "http://hl7.org/fhir/StructureDefinition/valueset-supplement"


def _check_supplements(source: TerminologySource, inputs: Inputs, vs: Resource | None) -> TerminologySource:
    """Supplements asked for (useSupplement, or the value set's valueset-supplement extension) must exist;
    the source returned applies those and no others."""
    wanted = [str(c) for c in inputs.all("useSupplement")]
    if vs is not None:
        wanted += [str(e.get("valueCanonical")) for e in vs.get("extension", []) if e.get("url") == _VS_SUPPLEMENT]
    for canonical in wanted:
        url, version = split_canonical(canonical)
        found = source.code_system(url, version)
        if found is None or found.get("content") != "supplement":
            raise TxError(
                TxIssue(
                    "error",
                    "not-found",
                    "not-found",
                    f"Required supplement not found: {canonical}",
                    message_id="VALUESET_SUPPLEMENT_MISSING",
                ),
                status=404,
            )
    return ChosenSupplements(source, wanted)


def _with_defaults(inputs: Inputs, vs: Resource, accept_language: str | None) -> Inputs:
    """Expansion parameters the request leaves out, from the Accept-Language header or the value set's own
    valueset-expansion-parameter extensions (which then count as given, and are echoed)."""
    extra: dict[str, Any] = {}
    if "displayLanguage" not in inputs and accept_language:
        extra["displayLanguage"] = accept_language
    for ext in (vs.get("compose") or {}).get("extension", []):
        if ext.get("url") != "http://hl7.org/fhir/StructureDefinition/valueset-expansion-parameter":
            continue
        parts = {
            e.get("url"): next((v for k, v in e.items() if k.startswith("value")), None)
            for e in ext.get("extension", [])
        }
        name = parts.get("name")
        if name in _ECHO and name not in inputs and name not in extra:
            extra[name] = parts.get("value")
    return _merged(inputs, extra)


def _merged(inputs: Inputs, extra: dict[str, Any]) -> Inputs:
    if not extra:
        return inputs
    merged = Inputs(None)
    merged.values = {**inputs.values, **{k: [v] for k, v in extra.items()}}
    return merged


def _value_set(source: TerminologySource, inputs: Inputs, instance: Resource | None) -> Resource:
    if instance is not None:
        return instance
    vs = inputs.get("valueSet")
    if isinstance(vs, dict):
        return vs
    url = inputs.get("url") or inputs.get("valueSetUrl")
    if not url:
        raise InvalidInput("A value set is required: give 'url' or 'valueSet'", expression="url")
    url, version = split_canonical(str(url))
    version = inputs.get("valueSetVersion") or version
    opts_default = _canonicals(inputs.all("default-valueset-version"))
    if version is None and url in opts_default:
        version = opts_default[url]
    found = source.value_set(url, version)
    if found is None:
        shown = f"{url}|{version}" if version else url
        raise not_found(f"A definition for the value Set '{shown}' could not be found")
    return found


def expand(
    source: TerminologySource,
    parameters: Resource | None,
    valueset: Resource | None = None,
    *,
    accept_language: str | None = None,
    limit: int | None = None,
) -> Resource:
    """ValueSet/$expand. ``limit``: the most codes returned without paging (too-costly beyond)."""
    inputs = Inputs(parameters)
    source = _request_source(source, inputs)
    vs = _value_set(source, inputs, valueset)
    source = _check_supplements(source, inputs, vs)
    inputs = _with_defaults(inputs, vs, accept_language)
    opts = options(inputs)
    if limit is not None:
        opts.limit = limit
    return _expand(source, vs, opts)


def validate_code(
    source: TerminologySource,
    parameters: Resource | None,
    valueset: Resource | None = None,
    *,
    accept_language: str | None = None,
) -> Resource:
    """ValueSet/$validate-code (code+system, coding, or codeableConcept)."""
    inputs = Inputs(parameters)
    source = _request_source(source, inputs)
    vs = _value_set(source, inputs, valueset)
    source = _check_supplements(source, inputs, vs)
    inputs = _with_defaults(inputs, vs, accept_language)
    if "displayLanguage" not in inputs and vs.get("language"):  # the value set's own language rules displays
        inputs = _merged(inputs, {"displayLanguage": vs["language"]})
    return _validate(source, inputs, vs, None, accept_language)


def validate_code_cs(
    source: TerminologySource,
    parameters: Resource | None,
    codesystem: Resource | None = None,
    *,
    accept_language: str | None = None,
) -> Resource:
    """CodeSystem/$validate-code."""
    inputs = Inputs(parameters)
    source = _request_source(source, inputs)
    cs_url = codesystem.get("url") if codesystem else inputs.get("url") or inputs.get("system")
    if isinstance(cs_url, str):
        cs_url = split_canonical(cs_url)[0]
    source = _check_supplements(source, inputs, None)
    return _validate(source, inputs, None, cs_url, accept_language)


def _validate(
    source: TerminologySource, inputs: Inputs, vs: Resource | None, cs_url: str | None, accept_language: str | None
) -> Resource:
    opts = options(inputs, accept_language=accept_language)
    common: dict[str, Any] = {
        "opts": opts,
        "cs_url": cs_url,
        "lenient_display": inputs.bool("lenient-display-validation"),
        "abstract_ok": inputs.bool("abstract", True),
        "membership_only": inputs.bool("valueset-membership-only"),
    }
    if inputs.get("codeableConcept") is not None:
        return validate(source, vs, codeable_concept=inputs.get("codeableConcept"), mode="cc", **common)
    if inputs.get("coding") is not None:
        coding = dict(inputs.get("coding"))
        return validate(source, vs, coding=coding, mode="coding", **common)
    code = inputs.get("code")
    if code is None:
        raise TxError(
            TxIssue(
                "error",
                "invalid",
                "",
                "Unable to find code to validate (looked for coding | codeableConcept | code+system | "
                "code+inferSystem in parameters)",
            )
        )
    coding = {"code": code}
    system = inputs.get("system") or cs_url
    if system:
        coding["system"] = system
    version = inputs.get("systemVersion") or inputs.get("version")
    if version:
        coding["version"] = version
    if inputs.get("display") is not None:
        coding["display"] = inputs.get("display")
    return validate(
        source,
        vs,
        coding=coding,
        mode="code",
        infer_system=inputs.bool("inferSystem") or (vs is not None and not system),
        **common,
    )


def lookup(
    source: TerminologySource,
    parameters: Resource | None,
    codesystem: Resource | None = None,
    *,
    accept_language: str | None = None,
) -> Resource:
    """CodeSystem/$lookup: name, version, display, definition, designations, properties."""
    inputs = Inputs(parameters)
    source = _request_source(source, inputs)
    coding = inputs.get("coding") or {}
    system = coding.get("system") or inputs.get("system") or (codesystem or {}).get("url")
    code = coding.get("code") or inputs.get("code")
    version = coding.get("version") or inputs.get("version")
    if not system or not code:
        raise InvalidInput("$lookup needs a system and a code (or a coding)", expression="code")
    source = _check_supplements(source, inputs, None)
    index = load_index(source, system, version)
    if index is None:
        text = (
            f"A definition for CodeSystem '{system}' version '{version}' could not be found, so the code cannot "
            "be validated"
            if version
            else f"A definition for CodeSystem '{system}' could not be found, so the code cannot be validated"
        )
        raise TxError(TxIssue("error", "not-found", "not-found", text, "system", "UNKNOWN_CODESYSTEM"), status=404)
    concept = index.get(code)
    if concept is None:
        raise TxError(
            TxIssue(
                "error",
                "code-invalid",
                "invalid-code",
                f"Unknown code '{code}' in the CodeSystem '{system}' version '{index.version}'",
                "code",
                "Unknown_Code_in_Version",
            ),
            status=404,
        )
    opts = options(inputs, accept_language=accept_language)
    wanted = {str(p) for p in inputs.all("property")}
    every = not wanted or "*" in wanted

    def want(name: str) -> bool:
        return every or name in wanted

    out: list[dict[str, Any]] = [
        {"name": "code", "valueCode": concept.code},
        {"name": "system", "valueUri": index.url},
        {"name": "name", "valueString": index.resource.get("name") or index.url},
    ]
    if index.version:
        out.append({"name": "version", "valueString": index.version})
    entry = Entry(index.url, index.version, concept.code, concept.display, concept, index)
    display = pick_display(entry, opts.display_languages)
    if display:
        out.append({"name": "display", "valueString": display})
    if concept.definition and want("definition"):
        out.append({"name": "definition", "valueString": concept.definition})
    out.append({"name": "abstract", "valueBoolean": concept.abstract})
    if want("designation"):
        if concept.display and index.language:
            out.append(
                {
                    "name": "designation",
                    "part": [
                        {"name": "language", "valueCode": index.language},
                        {
                            "name": "use",
                            "valueCoding": {
                                "system": "http://terminology.hl7.org/CodeSystem/hl7TermMaintInfra",
                                "code": "preferredForLanguage",
                                "display": "Preferred For Language",
                            },
                        },
                        {"name": "value", "valueString": concept.display},
                    ],
                }
            )
        for d in concept.designations:
            parts: list[dict[str, Any]] = []
            if d.get("language"):
                parts.append({"name": "language", "valueCode": d["language"]})
            if d.get("use"):
                parts.append({"name": "use", "valueCoding": d["use"]})
            if id(d) in concept.designation_sources:  # added by a supplement: say which
                parts.append({"name": "source", "valueCanonical": concept.designation_sources[id(d)]})
            parts.append({"name": "value", "valueString": d.get("value")})
            out.append({"name": "designation", "part": parts})
    for p in concept.properties:
        name = p.get("code", "")
        if name in ("parent", "child") or not want(name):
            continue
        kind, value = property_value(p)
        out.append({"name": "property", "part": [{"name": "code", "valueCode": name}, {"name": "value", kind: value}]})
    if want("inactive"):
        out.append(
            {
                "name": "property",
                "part": [
                    {"name": "code", "valueCode": "inactive"},
                    {"name": "value", "valueBoolean": concept.inactive},
                ],
            }
        )
    for rel, codes in (("parent", concept.parents), ("child", concept.children)):
        if want(rel):
            for c in codes:
                part: list[dict[str, Any]] = [{"name": "code", "valueCode": rel}, {"name": "value", "valueCode": c}]
                if index.concepts[c].display:
                    part.append({"name": "description", "valueString": index.concepts[c].display})
                out.append({"name": "property", "part": part})
    for supplement in index.supplements:
        canonical = supplement.get("url", "") + (f"|{supplement['version']}" if supplement.get("version") else "")
        out.append({"name": "used-supplement", "valueCanonical": canonical})
    return {"resourceType": "Parameters", "parameter": out}


def subsumes(source: TerminologySource, parameters: Resource | None, codesystem: Resource | None = None) -> Resource:
    """CodeSystem/$subsumes: equivalent | subsumes | subsumed-by | not-subsumed."""
    inputs = Inputs(parameters)
    source = _request_source(source, inputs)
    a = inputs.get("codingA") or {"code": inputs.get("codeA"), "system": inputs.get("system")}
    b = inputs.get("codingB") or {"code": inputs.get("codeB"), "system": inputs.get("system")}
    system = a.get("system") or b.get("system") or (codesystem or {}).get("url")
    if not system or not a.get("code") or not b.get("code"):
        raise InvalidInput("$subsumes needs a system and two codes (codeA/codeB or codingA/codingB)")
    if (a.get("system") and a["system"] != system) or (b.get("system") and b["system"] != system):
        raise InvalidInput("$subsumes compares codes of one code system only")
    index = load_index(source, system, inputs.get("version"))
    if index is None:
        raise not_found(f"A definition for CodeSystem '{system}' could not be found", "UNKNOWN_CODESYSTEM")
    for c in (a["code"], b["code"]):
        if index.get(c) is None:
            raise InvalidInput(
                f"Unknown code '{c}' in the CodeSystem '{system}' version '{index.version}'", code="code-invalid"
            )
    ca, cb = index.get(a["code"]), index.get(b["code"])
    assert ca is not None and cb is not None
    return {
        "resourceType": "Parameters",
        "parameter": [{"name": "outcome", "valueCode": index.subsumes(ca.code, cb.code)}],
    }


def translate(source: TerminologySource, parameters: Resource | None, conceptmap: Resource | None = None) -> Resource:
    """ConceptMap/$translate (forward, or reverse when only a target code is given)."""
    from changbai.terminology.translate import translate as _translate

    inputs = Inputs(parameters)
    source = _request_source(source, inputs)
    return _translate(source, inputs, conceptmap)


def batch_validate(source: TerminologySource, parameters: Resource | None) -> Resource:
    """$batch-validate-code: one $validate-code per 'validation' parameter, answers in the same order."""
    inputs = Inputs(parameters)
    source = _request_source(source, inputs)
    shared = [p for p in (parameters or {}).get("parameter", []) if p.get("name") not in ("validation", "tx-resource")]
    out = []
    for item in inputs.all("validation"):
        own = item if isinstance(item, dict) and item.get("resourceType") == "Parameters" else {"parameter": []}
        mine = list(own.get("parameter", []))
        named = {p.get("name") for p in mine}  # an entry's own parameter overrides the batch-wide one
        merged = {"resourceType": "Parameters", "parameter": [p for p in shared if p.get("name") not in named] + mine}
        try:
            answer = validate_code(source, merged)
        except ChangbaiError as exc:  # a bad entry is answered in its place; the batch itself succeeds
            answer = exc.outcome()
        out.append({"name": "validation", "resource": answer})
    return {"resourceType": "Parameters", "parameter": out}


CAPABILITY_EXPAND_PARAMETERS = [
    "activeOnly",
    "check-system-version",
    "count",
    "displayLanguage",
    "excludeNested",
    "force-system-version",
    "includeDefinition",
    "includeDesignations",
    "offset",
    "property",
    "system-version",
    "tx-resource",
    "default-valueset-version",
    "filter",
    "designation",
    "useSupplement",
]


def terminology_capabilities() -> Resource:
    """The TerminologyCapabilities statement of the engine (GET /metadata?mode=terminology)."""
    return {
        "resourceType": "TerminologyCapabilities",
        "version": "0.1.0",
        "name": "ChangbaiTerminology",
        "title": "Changbai terminology service",
        "status": "active",
        "date": "2026-11-23",
        "kind": "instance",
        "codeSearch": "all",
        "expansion": {"parameter": [{"name": n} for n in CAPABILITY_EXPAND_PARAMETERS]},
    }


def capability_statement() -> Resource:
    """The terminology part of the server CapabilityStatement (the API merges it into its own)."""
    return {
        "resourceType": "CapabilityStatement",
        "status": "active",
        "kind": "instance",
        "fhirVersion": "4.0.1",
        "format": ["application/fhir+json"],
        "rest": [
            {
                "mode": "server",
                "resource": [
                    {
                        "type": "CodeSystem",
                        "operation": [
                            {
                                "name": "lookup",
                                "definition": "http://hl7.org/fhir/OperationDefinition/CodeSystem-lookup",
                            },
                            {
                                "name": "validate-code",
                                "definition": "http://hl7.org/fhir/OperationDefinition/CodeSystem-validate-code",
                            },
                            {
                                "name": "subsumes",
                                "definition": "http://hl7.org/fhir/OperationDefinition/CodeSystem-subsumes",
                            },
                        ],
                    },
                    {
                        "type": "ValueSet",
                        "operation": [
                            {"name": "expand", "definition": "http://hl7.org/fhir/OperationDefinition/ValueSet-expand"},
                            {
                                "name": "validate-code",
                                "definition": "http://hl7.org/fhir/OperationDefinition/ValueSet-validate-code",
                            },
                        ],
                    },
                    {
                        "type": "ConceptMap",
                        "operation": [
                            {
                                "name": "translate",
                                "definition": "http://hl7.org/fhir/OperationDefinition/ConceptMap-translate",
                            }
                        ],
                    },
                ],
            }
        ],
    }


__all__ = ["expand", "lookup", "options", "subsumes", "translate", "validate_code", "validate_code_cs"]
