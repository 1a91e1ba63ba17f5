from __future__ import annotations

import pytest

from changbai.exchange import er7, v2fhir
from tests.exchange.messages import adt, oru, vxu


def mapped(text: str, **kw) -> v2fhir.Mapped:  # type: ignore[no-untyped-def]
    return v2fhir.to_bundle(er7.parse(text), **kw)


def test_adt_a01_gives_patient_and_inpatient_encounter() -> None:
    m = mapped(adt())
    assert m.bundle["type"] == "transaction"
    [patient] = m.resources("Patient")
    assert patient["name"][0] == {"family": "ZHANG", "given": ["SAN"]}
    assert patient["birthDate"] == "1980-02-15" and patient["gender"] == "male"
    assert patient["identifier"][0]["value"] == "MRN001"
    assert patient["identifier"][0]["type"]["coding"][0]["code"] == "MR"
    assert patient["address"][0]["district"] == "220102" and patient["address"][0]["use"] == "home"
    assert patient["telecom"][0] == {"system": "phone", "value": "13900000000", "use": "home"}
    assert patient["maritalStatus"]["coding"][0]["code"] == "M"
    [enc] = m.resources("Encounter")
    assert enc["class"]["code"] == "IMP" and enc["status"] == "in-progress"
    assert enc["period"]["start"] == "2026-01-01T08:30:00+08:00"
    assert enc["subject"]["reference"] == m.bundle["entry"][0]["fullUrl"]
    assert enc["participant"][0]["individual"]["display"] == "SI LI"
    # ADT updates demographics conditionally on the identifier
    assert m.bundle["entry"][0]["request"]["method"] == "PUT"
    assert m.bundle["entry"][0]["request"]["url"].startswith("Patient?identifier=")


@pytest.mark.parametrize(("pv1_2", "code"), [("I", "IMP"), ("O", "AMB"), ("E", "EMER"), ("P", "PRENC")])
def test_encounter_class_comes_from_pv1_2(pv1_2: str, code: str) -> None:
    [enc] = mapped(adt(patient_class=pv1_2)).resources("Encounter")
    assert enc["class"]["code"] == code


def test_discharge_and_cancel_events_set_encounter_status() -> None:
    assert mapped(adt("A03")).resources("Encounter")[0]["status"] == "finished"
    assert mapped(adt("A11")).resources("Encounter")[0]["status"] == "cancelled"
    assert mapped(adt("A28")).resources("Encounter") == []  # person add: no visit


def test_same_visit_in_two_messages_updates_one_encounter() -> None:
    a01 = mapped(adt("A01", control_id="1")).bundle["entry"][1]
    a03 = mapped(adt("A03", control_id="2")).bundle["entry"][1]
    assert a01["request"] == a03["request"]


def test_replay_of_a_message_gives_the_same_bundle() -> None:
    assert mapped(oru()).bundle == mapped(oru()).bundle


def test_oru_observation_values_units_ranges_and_status() -> None:
    m = mapped(oru())
    obs = {o["code"]["coding"][0]["code"]: o for o in m.resources("Observation")}
    glucose = obs["2345-7"]
    assert glucose["code"]["coding"][0]["system"] == "http://loinc.org"
    assert glucose["valueQuantity"] == {
        "value": 5.6,
        "unit": "mmol/L",
        "system": "http://unitsofmeasure.org",
        "code": "mmol/L",
    }
    assert glucose["referenceRange"][0]["low"]["value"] == 3.9
    assert glucose["interpretation"][0]["coding"][0]["code"] == "N"
    assert glucose["status"] == "final"
    assert glucose["effectiveDateTime"] == "2026-01-02T08:30:00+08:00"
    assert obs["5905-5"]["valueRange"]["low"]["value"] == 10 and obs["5905-5"]["valueRange"]["high"]["value"] == 20
    assert obs["600-7"]["valueCodeableConcept"]["coding"][0] == {
        "system": "http://snomed.info/sct",
        "code": "3092008",
        "display": "Staphylococcus aureus",
    }
    assert obs["8251-1"]["valueString"] == "sample slightly haemolysed"
    [report] = m.resources("DiagnosticReport")
    assert len(report["result"]) == 4 and report["status"] == "final"
    # a result does not overwrite registration demographics: the patient is only created when unknown
    patient_entry = m.bundle["entry"][0]
    assert patient_entry["request"]["method"] == "POST" and "ifNoneExist" in patient_entry["request"]


def test_corrected_result_updates_the_same_observation() -> None:
    first = mapped(oru(control_id="R1")).bundle["entry"]
    fixed = mapped(oru(control_id="R2", obx=["OBX|1|NM|2345-7^Glucose^LN||5.9|mmol/L|||||C"])).bundle["entry"]
    obs1 = next(e for e in first if e["resource"]["resourceType"] == "Observation")
    obs2 = next(e for e in fixed if e["resource"]["resourceType"] == "Observation")
    assert obs1["request"]["url"] == obs2["request"]["url"]
    assert obs2["resource"]["status"] == "corrected"


def test_structured_numeric_comparator_and_ratio() -> None:
    m = mapped(oru(obx=["OBX|1|SN|X1^x^L||<^0.5|mg/L|||||F", "OBX|2|SN|Y2^y^L||^1^:^128||||||F"]))
    first, second = m.resources("Observation")
    assert first["valueQuantity"]["comparator"] == "<" and first["valueQuantity"]["value"] == 0.5
    assert second["valueRatio"]["denominator"]["value"] == 128


