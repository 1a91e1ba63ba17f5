"""Structural R4 validation: each rule with the place it names."""

from __future__ import annotations

import pytest

from changbai.errors import InvalidResource
from changbai.fhir.validation import check, validate


def where(resource):
    return {e for i in validate(resource) if i.severity == "error" for e in i.expression}


def test_valid_resource_has_no_issues():
    assert (
        validate(
            {
                "resourceType": "Patient",
                "id": "a",
                "name": [{"family": "王", "given": ["伟"]}],
                "birthDate": "1990-01-31",
                "deceasedBoolean": False,
                "_birthDate": {"extension": [{"url": "http://x", "valueString": "lunar"}]},
            }
        )
        == []
    )


@pytest.mark.parametrize(
    "resource, place",
    [
        ({"resourceType": "Patient", "foo": 1}, "Patient.foo"),
        ({"resourceType": "Patient", "gender": 1}, "Patient.gender"),
        ({"resourceType": "Patient", "name": {"family": "x"}}, "Patient.name"),  # must be an array
        ({"resourceType": "Patient", "active": "yes"}, "Patient.active"),
        ({"resourceType": "Patient", "birthDate": "1990-02-30"}, "Patient.birthDate"),  # not a calendar date
        ({"resourceType": "Patient", "birthDate": "90-02-01"}, "Patient.birthDate"),
        ({"resourceType": "Patient", "name": []}, "Patient.name"),
        ({"resourceType": "Patient", "name": [{}]}, "Patient.name[0]"),  # no empty objects
        ({"resourceType": "Patient", "id": "a" * 65}, "Patient.id"),
        ({"resourceType": "Patient", "deceasedBoolean": True, "deceasedDateTime": "2020"}, "Patient.deceasedDateTime"),
        ({"resourceType": "Observation", "code": {"text": "x"}}, "Observation.status"),  # required
        (
            {"resourceType": "Observation", "status": "final", "code": {"text": "x"}, "valueQuantity": {"value": "1"}},
            "Observation.valueQuantity.value",
        ),
        (
            {
                "resourceType": "Bundle",
                "type": "collection",
                "entry": [{"resource": {"resourceType": "Patient", "x": 1}}],
            },
            "Bundle.entry[0].resource.x",
        ),
        ({"resourceType": "Patient", "contained": [{"resourceType": "Nope"}]}, "Patient.contained[0]"),
        ({"resourceType": "Patient", "_gender": "x"}, "Patient._gender"),
        (
            {
                "resourceType": "Questionnaire",
                "status": "active",
                "item": [{"type": "group", "item": [{"type": "string"}]}],
            },
            "Questionnaire.item[0].linkId",
        ),
    ],
)
def test_each_rule_names_its_place(resource, place):
    assert place in where(resource)


def test_check_raises_with_every_error():
    with pytest.raises(InvalidResource) as err:
        check({"resourceType": "Patient", "gender": 1, "foo": 2})
    assert {e for i in err.value.issues for e in i.expression} == {"Patient.gender", "Patient.foo"}


def test_strings_follow_xml_whitespace_rules():
    # a non-breaking space is content in XML Schema's \\S, so this code is valid R4
    assert validate({"resourceType": "Patient", "gender": "male", "language": "\u00a0zh"}) == []
    assert "Patient.language" in where({"resourceType": "Patient", "language": " zh"})
