# ruff: noqa: F811  (test parameters named after the imported fixture)
"""CDA documents (C-CDA R2.1 samples and a WS/T 500-style one) stored whole with their extracted facts."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import pytest

from changbai.errors import InvalidInput
from changbai.exchange import cda, mhd
from changbai.exchange.service import ingest_cda
from tests.exchange.fixtures import core_platform, search  # noqa: F401  (core_platform: a pytest fixture)
from tests.exchange.messages import SAMPLES

CCDA = SAMPLES.parent / "ccda" / "documents"
DOCS = sorted(p for p in CCDA.rglob("*") if p.suffix.lower() == ".xml")
WST500 = Path(__file__).parent / "data" / "wst500-discharge.xml"


def test_ccd_sections_become_resources_linked_to_the_document() -> None:
    x = cda.to_bundle((CCDA / "CCD" / "CCD 1" / "CCD.XML").read_bytes())
    assert x.sections == {
        "allergies": 2,
        "immunizations": 5,
        "medications": 2,
        "problems": 4,
        "results": 6,
        "vitals": 8,
    }
    [doc] = x.resources("DocumentReference")
    [binary] = x.resources("Binary")
    assert doc["content"][0]["attachment"]["url"] == f"Binary/{binary['id']}"
    assert base64.b64decode(binary["data"]).startswith(b"<?xml")
    assert doc["type"]["coding"][0] == {
        "system": "http://loinc.org",
        "code": "34133-9",
        "display": "Summary of episode note",
    }
    assert len(doc["context"]["related"]) == sum(x.sections.values())
    doc_url = f"urn:uuid:{doc['id']}"
    for obs in x.resources("Observation"):
        assert obs["derivedFrom"] == [{"reference": doc_url}]
    for cond in x.resources("Condition"):
        assert cond["extension"][0]["valueReference"]["reference"] == doc_url
    [patient] = x.resources("Patient")
    assert patient["name"][0]["family"] == "Betterhalf" and patient["gender"] == "female"
    assert patient["birthDate"] == "1975-05-01"


def test_ccd_values_codes_and_dates() -> None:
    x = cda.to_bundle((CCDA / "CCD" / "CCD 1" / "CCD.XML").read_bytes())
    vitals = [o for o in x.resources("Observation") if o["category"][0]["coding"][0]["code"] == "vital-signs"]
    systolic = next(o for o in vitals if o["code"]["coding"][0]["code"] == "8480-6")
    assert systolic["code"]["coding"][0]["system"] == "http://loinc.org"
    assert systolic["valueQuantity"]["unit"] == "mm[Hg]" and isinstance(systolic["valueQuantity"]["value"], int)
    imms = x.resources("Immunization")
    assert all(i["vaccineCode"]["coding"][0]["system"] == "http://hl7.org/fhir/sid/cvx" for i in imms)
    assert all(i["occurrenceDateTime"][:4].isdigit() for i in imms)
    meds = x.resources("MedicationStatement")
    assert meds[0]["medicationCodeableConcept"]["coding"][0]["system"].endswith("rxnorm")


def test_wst500_style_document_is_read_the_same_way() -> None:
    x = cda.to_bundle(WST500.read_bytes())
    [patient] = x.resources("Patient")
    assert patient["identifier"][0] == {"system": "urn:oid:2.16.156.10011.1.3", "value": "220102198002151234"}
    assert patient["name"] == [{"text": "张三"}] and patient["gender"] == "male"
    assert patient["address"][0]["district"] == "南关区"
    [condition] = x.resources("Condition")
    assert condition["code"]["coding"][0] == {
        "system": "http://hl7.org/fhir/sid/icd-10",
        "code": "E11.900",
        "display": "2型糖尿病",
    }
    temps = [o for o in x.resources("Observation") if o["code"]["coding"][0]["code"] == "8310-5"]
    assert temps[0]["valueQuantity"]["value"] == 36.6
    assert temps[0]["effectiveDateTime"] == "2026-03-10T08:00:00+08:00"
    [doc] = x.resources("DocumentReference")
    assert doc["masterIdentifier"]["value"] == "JLH-DS-2026-000123" and doc["description"] == "出院小结"


def test_not_a_cda_document_is_refused_clearly() -> None:
    with pytest.raises(InvalidInput):
        cda.to_bundle(b"<html/>")
    with pytest.raises(InvalidInput):
        cda.to_bundle(b"<ClinicalDocument")


def test_external_entities_are_not_resolved() -> None:
    evil = (
        b'<?xml version="1.0"?><!DOCTYPE d [<!ENTITY x SYSTEM "file:///etc/passwd">]>'
        b'<ClinicalDocument xmlns="urn:hl7-org:v3"><title>&x;</title></ClinicalDocument>'
    )
    with pytest.raises(InvalidInput) as caught:
        cda.to_bundle(evil)
    assert "root:" not in str(caught.value)


@pytest.mark.parametrize("path", DOCS, ids=[p.parent.name for p in DOCS])
def test_every_sample_document_is_stored_with_its_facts(core_platform: Any, path: Path) -> None:
    x = ingest_cda(core_platform, path.read_bytes())
    with core_platform.repo.unit(write=False) as unit:
        [doc_id] = [id for id, _ in unit.find("DocumentReference", "_id=" + x.resources("DocumentReference")[0]["id"])]
        stored = unit.read("DocumentReference", doc_id).resource
        binary_id = stored["content"][0]["attachment"]["url"].split("/")[-1]
        assert base64.b64decode(unit.read("Binary", binary_id).resource["data"]) == path.read_bytes()
        for ref in stored.get("context", {}).get("related", []):
            rtype, rid = ref["reference"].split("/")
            assert unit.exists(rtype, rid)
    # storing the same document again changes nothing new (same ids)
    again = ingest_cda(core_platform, path.read_bytes())
    assert [e["fullUrl"] for e in again.bundle["entry"]] == [e["fullUrl"] for e in x.bundle["entry"]]
    assert len(search(core_platform, "DocumentReference")) == 1 and len(search(core_platform, "Patient")) == 1
    assert len(search(core_platform, "Binary")) == 1


def test_mhd_provide_bundle_shape() -> None:
    x = cda.to_bundle(WST500.read_bytes())
    entries = [
        e for e in x.bundle["entry"] if e["resource"]["resourceType"] in ("DocumentReference", "Binary", "Patient")
    ]
    doc_url = next(e["fullUrl"] for e in entries if e["resource"]["resourceType"] == "DocumentReference")
    patient_url = next(e["fullUrl"] for e in entries if e["resource"]["resourceType"] == "Patient")
    for e in entries:  # MHD senders point attachments at the bundle's Binary entry
        if e["resource"]["resourceType"] == "DocumentReference":
            binary = next(b for b in entries if b["resource"]["resourceType"] == "Binary")
            e["resource"]["content"][0]["attachment"]["url"] = binary["fullUrl"]
    ss = mhd.submission_set(patient_url, [doc_url], "JLH", "2026-03-10T15:30:00+08:00")
    bundle = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [*entries, {"fullUrl": "urn:uuid:ss-1", "resource": ss, "request": {"method": "POST", "url": "List"}}],
    }
    assert mhd.validate_provide_bundle(bundle) == []
    broken = {
        **bundle,
        "type": "batch",
        "entry": [e for e in bundle["entry"] if e["resource"]["resourceType"] != "Binary"],
    }
    problems = [i.diagnostics for i in mhd.validate_provide_bundle(broken)]
    assert any("transaction" in p for p in problems)
    assert any("is not a Binary" in p for p in problems)
    no_set = {**bundle, "entry": entries}
    assert any("SubmissionSet" in i.diagnostics for i in mhd.validate_provide_bundle(no_set))
