"""ConceptMap/$translate over R4 (equivalence) and R5 (relationship) shaped maps, forward and reverse."""

from __future__ import annotations

from typing import Any

from changbai.errors import InvalidInput
from changbai.terminology.params import Inputs, not_found
from changbai.terminology.source import TerminologySource, split_canonical

Resource = dict[str, Any]

#: R5 relationship -> R4 equivalence, and back (the R4/R5 conversion tables of the spec).
TO_EQUIVALENCE = {
    "related-to": "relatedto",
    "equivalent": "equivalent",
    "source-is-narrower-than-target": "wider",
    "source-is-broader-than-target": "narrower",
    "not-related-to": "disjoint",
}
TO_RELATIONSHIP = {
    "relatedto": "related-to",
    "equivalent": "equivalent",
    "equal": "equivalent",
    "wider": "source-is-narrower-than-target",
    "subsumes": "source-is-narrower-than-target",
    "narrower": "source-is-broader-than-target",
    "specializes": "source-is-broader-than-target",
    "inexact": "related-to",
    "unmatched": "not-related-to",
    "disjoint": "not-related-to",
}
#: Reading a map backwards swaps narrower and broader.
REVERSED = {
    "source-is-narrower-than-target": "source-is-broader-than-target",
    "source-is-broader-than-target": "source-is-narrower-than-target",
}
_NEGATIVE = {"not-related-to"}


def _relationship(target: dict[str, Any]) -> str:
    if target.get("relationship"):
        return target["relationship"]
    return TO_RELATIONSHIP.get(target.get("equivalence", "equivalent"), "related-to")


def _maps(source: TerminologySource, inputs: Inputs, instance: Resource | None) -> list[Resource]:
    if instance is not None:
        return [instance]
    cm = inputs.get("conceptMap")
    if isinstance(cm, dict):
        return [cm]
    url = inputs.get("url")
    if url:
        u, v = split_canonical(str(url))
        found = source.concept_map(u, inputs.get("conceptMapVersion") or v)
        if found is None:
            raise not_found(f"A definition for the ConceptMap '{url}' could not be found", "Unable_to_resolve_CM")
        return [found]
    return list(source.concept_maps())


def translate(source: TerminologySource, inputs: Inputs, instance: Resource | None = None) -> Resource:
    coding = inputs.get("sourceCoding") or inputs.get("coding")
    if (coding is None and inputs.get("sourceCodeableConcept")) or inputs.get("codeableConcept"):
        cc = inputs.get("sourceCodeableConcept") or inputs.get("codeableConcept")
        coding = (cc.get("coding") or [None])[0]
    code = (coding or {}).get("code") or inputs.get("sourceCode") or inputs.get("code")
    system = (coding or {}).get("system") or inputs.get("sourceSystem") or inputs.get("system")
    target_coding = inputs.get("targetCoding") or {}
    target_code = target_coding.get("code") or inputs.get("targetCode")
    target_system = inputs.get("targetSystem") or inputs.get("targetsystem") or target_coding.get("system")
    reverse = inputs.bool("reverse") or (code is None and target_code is not None)
    if reverse and code is not None and target_code is None:
        target_code, target_system, code, system = code, system, None, target_system
    if (code if not reverse else target_code) is None:
        raise InvalidInput("$translate needs a source code (sourceCode/sourceCoding) or a target code to reverse")
    matches: list[dict[str, Any]] = []
    for cm in _maps(source, inputs, instance):
        label = f"{cm.get('url')}|{cm.get('version')}" if cm.get("version") else cm.get("url")
        for group in cm.get("group", []):
            g_source, g_target = group.get("source"), group.get("target")
            if not reverse:
                if system and g_source and g_source != system:
                    continue
                if target_system and g_target and g_target != target_system:
                    continue
                for element in group.get("element", []):
                    if element.get("code") != code:
                        continue
                    for t in element.get("target", []):
                        rel = _relationship(t)
                        matches.append(_match(rel, g_target, t.get("code"), t.get("display"), label, None))
                if not any(e.get("code") == code for e in group.get("element", [])) and group.get("unmapped"):
                    um = group["unmapped"]
                    if um.get("mode") == "fixed":
                        rel = um.get("relationship") or TO_RELATIONSHIP.get(um.get("equivalence", ""), "related-to")
                        matches.append(_match(rel, g_target, um.get("code"), um.get("display"), label, None))
                    elif um.get("mode") == "provided":
                        matches.append(_match("equivalent", g_target or system, code, None, label, None))
            else:
                if target_system and g_target and g_target != target_system:
                    continue
                if system and g_source and g_source != system:
                    continue
                for element in group.get("element", []):
                    for t in element.get("target", []):
                        if t.get("code") != target_code:
                            continue
                        rel = REVERSED.get(_relationship(t), _relationship(t))
                        src = {"system": g_source, "code": element.get("code")}
                        matches.append(_match(rel, g_target, t.get("code"), t.get("display"), label, src))
    positive = [m for m in matches if m["_rel"] not in _NEGATIVE]
    out: list[dict[str, Any]] = [{"name": "result", "valueBoolean": bool(positive)}]
    if not positive:
        out.append({"name": "message", "valueString": "No translations found"})
    for m in matches:
        m.pop("_rel")
        out.append(m)
    return {"resourceType": "Parameters", "parameter": out}


def _match(
    rel: str,
    system: str | None,
    code: str | None,
    display: str | None,
    label: str | None,
    source_coding: dict[str, Any] | None,
) -> dict[str, Any]:
    concept: dict[str, Any] = {}
    if system:
        concept["system"] = system
    if code:
        concept["code"] = code
    if display:
        concept["display"] = display
    parts: list[dict[str, Any]] = [
        {"name": "equivalence", "valueCode": TO_EQUIVALENCE.get(rel, "relatedto")},
        {"name": "relationship", "valueCode": rel},
        {"name": "concept", "valueCoding": concept},
    ]
    if label:
        parts.append({"name": "originMap", "valueCanonical": label})
    if source_coding is not None:
        parts.append({"name": "source", "valueCoding": source_coding})
    return {"name": "match", "part": parts, "_rel": rel}
