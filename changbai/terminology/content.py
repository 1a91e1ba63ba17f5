"""The terminology shipped with the platform: compact CSV files in data/ turned into FHIR resources.

``data/catalog.json`` lists every code system (canonical url, version, title, publisher, file and its
format); :func:`iter_content` builds the CodeSystems, one ValueSet per code system (all its codes, for
bindings and ``:in`` searches) and the ConceptMaps (national value domains -> FHIR codes, notifiable
diseases -> ICD-10). Updating content means editing the data files, not code.
"""

from __future__ import annotations

import csv
import gzip
import json
from collections.abc import Callable, Iterator
from functools import lru_cache
from pathlib import Path
from typing import Any

DATA = Path(__file__).parent / "data"
Resource = dict[str, Any]
DATE = "2026-11-23"


def _rows(name: str) -> list[dict[str, str]]:
    with (DATA / name).open(encoding="utf-8", newline="") as fh:
        return [{k: (v or "").strip() for k, v in row.items()} for row in csv.DictReader(fh)]


@lru_cache(maxsize=1)
def catalog() -> dict[str, Any]:
    return json.loads((DATA / "catalog.json").read_text(encoding="utf-8"))


def canonical(entry: dict[str, Any], kind: str = "CodeSystem") -> str:
    if kind == "CodeSystem" and entry.get("url"):
        return entry["url"]
    return f"{catalog()['base']}/{kind}/{entry['id']}"


def _designation_en(text: str) -> list[dict[str, Any]]:
    return [{"language": "en", "value": text}] if text else []


def _nest(flat: list[tuple[str, dict[str, Any], str | None]]) -> list[dict[str, Any]]:
    """(code, concept, parent code) in any order -> nested concept trees (unknown parents become roots)."""
    by_code = {code: concept for code, concept, _ in flat}
    roots = []
    for code, concept, parent in flat:
        if parent and parent in by_code and parent != code:
            by_code[parent].setdefault("concept", []).append(concept)
        else:
            roots.append(concept)
    return roots


# formats ------------------------------------------------------------------------------------------------


def _simple(entry: dict[str, Any]) -> list[dict[str, Any]]:
    flat = []
    for row in _rows(entry["file"]):
        concept: dict[str, Any] = {"code": row["code"], "display": row["display"]}
        if row.get("display_en"):
            concept["designation"] = _designation_en(row["display_en"])
        flat.append((row["code"], concept, row.get("parent") or None))
    return _nest(flat)


#: ICD-10 chapters and blocks group codes; they are not codes a diagnosis can carry.
_NOT_SELECTABLE = {"code": "notSelectable", "valueBoolean": True}


def _icd10_key(code: str) -> tuple[str, int]:
    return code[0], int(code[1:3])


def _icd10(entry: dict[str, Any]) -> list[dict[str, Any]]:
    """Chapters (roman numerals) > blocks (A00-A09) > categories (A00) > subcategories (A00.0)."""
    chapters = [(r["chapter"], _icd10_key(r["first"]), _icd10_key(r["last"])) for r in _rows(entry["chapters"])]
    rows = _rows(entry["file"])
    blocks = []
    for r in rows:
        code = r["code"]
        if "-" in code:
            first, last = code.split("-")
            blocks.append((code, _icd10_key(first), _icd10_key(last)))

    def chapter_of(key: tuple[str, int]) -> str | None:
        return next((c for c, lo, hi in chapters if lo <= key <= hi), None)

    def block_of(key: tuple[str, int]) -> str | None:
        inside = [(hi[1] - lo[1] if hi[0] == lo[0] else 1000, b) for b, lo, hi in blocks if lo <= key <= hi]
        return min(inside)[1] if inside else None

    chapter_codes = {c for c, _, _ in chapters}
    flat = []
    for r in rows:
        code = r["code"]
        concept: dict[str, Any] = {"code": code, "display": r["display"]}
        if code in chapter_codes:
            parent = None
            concept["property"] = [{"code": "kind", "valueCode": "chapter"}, _NOT_SELECTABLE]
        elif "-" in code:
            parent = chapter_of(_icd10_key(code.split("-")[0]))
            concept["property"] = [{"code": "kind", "valueCode": "block"}, _NOT_SELECTABLE]
        elif "." in code:
            parent = code.split(".")[0]
            concept["property"] = [{"code": "kind", "valueCode": "subcategory"}]
        else:
            key = _icd10_key(code)
            parent = block_of(key) or chapter_of(key)
            concept["property"] = [{"code": "kind", "valueCode": "category"}]
        flat.append((code, concept, parent))
    return _nest(flat)


