"""Build the FHIR R4 core terminology shipped in changbai/terminology/data/fhir-core.json.gz.

The validator checks the bindings of the R4 StructureDefinitions (changbai/fhir/definitions/structure.json);
to judge them it needs the bound ValueSets and the CodeSystems they draw from. This script collects, from
the unpacked npm package hl7.fhir.r4.examples@4.0.1 (CC0), every ValueSet named by a required, extensible
or preferred binding, the ValueSets those import, and the CodeSystems their includes name, and writes them
in a compact form: what membership needs (codes, hierarchy, status / notSelectable properties, filters)
plus displays; definitions, narrative, designations and extensions are dropped.

Code systems the package does not define (UCUM, MIME types, BCP-47, ISO 4217, SNOMED CT, LOINC, ...) are
not shipped: the binding checker treats them as external (see changbai/terminology/binding.py).

Usage: python scripts/build_core_terminology.py [.cache/hl7.fhir.r4.examples/package]
"""

from __future__ import annotations

import gzip
import json
import os
import sys
from typing import Any

ROOT = os.path.normpath(os.path.join(os.path.dirname(__file__), ".."))
STRUCTURE = os.path.join(ROOT, "changbai", "fhir", "definitions", "structure.json")
OUT = os.path.join(ROOT, "changbai", "terminology", "data", "fhir-core.json.gz")
DEFAULT_PKG = os.path.join(ROOT, ".cache", "hl7.fhir.r4.examples", "package")
STRENGTHS = ("required", "extensible", "preferred")
#: Concept properties membership and status need; the others (deprecationDate, ...) are dropped.
KEEP_PROPERTIES = {"notSelectable", "abstract", "status", "inactive", "child", "parent", "subsumedBy"}
CS_KEYS = ("resourceType", "id", "url", "version", "name", "title", "status", "caseSensitive", "hierarchyMeaning",
           "content", "valueSet")  # fmt: skip
VS_KEYS = ("resourceType", "id", "url", "version", "name", "title", "status")


def bound_value_sets() -> dict[str, set[str]]:
    """Value set canonical (without version) -> the binding strengths naming it."""
    with open(STRUCTURE, encoding="utf-8") as fh:
        structure = json.load(fh)
    out: dict[str, set[str]] = {}
    for t in structure["types"].values():
        for element in t["elements"]:
            binding = element[5]
            if binding and binding[0] in STRENGTHS and binding[1]:
                out.setdefault(binding[1].partition("|")[0], set()).add(binding[0])
    return out


def _concepts(concepts: list[dict[str, Any]], used_properties: set[str]) -> list[dict[str, Any]]:
    out = []
    for c in concepts:
        slim: dict[str, Any] = {"code": c["code"]}
        if c.get("display"):
            slim["display"] = c["display"]
        props = [p for p in c.get("property", []) if p.get("code") in used_properties]
        if props:
            slim["property"] = props
        if c.get("concept"):
            slim["concept"] = _concepts(c["concept"], used_properties)
        out.append(slim)
    return out


def slim_code_system(cs: dict[str, Any], filter_properties: set[str]) -> dict[str, Any]:
    used = KEEP_PROPERTIES | filter_properties
    out = {k: cs[k] for k in CS_KEYS if k in cs}
    props = [p for p in cs.get("property", []) if p.get("code") in used]
    if props:
        out["property"] = props
    out["concept"] = _concepts(cs.get("concept", []), used)
    return out


def slim_value_set(vs: dict[str, Any]) -> dict[str, Any]:
    out = {k: vs[k] for k in VS_KEYS if k in vs}
    compose: dict[str, Any] = {}
    for key in ("inactive", "lockedDate"):
        if key in vs.get("compose", {}):
            compose[key] = vs["compose"][key]
    for part in ("include", "exclude"):
        items = []
        for inc in vs.get("compose", {}).get(part, []):
            slim = {k: inc[k] for k in ("system", "version", "filter", "valueSet") if k in inc}
            if inc.get("concept"):
                slim["concept"] = [{k: c[k] for k in ("code", "display") if k in c} for c in inc["concept"]]
            items.append(slim)
        if items:
            compose[part] = items
    if compose:
        out["compose"] = compose
    return out


def build(pkg: str) -> dict[str, Any]:
    by_url: dict[tuple[str, str], dict[str, Any]] = {}
    for name in sorted(os.listdir(pkg)):
        if name.startswith(("ValueSet-", "CodeSystem-")) and name.endswith(".json"):
            with open(os.path.join(pkg, name), encoding="utf-8") as fh:
                r = json.load(fh)
            if r.get("url"):
                by_url[(r["resourceType"], r["url"])] = r
    value_sets: dict[str, dict[str, Any]] = {}
    code_systems: dict[str, dict[str, Any]] = {}
    filter_properties: dict[str, set[str]] = {}
    missing: set[str] = set()
    external: set[str] = set()

    def need(url: str) -> None:
        if url in value_sets or url in missing:
            return
        vs = by_url.get(("ValueSet", url))
        if vs is None:
            missing.add(url)
            return
        value_sets[url] = vs
        for part in ("include", "exclude"):
            for inc in vs.get("compose", {}).get(part, []):
                system = inc.get("system")
                if system:
                    cs = by_url.get(("CodeSystem", system))
                    if cs is not None and cs.get("content") in ("complete", "fragment"):
                        code_systems[system] = cs
                        for f in inc.get("filter", []):
                            filter_properties.setdefault(system, set()).add(f.get("property", ""))
                    else:
                        external.add(system)
                for canonical in inc.get("valueSet", []):
                    need(canonical.partition("|")[0])

    for url in sorted(bound_value_sets()):
        need(url)
    resources = [slim_value_set(vs) for _, vs in sorted(value_sets.items())]
    resources += [slim_code_system(cs, filter_properties.get(url, set())) for url, cs in sorted(code_systems.items())]
    return {
        "source": "npm hl7.fhir.r4.examples 4.0.1 (HL7 International, CC0-1.0)",
        "valueSetsNotInPackage": sorted(missing),
        "externalCodeSystems": sorted(external),
        "resources": resources,
    }


def main(argv: list[str]) -> None:
    pkg = argv[1] if len(argv) > 1 else DEFAULT_PKG
    data = build(pkg)
    raw = json.dumps(data, ensure_ascii=False, separators=(",", ":"), sort_keys=True).encode("utf-8")
    with open(OUT, "wb") as fh:  # mtime 0: the same input gives the same bytes
        fh.write(gzip.compress(raw, compresslevel=9, mtime=0))
    kinds = [r["resourceType"] for r in data["resources"]]
    print(
        f"{OUT}: {kinds.count('ValueSet')} value sets, {kinds.count('CodeSystem')} code systems, "
        f"{len(raw):,} bytes of JSON; external systems: {', '.join(data['externalCodeSystems'])}; "
        f"value sets not in the package: {', '.join(data['valueSetsNotInPackage'])}"
    )


if __name__ == "__main__":
    main(sys.argv)
