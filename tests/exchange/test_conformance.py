"""The 100 published HL7 v2 samples: each maps, and the result means what FHIR-Converter's output means.

Deliberate differences (documented in docs/exchange.md) are filtered out here, each with its reason:
- the converter folds insurance (IN1/IN2) persons' names and ids into Patient; we do not;
- it makes Observations out of PDA/ACC (death, accident) segments and out of MDM document text; we keep
  MDM text in the DocumentReference;
- it maps PV1 on person-only events (A28/A29/A31/A45/A60) to an Encounter; we do not invent visits there,
  and we do not use PV2 expected dates as an actual period except for pending admissions.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from changbai.exchange import conformance, er7, v2fhir
from changbai.exchange.maps import event_rules
from tests.exchange.messages import SAMPLES

FILES = sorted((SAMPLES / "messages").glob("*.hl7"))


def _expected(path: Path) -> dict | None:
    ref = SAMPLES / "expected" / f"{path.stem}-expected.json"
    return json.loads(ref.read_text(encoding="utf-8-sig")) if ref.exists() else None


@pytest.mark.parametrize("path", FILES, ids=[f.stem for f in FILES])
def test_sample_maps_and_agrees_with_the_reference(path: Path) -> None:
    msg = er7.parse(path.read_bytes())
    mapped = v2fhir.to_bundle(msg)
    assert mapped.bundle["entry"], "every sample carries at least a patient"
    reference = _expected(path)
    if reference is None:
        return
    ours, theirs = mapped.bundle, reference

    pid = msg.first("PID")
    assert pid is not None
    want = conformance.patient_facts(theirs)
    have = conformance.patient_facts(ours)
    pid_ids = {r[0][0] for n in (2, 3, 4) for r in pid.reps(n) if r and r[0][0]}
    for fact in want:
        if fact[0] in ("birthDate", "gender"):
            assert fact in have
        if fact[0] == "identifier" and fact[1] in pid_ids:
            assert fact in have
    first_name = pid.get(5, 1).upper()
    assert {f for f in want if f[0] == "name" and f[1] == first_name} <= have

    if not event_rules(msg.event).get("patient_only"):
        enc_want = conformance.encounter_facts(theirs)
        enc_have = conformance.encounter_facts(ours)
        assert {f for f in enc_want if f[0] == "class"} <= enc_have
        # the period start is PV1-44 as sent (one reference output takes it from elsewhere: ADT-A27-01)
        pv1 = msg.first("PV1")
        sent = conformance._instant(v2fhir.dt.ts_to_datetime(pv1.get(44), "+08:00")) if pv1 else None
        for fact in (f for f in enc_want if f[0] == "start"):
            assert fact in enc_have or ("start", sent) in enc_have

    if msg.message_type != "MDM":
        obx_codes = {s.get(3, 1) for s in msg.all("OBX")}
        obs_want = {f for f in conformance.observation_facts(theirs) if set(f[1]) & obx_codes}
        assert obs_want <= conformance.observation_facts(ours)

    assert conformance.immunization_facts(theirs) <= conformance.immunization_facts(ours)


def test_the_comparison_table_covers_every_message_type() -> None:
    from benchmarks.hl7v2_conformance import run, table

    rows = run(SAMPLES / "messages", SAMPLES / "expected")
    assert all(r["outcome"] == "mapped" for r in rows)
    text = table(rows)
    for kind in ("ADT^A01", "ORU^R01", "VXU^V04", "SIU^S12", "MDM^T02", "RDE^O11", "DFT^P03", "OML^O21"):
        assert f"| {kind} |" in text
