"""Build the compact FHIR R4 definitions shipped in changbai/fhir/definitions/.

Reads the unpacked npm package hl7.fhir.r4.examples@4.0.1 (CC0) and writes:

- structure.json: for every resource and data type, its elements (path, cardinality, types,
  contentReference, binding, isSummary), and for every primitive type its JSON kind and regex;
- search-parameters.json: the 1,375 SearchParameter resources of Bundle-searchParams.json, with the
  fields the server uses;
- compartments.json: the CompartmentDefinitions (which parameters put a resource in a compartment).

Usage: npm pack hl7.fhir.r4.examples@4.0.1 && tar xzf hl7.fhir.r4.examples-4.0.1.tgz
       python scripts/build_definitions.py package/
"""

from __future__ import annotations

import glob
import json
import os
import sys

OUT = os.path.join(os.path.dirname(__file__), "..", "changbai", "fhir", "definitions")
FHIR_TYPE_EXT = "http://hl7.org/fhir/StructureDefinition/structuredefinition-fhir-type"
REGEX_EXT = "http://hl7.org/fhir/StructureDefinition/regex"


def _load(path: str) -> dict:
    with open(path, encoding="utf-8") as fh:
        return json.load(fh)


def _type_code(t: dict) -> str:
    code = t["code"]
    if code.startswith("http://hl7.org/fhirpath/System."):
        for ext in t.get("extension", []):
            if ext["url"] == FHIR_TYPE_EXT:
                return ext.get("valueUrl") or ext.get("valueUri")
        return "string"
    return code


def build(pkg: str) -> None:
    structure: dict = {"resources": [], "types": {}, "primitives": {}}
    for path in sorted(glob.glob(os.path.join(pkg, "StructureDefinition-*.json"))):
        sd = _load(path)
        if sd.get("derivation") == "constraint" or sd.get("kind") == "logical":
            continue
        name = sd["type"]
        if sd["kind"] == "primitive-type":
            value = next(e for e in sd["snapshot"]["element"] if e["path"] == f"{name}.value")
            regex = None
            for ext in value["type"][0].get("extension", []):
                if ext["url"] == REGEX_EXT:
                    regex = ext["valueString"]
            json_kind = {
                "boolean": "boolean",
                "integer": "integer",
                "positiveInt": "integer",
                "unsignedInt": "integer",
                "decimal": "number",
            }.get(name, "string")
            structure["primitives"][name] = {"json": json_kind, "regex": regex}
            continue
        if sd["kind"] == "resource" and not sd.get("abstract"):
            structure["resources"].append(name)
        elements = []
        for e in sd["snapshot"]["element"][1:]:
            binding = e.get("binding") or {}
            elements.append(
                [
                    e["path"],
                    e.get("min", 0),
                    e.get("max", "1"),
                    [_type_code(t) for t in e.get("type", [])],
                    e.get("contentReference"),
                    [binding["strength"], binding.get("valueSet")] if binding.get("strength") else None,
                    bool(e.get("isSummary")),
                ]
            )
        structure["types"][name] = {
            "kind": sd["kind"],
            "abstract": bool(sd.get("abstract")),
            "base": (sd.get("baseDefinition") or "").rsplit("/", 1)[-1] or None,
            "elements": elements,
        }
    structure["resources"].sort()

    bundle = _load(os.path.join(pkg, "Bundle-searchParams.json"))
    keep = (
        "id",
        "url",
        "name",
        "code",
        "base",
        "type",
        "expression",
        "target",
        "modifier",
        "comparator",
        "multipleOr",
        "multipleAnd",
        "component",
        "description",
        "xpathUsage",
    )
    params = [{k: e["resource"][k] for k in keep if k in e["resource"]} for e in bundle["entry"]]

    compartments = {}
    for path in sorted(glob.glob(os.path.join(pkg, "CompartmentDefinition-*.json"))):
        cd = _load(path)
        if cd["id"] == "example":
            continue
        compartments[cd["code"]] = {r["code"]: r.get("param", []) for r in cd.get("resource", [])}

    os.makedirs(OUT, exist_ok=True)
    for fname, data in (
        ("structure.json", structure),
        ("search-parameters.json", params),
        ("compartments.json", compartments),
    ):
        with open(os.path.join(OUT, fname), "w", encoding="utf-8") as f:
            json.dump(data, f, ensure_ascii=False, separators=(",", ":"), sort_keys=True)


if __name__ == "__main__":
    build(sys.argv[1] if len(sys.argv) > 1 else "package")
