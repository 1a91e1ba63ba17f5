"""Compare our FHIR output with another converter's, in meaning rather than bytes.

Used by the conformance test and by ``python -m benchmarks.hl7v2_conformance`` against the samples in
../shared/testdata/hl7v2 (Microsoft FHIR-Converter output in expected/). For each aspect a user relies on
(patient demographics, encounter class and period, observation codes, values and units, immunisation
codes and dates) it counts the facts the reference states and how many of them we state the same way.
Identifier *systems* are not compared: each converter invents its own for unnamed authorities.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from typing import Any

ASPECTS = ("patient", "encounter", "observation", "immunization")
#: The table's columns: every aspect, and the patient and observation facts that come from PID / OBX.
COLUMNS = ("patient", "patient (from PID)", "encounter", "observation", "observation (from OBX)", "immunization")

Facts = set[tuple[Any, ...]]


def _resources(bundle: dict[str, Any], rtype: str) -> list[dict[str, Any]]:
    return [e["resource"] for e in bundle.get("entry", []) if e.get("resource", {}).get("resourceType") == rtype]


def _instant(value: str | None) -> str | None:
    """Dates compare as written; date-times with a zone compare as UTC instants."""
    if not value:
        return None
    if "T" not in value:
        return value
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return value
    if parsed.tzinfo is None:
        return value[:16]
    return parsed.astimezone(UTC).isoformat()


def _codes(cc: dict[str, Any] | None) -> set[str]:
    return {str(c.get("code")) for c in (cc or {}).get("coding", []) if c.get("code")}


def patient_facts(bundle: dict[str, Any]) -> Facts:
    facts: Facts = set()
    for p in _resources(bundle, "Patient")[:1]:
        for name in p.get("name", []):
            given = [g.strip().upper() for g in name.get("given", [])]
            facts.add(("name", (name.get("family") or "").strip().upper(), given[0] if given else ""))
        if p.get("birthDate"):
            facts.add(("birthDate", p["birthDate"]))
        if p.get("gender"):
            facts.add(("gender", p["gender"]))
        for ident in p.get("identifier", []):
            if ident.get("value"):
                facts.add(("identifier", ident["value"]))
    return facts


def encounter_facts(bundle: dict[str, Any]) -> Facts:
    facts: Facts = set()
    for e in _resources(bundle, "Encounter")[:1]:
        cls = e.get("class") or {}
        if cls.get("code"):
            facts.add(("class", cls["code"]))
        period = e.get("period") or {}
        for key in ("start", "end"):
            if period.get(key):
                facts.add((key, _instant(period[key])))
    return facts


def _value(obs: dict[str, Any]) -> tuple[Any, ...] | None:
    if "valueQuantity" in obs:
        q = obs["valueQuantity"]
        return ("quantity", float(q["value"]) if "value" in q else None, (q.get("unit") or q.get("code") or ""))
    if "valueString" in obs:
        return ("string", " ".join(obs["valueString"].split()))
    if "valueCodeableConcept" in obs:
        return ("concept", tuple(sorted(_codes(obs["valueCodeableConcept"]))))
    if "valueDateTime" in obs:
        return ("dateTime", _instant(obs["valueDateTime"]))
    if "valueRange" in obs:
        r = obs["valueRange"]
        return ("range", r.get("low", {}).get("value"), r.get("high", {}).get("value"))
    if "valueRatio" in obs:
        r = obs["valueRatio"]
        return ("ratio", r.get("numerator", {}).get("value"), r.get("denominator", {}).get("value"))
    return None


def observation_facts(bundle: dict[str, Any]) -> Facts:
    facts: Facts = set()
    for obs in _resources(bundle, "Observation"):
        codes = tuple(sorted(_codes(obs.get("code"))))
        if not codes:
            continue
        facts.add(("code", codes))
        value = _value(obs)
        if value is not None:
            facts.add(("value", codes, value))
    return facts


def immunization_facts(bundle: dict[str, Any]) -> Facts:
    facts: Facts = set()
    for imm in _resources(bundle, "Immunization"):
        codes = tuple(sorted(_codes(imm.get("vaccineCode"))))
        facts.add(("vaccine", codes))
        if imm.get("occurrenceDateTime"):
            facts.add(("occurrence", codes, _instant(imm["occurrenceDateTime"])))
    return facts


EXTRACTORS = {
    "patient": patient_facts,
    "encounter": encounter_facts,
    "observation": observation_facts,
    "immunization": immunization_facts,
}


def compare(
    ours: dict[str, Any], reference: dict[str, Any], sourced: Callable[[str, tuple[Any, ...]], bool] | None = None
) -> dict[str, tuple[int, int, list[Any]]]:
    """Per aspect: (facts of the reference we state too, facts of the reference, the ones we miss).

    ``sourced(aspect, fact)`` says whether a reference fact comes from segments we map; when given, the
    ``patient (from PID)`` and ``observation (from OBX)`` columns count only those."""
    out = {}
    for aspect, extract in EXTRACTORS.items():
        want, have = extract(reference), extract(ours)
        missing = sorted(want - have, key=repr)
        out[aspect] = (len(want) - len(missing), len(want), missing)
        if sourced is not None and aspect in ("patient", "observation"):
            own = {f for f in want if sourced(aspect, f)}
            own_missing = sorted(own - have, key=repr)
            out[f"{aspect} (from {'PID' if aspect == 'patient' else 'OBX'})"] = (
                len(own) - len(own_missing),
                len(own),
                own_missing,
            )
    return out


def merge_counts(rows: Iterable[dict[str, tuple[int, int, list[Any]]]]) -> dict[str, tuple[int, int]]:
    total = {a: [0, 0] for a in COLUMNS}
    for row in rows:
        for aspect, (hit, want, _) in row.items():
            total[aspect][0] += hit
            total[aspect][1] += want
    return {a: (h, w) for a, (h, w) in total.items()}
