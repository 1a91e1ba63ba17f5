"""Binding checks the validator uses: required -> error naming code and value set; others -> warning."""

from __future__ import annotations

from changbai.terminology.binding import check_binding

SEX_VS = "https://changbai.example/fhir/ValueSet/gb-t-2261-1-sex"
SEX_CS = "https://changbai.example/fhir/CodeSystem/gb-t-2261-1-sex"


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


def test_unknown_value_set_or_system_cannot_be_judged():
    assert check_binding("required", "http://example.org/vs/unknown", "x") is None
    assert check_binding("required", SEX_VS, {"system": "http://example.org/other", "code": "1"}) is None
