"""Binding checks the validator uses: required -> error naming code and value set; others -> warning;
what cannot be judged (unknown value sets, external code systems) -> nothing."""

from __future__ import annotations

import pytest

from changbai.fhir import validation
from changbai.terminology.binding import binding_checker_for, check_binding, core_content

SEX_VS = "https://changbai.example/fhir/ValueSet/gb-t-2261-1-sex"
SEX_CS = "https://changbai.example/fhir/CodeSystem/gb-t-2261-1-sex"
CORE = "http://hl7.org/fhir/ValueSet/"


def test_code_in_the_value_set_passes():
    assert check_binding("required", SEX_VS, {"system": SEX_CS, "code": "1"}) is None
    assert check_binding("required", SEX_VS, "2") is None
    assert check_binding("required", SEX_VS, {"coding": [{"system": SEX_CS, "code": "9"}]}) is None


def test_required_binding_violation_is_an_error_naming_code_and_value_set():
    issue = check_binding("required", SEX_VS, {"system": SEX_CS, "code": "7"}, path="Patient.extension[0]")
    assert issue is not None and issue.severity == "error"
    assert "#7" in issue.diagnostics and SEX_VS in issue.diagnostics
    assert issue.expression == ["Patient.extension[0]"]


def test_extensible_and_preferred_bindings_warn():
    for strength in ("extensible", "preferred"):
        issue = check_binding(strength, SEX_VS, "5")
        assert issue is not None and issue.severity == "warning"
    assert check_binding("example", SEX_VS, "5") is None


def test_unknown_value_set_cannot_be_judged_and_a_foreign_system_is_not_in_the_value_set():
    assert check_binding("required", "http://example.org/vs/unknown", "x") is None
    # the value set draws only on GB/T 2261.1: a code of any other system is not in it, known or not
    issue = check_binding("required", SEX_VS, {"system": "http://example.org/other", "code": "1"})
    assert issue is not None and "http://example.org/other#1" in issue.diagnostics


def test_every_required_binding_of_r4_core_has_its_value_set_shipped():
    from changbai.fhir.spec import spec

    shipped = {r["url"] for r in core_content()["resources"] if r["resourceType"] == "ValueSet"}
    required = set()
    for t in spec()._raw_types.values():
        for element in t["elements"]:
            if element[5] and element[5][0] == "required" and element[5][1]:
                required.add(element[5][1].partition("|")[0])
    # the one the R4 package does not define (a LOINC answer list) cannot be judged
    assert (
        required - shipped == set(core_content()["valueSetsNotInPackage"]) & required == {"http://loinc.org/vs/LL379-9"}
    )


def test_core_required_bindings_are_enforced_in_validation():
    checker = binding_checker_for(None)
    patient = {"resourceType": "Patient", "gender": "often", "telecom": [{"system": "pager2", "value": "1"}]}
    issues = validation.validate(patient, binding_checker=checker)
    errors = {i.expression[0]: i.diagnostics for i in issues if i.severity == "error"}
    assert errors.keys() == {"Patient.gender", "Patient.telecom[0].system"}
    assert "'often'" in errors["Patient.gender"] and f"{CORE}administrative-gender" in errors["Patient.gender"]
    assert f"{CORE}contact-point-system" in errors["Patient.telecom[0].system"]
    ok = {"resourceType": "Patient", "gender": "female", "telecom": [{"system": "phone", "value": "1"}]}
    assert validation.validate(ok, binding_checker=checker) == []


def test_value_sets_through_imports_and_filters():
    # v3-ActEncounterCode: v3-ActCode is-a _ActEncounterCode (Encounter.class, extensible)
    vs = "http://terminology.hl7.org/ValueSet/v3-ActEncounterCode"
    act = "http://terminology.hl7.org/CodeSystem/v3-ActCode"
    assert check_binding("required", vs, {"system": act, "code": "AMB"}) is None
    assert check_binding("required", vs, {"system": act, "code": "EMRGONLY"}) is not None
    # all-types = data-types + resource-types (a bare code: either system)
    assert check_binding("required", f"{CORE}all-types", "Patient") is None
    assert check_binding("required", f"{CORE}all-types", "CodeableConcept") is None
    assert check_binding("required", f"{CORE}all-types", "Patients") is not None


@pytest.mark.parametrize(
    ("valueset", "good", "bad"),
    [
        (
            "mimetypes",
            ["application/fhir+json", "text/plain; charset=UTF-8", "json", "image/svg+xml"],
            ["pdf", "a b/c"],
        ),
        ("currencies", ["CNY", "EUR"], ["cny", "YUAN"]),
        ("ucum-units", ["mg/dL", "10*3/uL", "mm[Hg]", "/min", "kg.m-2", "{beats}/min", "%"], ["mg//dL", "mg dL"]),
    ],
)
def test_external_systems_with_a_grammar_are_judged_by_syntax(valueset, good, bad):
    for code in good:
        assert check_binding("required", f"{CORE}{valueset}", code) is None, code
    for code in bad:
        assert check_binding("required", f"{CORE}{valueset}", code) is not None, code


def test_external_systems_without_content_are_not_refused():
    # SNOMED CT (not shipped) in a value set defined by a SNOMED filter (is-a 223366009): cannot be judged
    snomed = {"system": "http://snomed.info/sct", "code": "158965000"}
    assert check_binding("preferred", f"{CORE}performer-role", {"coding": [snomed]}) is None
    # ... but a SNOMED code outside a value set that lists its SNOMED codes can
    assert check_binding("preferred", f"{CORE}condition-severity", {"coding": [snomed]}) is not None
    # LOINC beyond the shipped fragment; a LOINC answer list the package does not define
    loinc = {"coding": [{"system": "http://loinc.org", "code": "LA6684-0"}]}
    assert check_binding("required", "http://loinc.org/vs/LL379-9", loinc) is None
    # text only, a coding without a system: nothing coded to judge
    assert check_binding("required", f"{CORE}administrative-gender", {"text": "often"}) is None
    assert check_binding("required", f"{CORE}administrative-gender", {"code": "often"}) is None
    # a value set that lists codes of an external system is judged by its list (units-of-time: UCUM)
    assert check_binding("required", f"{CORE}units-of-time", "wk") is None
    assert check_binding("required", f"{CORE}units-of-time", "week") is not None