def test_vxu_gives_immunization_with_cvx_code_date_lot_and_route() -> None:
    [imm] = mapped(vxu()).resources("Immunization")
    assert imm["vaccineCode"]["coding"][0] == {
        "system": "http://hl7.org/fhir/sid/cvx",
        "code": "08",
        "display": "Hep B, adolescent or pediatric",
    }
    assert imm["occurrenceDateTime"] == "2026-03-01T09:30:00+08:00"
    assert imm["status"] == "completed" and imm["primarySource"] is True
    assert imm["lotNumber"] == "LOT123" and imm["expirationDate"] == "2027-01-01"
    assert imm["doseQuantity"]["value"] == 0.5
    assert imm["route"]["coding"][0]["code"] == "C28161"
    assert imm["patient"]["reference"].startswith("urn:uuid:")


def test_local_codes_go_through_the_facility_concept_map_and_unmapped_ones_are_kept_and_reported() -> None:
    calls = []

    def translate(system: str, code: str, facility: str):  # type: ignore[no-untyped-def]
        calls.append((system, code, facility))
        if code == "GLU":
            return {"system": "http://loinc.org", "code": "2345-7", "display": "Glucose"}
        return None

    m = mapped(
        oru(obx=["OBX|1|NM|GLU^血糖^99JLH||5.6|mmol/L|||||F", "OBX|2|NM|XYZ^其它^99JLH||1|mg|||||F"]),
        translate=translate,
    )
    glu, other = m.resources("Observation")
    assert glu["code"]["coding"][0]["system"] == "http://loinc.org"
    assert glu["code"]["coding"][1]["code"] == "GLU"  # the code as sent stays beside the translation
    assert other["code"]["coding"][0]["code"] == "XYZ"
    assert ("https://changbai.example/fhir/CodeSystem/local/JLH", "GLU", "JLH") in calls
    assert glu["code"]["coding"][1]["system"] == "https://changbai.example/fhir/CodeSystem/local/JLH"
    assert [u["code"] for u in m.unmapped] == ["XYZ"]


def test_a_malformed_birth_date_names_segment_and_field() -> None:
    text = adt().replace("19800215", "1980-02-15")
    with pytest.raises(er7.HL7Error) as caught:
        mapped(text)
    assert (caught.value.segment, caught.value.field_no, caught.value.hl7_code) == ("PID", 7, "102")


def test_unsupported_message_type_is_a_rejection() -> None:
    text = "MSH|^~\\&|A|B|||20260101||QRY^A19|1|P|2.5\rQRD|x\r"
    with pytest.raises(er7.HL7Error) as caught:
        mapped(text)
    assert caught.value.reject and caught.value.hl7_code == "200"


def test_a40_merge_retires_the_prior_patient() -> None:
    text = "\r".join(
        [
            "MSH|^~\\&|HIS|JLH|||20260101||ADT^A40^ADT_A39|M1|P|2.5",
            "EVN|A40|20260101",
            "PID|1||NEW1^^^JLH^MR||ZHANG^SAN",
            "MRG|OLD1^^^JLH^MR",
        ]
    )
    _, old = mapped(text).resources("Patient")
    assert old["active"] is False and old["identifier"][0]["value"] == "OLD1"
    assert old["link"][0]["type"] == "replaced-by"


def test_resident_id_numbers_get_the_national_system_and_a_bad_check_digit_is_reported() -> None:
    good = adt(mrn="MRN9~220102198002151239^^^CHN^NNCHN")
    ids = mapped(good, resident_id_system="urn:oid:2.16.156.10011.1.3").resources("Patient")[0]["identifier"]
    assert {"system": "urn:oid:2.16.156.10011.1.3", "value": "220102198002151239"}.items() <= ids[1].items()
    bad = mapped(adt(mrn="MRN9~220102198002151238^^^CHN^NNCHN"))
    assert bad.resources("Patient")[0]["identifier"][1]["value"] == "220102198002151238"  # kept as sent
    [warning] = bad.warnings
    assert (warning.segment, warning.field_no, warning.severity) == ("PID", 3, "W")
    assert "check digit" in warning.message


def test_gb18030_message_maps_chinese_names_and_division_codes() -> None:
    text = adt(family="张", given="三丰").replace("|P|2.5.1", "|P|2.5.1|||||CHN|GB 18030-2000")
    m = v2fhir.to_bundle(er7.parse(text.encode("gb18030")))
    [patient] = m.resources("Patient")
    assert patient["name"][0] == {"family": "张", "given": ["三丰"]}
    assert patient["address"][0]["district"] == "220102"


def test_next_of_kin_and_insurance_become_related_person_and_coverage() -> None:
    text = (
        adt()
        + "NK1|1|ZHANG^SI|SPO|1 RENMIN RD^^CHANGCHUN|13911111111\r"
        + "IN1|1|URBAN^城镇职工医保|JLYB|吉林省医疗保障局||||||||20260101|20261231"  # IN1-12, IN1-13
        + "|" * 23  # to IN1-36, the policy number
        + "YB220102001\r"
    )
    m = mapped(text)
    [person] = m.resources("RelatedPerson")
    assert person["name"][0] == {"family": "ZHANG", "given": ["SI"]}
    assert person["relationship"][0]["coding"][0]["code"] == "SPS"
    assert person["patient"]["reference"] == m.bundle["entry"][0]["fullUrl"]
    [coverage] = m.resources("Coverage")
    assert coverage["payor"] == [{"display": "吉林省医疗保障局"}] and coverage["subscriberId"] == "YB220102001"
    assert coverage["period"] == {"start": "2026-01-01", "end": "2026-12-31"}


def test_a_message_without_pid_is_refused_naming_the_missing_segment() -> None:
    text = "MSH|^~\\&|HIS|JLH|||20260101||ADT^A01|N1|P|2.5\rEVN|A01|20260101\rPV1|1|I\r"
    with pytest.raises(er7.HL7Error) as caught:
        mapped(text)
    assert (caught.value.segment, caught.value.hl7_code, caught.value.reject) == ("PID", "100", False)