def _divisions(entry: dict[str, Any]) -> list[dict[str, Any]]:
    """Cities without counties (东莞, 中山, 儋州) are listed again as their own county: kept once."""
    flat, seen = [], set()
    for r in _rows(entry["file"]):
        if r["code"] in seen:
            continue
        seen.add(r["code"])
        concept = {"code": r["code"], "display": r["name"], "property": [{"code": "level", "valueCode": r["level"]}]}
        flat.append((r["code"], concept, r.get("parent") or None))
    return _nest(flat)


def _loinc(entry: dict[str, Any]) -> list[dict[str, Any]]:
    """LOINC codes with Chinese displays (English LOINC names as designations); panels group members."""
    flat = []
    for r in _rows(entry["file"]):
        concept: dict[str, Any] = {
            "code": r["code"],
            "display": r["display"],
            "designation": _designation_en(r["display_en"]),
        }
        flat.append((r["code"], concept, r.get("panel") or None))
    return _nest(flat)


def _notifiable(entry: dict[str, Any]) -> list[dict[str, Any]]:
    flat = []
    for r in _rows(entry["file"]):
        concept: dict[str, Any] = {"code": r["code"], "display": r["display"]}
        props = []
        if r.get("note"):
            props.append({"code": "note", "valueString": r["note"]})
        for icd in r.get("icd10", "").split():
            props.append({"code": "icd10", "valueCode": icd})
        if props:
            concept["property"] = props
        flat.append((r["code"], concept, r.get("class") or None))
    return _nest(flat)


def _vaccines(entry: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for r in _rows(entry["file"]):
        concept: dict[str, Any] = {
            "code": r["code"],
            "display": r["display"],
            "designation": _designation_en(r["display_en"]),
            "property": [{"code": "programme", "valueString": r["programme"]}],
        }
        for i, age in enumerate(r["schedule"].split(";"), start=1):
            concept["property"].append({"code": "dose", "valueString": f"第{i}剂: {age}"})
        out.append(concept)
    return out


def _tcm(entry: dict[str, Any]) -> list[dict[str, Any]]:
    flat = []
    for r in _rows(entry["file"]):
        concept: dict[str, Any] = {
            "code": r["code"],
            "display": r["display"],
            "property": [{"code": "kind", "valueCode": r["kind"]}],
        }
        if r["kind"] == "category":
            concept["property"].append({"code": "notSelectable", "valueBoolean": True})
        flat.append((r["code"], concept, r.get("parent") or None))
    return _nest(flat)


FORMATS: dict[str, Callable[[dict[str, Any]], list[dict[str, Any]]]] = {
    "simple": _simple,
    "icd10": _icd10,
    "divisions": _divisions,
    "loinc": _loinc,
    "notifiable": _notifiable,
    "vaccines": _vaccines,
    "tcm": _tcm,
}

_PROPERTIES = {
    "kind": "code",
    "level": "code",
    "note": "string",
    "icd10": "code",
    "programme": "string",
    "dose": "string",
    "notSelectable": "boolean",
}


def _count(concepts: list[dict[str, Any]]) -> int:
    return sum(1 + _count(c.get("concept", [])) for c in concepts)


def _used_properties(concepts: list[dict[str, Any]], found: set[str]) -> set[str]:
    for c in concepts:
        found.update(p["code"] for p in c.get("property", []))
        _used_properties(c.get("concept", []), found)
    return found


def code_system(entry: dict[str, Any]) -> Resource:
    concepts = FORMATS[entry["format"]](entry)
    cs: Resource = {
        "resourceType": "CodeSystem",
        "id": entry["id"],
        "url": canonical(entry),
        "version": entry["version"],
        "name": entry["name"],
        "title": entry["title"],
        "status": "active",
        "experimental": False,
        "date": DATE,
        "publisher": entry["publisher"],
        "language": "zh-CN",
        "caseSensitive": True,
        "content": entry.get("content", "complete"),
        "count": _count(concepts),
    }
    if entry.get("copyright"):
        cs["copyright"] = entry["copyright"]
    if entry.get("hierarchyMeaning"):
        cs["hierarchyMeaning"] = entry["hierarchyMeaning"]
    cs["valueSet"] = canonical(entry, "ValueSet")
    used = sorted(_used_properties(concepts, set()))
    if used:
        cs["property"] = [{"code": p, "type": _PROPERTIES.get(p, "string")} for p in used]
    cs["concept"] = concepts
    return cs


def value_set(entry: dict[str, Any], cs: Resource) -> Resource:
    return {
        "resourceType": "ValueSet",
        "id": entry["id"],
        "url": canonical(entry, "ValueSet"),
        "version": entry["version"],
        "name": entry["name"],
        "title": entry["title"],
        "status": "active",
        "experimental": False,
        "date": DATE,
        "publisher": entry["publisher"],
        "compose": {"include": [{"system": cs["url"], "version": cs["version"]}]},
    }


_EQUIVALENCE = {"equivalent", "equal", "wider", "subsumes", "narrower", "specializes", "inexact", "unmatched"}


def domain_maps() -> list[Resource]:
    """One ConceptMap per national value domain, from data/domains/maps.csv."""
    spec = catalog()["domainMaps"]
    entries = {e["id"]: e for e in catalog()["codeSystems"]}
    grouped: dict[str, dict[str, list[dict[str, str]]]] = {}
    for row in _rows(spec["file"]):
        if row["equivalence"] not in _EQUIVALENCE:
            raise ValueError(f"maps.csv: unknown equivalence {row['equivalence']!r}")
        grouped.setdefault(row["map"], {}).setdefault(row["target_system"], []).append(row)
    maps = []
    for name, by_target in grouped.items():
        source = entries[spec["sources"][name]]
        groups = []
        for target, rows in by_target.items():
            elements: dict[str, dict[str, Any]] = {}
            for row in rows:
                el = elements.setdefault(row["source_code"], {"code": row["source_code"], "target": []})
                el["target"].append(
                    {"code": row["target_code"], "display": row["target_display"], "equivalence": row["equivalence"]}
                )
            groups.append({"source": canonical(source), "target": target, "element": list(elements.values())})
        maps.append(
            {
                "resourceType": "ConceptMap",
                "id": f"{source['id']}-to-fhir",
                "url": f"{catalog()['base']}/ConceptMap/{source['id']}-to-fhir",
                "version": source["version"],
                "name": f"{source['name']}ToFhir",
                "title": f"{source['title']} -> FHIR",
                "status": "active",
                "date": DATE,
                "sourceUri": canonical(source, "ValueSet"),
                "group": groups,
            }
        )
    return maps


def notifiable_to_icd10(cs: Resource) -> Resource:
    elements = []
    for cls in cs["concept"]:
        for c in cls.get("concept", []):
            targets = [
                {"code": p["valueCode"], "equivalence": "wider" if len(c["property"]) > 1 else "equivalent"}
                for p in c.get("property", [])
                if p["code"] == "icd10"
            ]
            if targets:
                elements.append({"code": c["code"], "display": c["display"], "target": targets})
    return {
        "resourceType": "ConceptMap",
        "id": "notifiable-infectious-disease-to-icd-10",
        "url": f"{catalog()['base']}/ConceptMap/notifiable-infectious-disease-to-icd-10",
        "version": cs["version"],
        "name": "NotifiableDiseaseToIcd10",
        "title": "法定传染病病种 -> ICD-10",
        "status": "active",
        "date": DATE,
        "group": [{"source": cs["url"], "target": "http://hl7.org/fhir/sid/icd-10", "element": elements}],
    }


def iter_content() -> Iterator[Resource]:
    """Every shipped FHIR resource: CodeSystems, their ValueSets, ConceptMaps."""
    for entry in catalog()["codeSystems"]:
        cs = code_system(entry)
        yield cs
        yield value_set(entry, cs)
        if entry["id"] == "notifiable-infectious-disease":
            yield notifiable_to_icd10(cs)
    yield from domain_maps()


@lru_cache(maxsize=1)
def core_content() -> dict[str, Any]:
    """The FHIR R4 core value sets and code systems of every required, extensible and preferred binding
    (data/fhir-core.json.gz, built by scripts/build_core_terminology.py; read once)."""
    with gzip.open(DATA / "fhir-core.json.gz", "rt", encoding="utf-8") as fh:
        data: dict[str, Any] = json.load(fh)
    return data


def load(repository: Any) -> int:
    """Write the shipped content through the store (create or replace by id); returns how many."""
    resources = list(iter_content())
    with repository.unit() as unit:
        unit.put_many(resources)
    return len(resources)
