"""FHIR search semantics with hand-checked expectations over small purpose-made data, on both backends."""

from __future__ import annotations

import pytest

from changbai.errors import InvalidInput
from changbai.store import search

LOINC = "http://loinc.org"
UCUM = "http://unitsofmeasure.org"
ID_SYS = "urn:oid:2.16.156.10011.1.3"


def _patient(id, family, given, birth, gender="male", **extra):
    return {
        "resourceType": "Patient",
        "id": id,
        "name": [{"family": family, "given": [given]}],
        "birthDate": birth,
        "gender": gender,
        **extra,
    }


def _obs(id, patient, code, value=None, unit="mm[Hg]", when="2024-03-01T08:00:00Z", **extra):
    o = {
        "resourceType": "Observation",
        "id": id,
        "status": "final",
        "code": {"coding": [{"system": LOINC, "code": code}]},
        "subject": {"reference": f"Patient/{patient}"},
        "effectiveDateTime": when,
        **extra,
    }
    if value is not None:
        o["valueQuantity"] = {"value": value, "unit": unit, "system": UCUM, "code": unit}
    return o


@pytest.fixture
def data(repo):
    resources = [
        {
            "resourceType": "Organization",
            "id": "cc-hosp",
            "name": "长春市中心医院",
            "identifier": [{"system": "urn:cn:uscc", "value": "12220100MB1234567X"}],
            "address": [{"city": "长春市", "district": "朝阳区"}],
        },
        {
            "resourceType": "Organization",
            "id": "jl-hosp",
            "name": "吉林市人民医院",
            "partOf": {"reference": "Organization/cc-hosp"},
        },
        _patient(
            "p1",
            "Zhang",
            "San",
            "1980-05-17",
            identifier=[
                {
                    "system": ID_SYS,
                    "value": "220102198005170011",
                    "type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": "NI"}]},
                }
            ],
            managingOrganization={"reference": "Organization/cc-hosp"},
            telecom=[{"system": "phone", "value": "13912345678"}],
            meta={
                "tag": [{"system": "urn:changbai:tag", "code": "vip"}],
                "source": "http://county-a/fhir",
                "profile": ["http://changbai.cn/fhir/StructureDefinition/resident"],
            },
        ),
        _patient(
            "p2", "Zhāng", "Sì", "1980-05", gender="female", managingOrganization={"reference": "Organization/jl-hosp"}
        ),
        _patient("p3", "Li", "Wu", "1992-11-02", active=False, deceasedBoolean=True),
        _obs("o1", "p1", "8480-6", 150, when="2024-03-01T08:00:00Z"),
        _obs("o2", "p1", "8480-6", 118, when="2024-06-01T08:00:00Z"),
        _obs("o3", "p2", "8480-6", 0.15, unit="g", when="2023-12-31"),
        _obs("o4", "p2", "2339-0", 6.1, unit="mmol/L", when="2024-06"),
        {
            "resourceType": "Observation",
            "id": "bp1",
            "status": "final",
            "code": {"coding": [{"system": LOINC, "code": "85354-9"}]},
            "subject": {"reference": "Patient/p3"},
            "effectiveDateTime": "2024-01-01",
            "component": [
                {
                    "code": {"coding": [{"system": LOINC, "code": "8480-6"}]},
                    "valueQuantity": {"value": 120, "system": UCUM, "code": "mm[Hg]"},
                },
                {
                    "code": {"coding": [{"system": LOINC, "code": "8462-4"}]},
                    "valueQuantity": {"value": 180, "system": UCUM, "code": "mm[Hg]"},
                },
            ],
        },
        {
            "resourceType": "Condition",
            "id": "c1",
            "subject": {"reference": "Patient/p1"},
            "code": {
                "coding": [{"system": "http://hl7.org/fhir/sid/icd-10", "code": "I10", "display": "原发性高血压"}],
                "text": "高血压",
            },
            "onsetDateTime": "2019-07-15",
        },
        {
            "resourceType": "Encounter",
            "id": "e1",
            "status": "finished",
            "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "AMB"},
            "subject": {"reference": "Patient/p1"},
            "serviceProvider": {"reference": "Organization/cc-hosp"},
            "period": {"start": "2024-03-01T07:30:00Z", "end": "2024-03-01T09:00:00Z"},
        },
        {
            "resourceType": "Provenance",
            "id": "prov1",
            "target": [{"reference": "Patient/p1"}],
            "recorded": "2024-03-01T09:00:00Z",
            "agent": [{"who": {"reference": "Organization/cc-hosp"}}],
        },
        {
            "resourceType": "List",
            "id": "l1",
            "status": "current",
            "mode": "working",
            "entry": [{"item": {"reference": "Patient/p1"}}, {"item": {"reference": "Patient/p3"}}],
        },
        {"resourceType": "ValueSet", "id": "vs1", "status": "active", "url": "http://changbai.cn/fhir/ValueSet/sex/v2"},
        {
            "resourceType": "MedicationRequest",
            "id": "mr1",
            "status": "active",
            "intent": "order",
            "subject": {"reference": "Patient/p1"},
            "medicationCodeableConcept": {"text": "硝苯地平"},
            "dosageInstruction": [{"doseAndRate": [{"doseQuantity": {"value": 30, "system": UCUM, "code": "mg"}}]}],
            "dispenseRequest": {"numberOfRepeatsAllowed": 3},
        },
        {
            "resourceType": "RiskAssessment",
            "id": "ra1",
            "status": "final",
            "subject": {"reference": "Patient/p1"},
            "prediction": [{"probabilityDecimal": 0.25}],
        },
    ]
    with repo.unit() as u:
        u.put_many(resources)
    return repo


def ids(data, rtype, *params, **kw):
    with data.unit(write=False) as u:
        result = u.search(rtype, list(params), **kw)
    return sorted(m.id for m in result.matches)


def total(data, rtype, *params):
    with data.unit(write=False) as u:
        return u.search(rtype, [*params, ("_summary", "count")]).total


def test_string_default_exact_contains(data):
    assert ids(data, "Patient", ("family", "zhang")) == ["p1", "p2"]  # case and accents folded, starts-with
    assert ids(data, "Patient", ("family:exact", "Zhang")) == ["p1"]
    assert ids(data, "Patient", ("family:contains", "han")) == ["p1", "p2"]
    assert ids(data, "Patient", ("name", "san")) == ["p1"]
    assert ids(data, "Organization", ("name", "长春")) == ["cc-hosp"]
    assert ids(data, "Organization", ("address-city", "长春市")) == ["cc-hosp"]


def test_token_forms_and_modifiers(data):
    assert ids(data, "Patient", ("identifier", f"{ID_SYS}|220102198005170011")) == ["p1"]
    assert ids(data, "Patient", ("identifier", "220102198005170011")) == ["p1"]
    assert ids(data, "Patient", ("identifier", "other|220102198005170011")) == []
    assert ids(data, "Patient", ("gender", "female")) == ["p2"]
    assert ids(data, "Patient", ("gender:not", "female")) == ["p1", "p3"]
    assert ids(data, "Patient", ("gender", "|female")) == ["p2"]  # no system
    assert ids(data, "Condition", ("code", "http://hl7.org/fhir/sid/icd-10|")) == ["c1"]
    assert ids(data, "Condition", ("code:text", "高血压")) == ["c1"]
    assert ids(
        data, "Patient", ("identifier:of-type", "http://terminology.hl7.org/CodeSystem/v2-0203|NI|220102198005170011")
    ) == ["p1"]
    assert ids(data, "Patient", ("active", "false")) == ["p3"]
    assert ids(data, "Patient", ("deceased", "true")) == ["p3"]
    assert ids(data, "Patient", ("deceased", "false")) == ["p1", "p2"]
    assert ids(data, "Patient", ("phone", "13912345678")) == ["p1"]


def test_or_and_and_escaping(data):
    assert ids(data, "Patient", ("gender", "female,male")) == ["p1", "p2", "p3"]
    assert ids(data, "Patient", ("gender", "male"), ("family", "li")) == ["p3"]
    assert ids(data, "Observation", ("code", "8480-6"), ("code", "2339-0")) == []
    assert ids(data, "Organization", ("name", "长春市中心医院\\,x")) == []  # an escaped comma is not an OR


def test_reference_forms(data):
    assert ids(data, "Observation", ("subject", "Patient/p1")) == ["o1", "o2"]
    assert ids(data, "Observation", ("subject", "p1")) == ["o1", "o2"]
    assert ids(data, "Observation", ("subject:Patient", "p2")) == ["o3", "o4"]
    assert ids(data, "Observation", ("patient", "http://example.org/fhir/Patient/p3")) == ["bp1"]
    assert ids(data, "Organization", ("partof:missing", "true")) == ["cc-hosp"]
    assert ids(data, "Organization", ("partof:missing", "false")) == ["jl-hosp"]
    with pytest.raises(InvalidInput):
        ids(data, "Observation", ("subject:Organization", "p1"))


def test_chains_and_reverse_chains(data):
    assert ids(data, "Observation", ("subject.family", "zhang")) == ["o1", "o2", "o3", "o4"]
    assert ids(data, "Observation", ("subject:Patient.gender", "female")) == ["o3", "o4"]
    assert ids(data, "Observation", ("subject:Patient.organization.name", "吉林")) == ["o3", "o4"]
    assert ids(data, "Patient", ("_has:Observation:patient:code", "2339-0")) == ["p2"]
    assert ids(data, "Patient", ("_has:Observation:subject:_has:Provenance:target:agent", "Organization/cc-hosp")) == []
    assert ids(data, "Organization", ("_has:Patient:organization:_has:Observation:patient:code", "2339-0")) == [
        "jl-hosp"
    ]
    assert ids(data, "Patient", ("_has:Condition:subject:code", "I10"), ("gender", "male")) == ["p1"]


def test_has_joined_to_another_condition_or_tested_as_a_set_finds_the_same(data, monkeypatch):
    # on PostgreSQL, up to HAS_JOIN_LIMIT referrers a _has set is joined to the first set's references;
    # beyond (and on SQLite), tested by rid
    has_obs, has_cond = ("_has:Observation:patient:code", "2339-0"), ("_has:Condition:subject:code", "I10")
    queries = [
        [has_cond, ("gender", "male")],
        [has_obs, ("family", "zhang")],
        [has_obs, has_cond, ("family", "zhang")],
        [("_has:Observation:subject:_has:Provenance:target:agent", "Organization/cc-hosp"), ("family", "zhang")],
    ]
    expected = [["p1"], ["p2"], [], []]
    assert [ids(data, "Patient", *q) for q in queries] == expected
    assert [total(data, "Patient", *q) for q in queries] == [len(e) for e in expected]
    monkeypatch.setattr(search, "HAS_JOIN_LIMIT", 0)
    assert [ids(data, "Patient", *q) for q in queries] == expected
    assert [total(data, "Patient", *q) for q in queries] == [len(e) for e in expected]


def test_total_beyond_the_rid_set_limit_comes_with_the_first_rids(data, monkeypatch):
    # beyond RID_SET_LIMIT matches the page is read by its own query and the total is counted with the first rids
    cases = [
        ("Observation", [("subject", "Patient/p1")], ["o1", "o2"]),
        ("Patient", [("family", "zhang")], ["p1", "p2"]),
        ("Patient", [("_has:Condition:subject:code", "I10")], ["p1"]),
    ]
    for rtype, q, matches in cases:
        assert (ids(data, rtype, *q), total(data, rtype, *q)) == (matches, len(matches))
    monkeypatch.setattr(search, "RID_SET_LIMIT", 0)
    for rtype, q, matches in cases:
        with data.unit(write=False) as u:
            first = u.search(rtype, [*q, ("_count", "1")])
        assert first.total == len(matches) and len(first.matches) == 1 and first.matches[0].id in matches
        assert ids(data, rtype, *q) == matches


def test_dates_with_precision_and_prefixes(data):
    assert ids(data, "Patient", ("birthdate", "1980")) == ["p1", "p2"]
    assert ids(data, "Patient", ("birthdate", "1980-05-17")) == ["p1"]  # p2 (1980-05) is not inside that day
    assert ids(data, "Patient", ("birthdate", "gt1980-05-31")) == ["p3"]
    assert ids(data, "Patient", ("birthdate", "lt1980-05-10")) == ["p2"]  # May 1980 starts before the 10th
    assert ids(data, "Patient", ("birthdate", "ge1980-05-17")) == ["p1", "p2", "p3"]
    assert ids(data, "Patient", ("birthdate", "le1980-05-01")) == ["p2"]
    assert ids(data, "Patient", ("birthdate", "sa1980-12-31")) == ["p3"]
    assert ids(data, "Patient", ("birthdate", "eb1980-06")) == ["p1", "p2"]
    assert ids(data, "Patient", ("birthdate", "ne1980")) == ["p3"]
    assert ids(data, "Observation", ("date", "ge2024-03-01"), ("date", "lt2024-06-01")) == ["bp1", "o1"][1:]
    assert ids(data, "Encounter", ("date", "2024-03-01T08:00:00+00:00")) == []  # period is wider than an instant
    assert ids(data, "Encounter", ("date", "2024-03-01")) == ["e1"]
    assert ids(data, "Observation", ("date", "ap2024-06-02")) == ["o2", "o4"]
    assert ids(data, "Condition", ("onset-date", "2019")) == ["c1"]


def test_numbers_and_quantities_with_ucum(data):
    assert ids(data, "RiskAssessment", ("probability", "0.25")) == ["ra1"]
    assert ids(data, "RiskAssessment", ("probability", "gt0.2")) == ["ra1"]
    assert ids(data, "RiskAssessment", ("probability", "lt0.2")) == []
    assert ids(data, "Observation", ("value-quantity", "150")) == ["o1"]
    assert ids(data, "Observation", ("value-quantity", "gt120||mm[Hg]")) == ["o1"]
    assert ids(data, "Observation", ("value-quantity", f"150|{UCUM}|mm[Hg]")) == ["o1"]
    # 0.15 g is 150 mg: found whichever unit the search uses
    assert ids(data, "Observation", ("value-quantity", f"150|{UCUM}|mg")) == ["o3"]
    assert ids(data, "Observation", ("value-quantity", f"le200|{UCUM}|mg")) == ["o3"]
    assert ids(data, "Observation", ("value-quantity", "ap6")) == ["o4"]


def test_composite_matches_the_same_component(data):
    # systolic 120 and diastolic 180 in bp1: systolic 180 is not there, even though 180 and 8480-6 both are
    assert ids(data, "Observation", ("component-code-value-quantity", f"{LOINC}|8480-6$120")) == ["bp1"]
    assert ids(data, "Observation", ("component-code-value-quantity", f"{LOINC}|8480-6$180")) == []
    assert ids(data, "Observation", ("component-code-value-quantity", f"{LOINC}|8462-4$gt150")) == ["bp1"]
    assert ids(data, "Observation", ("code-value-quantity", "8480-6$gt140")) == ["o1"]


def test_uri_modifiers(data):
    assert ids(data, "ValueSet", ("url", "http://changbai.cn/fhir/ValueSet/sex/v2")) == ["vs1"]
    assert ids(data, "ValueSet", ("url:below", "http://changbai.cn/fhir/ValueSet")) == ["vs1"]
    assert ids(data, "ValueSet", ("url:above", "http://changbai.cn/fhir/ValueSet/sex/v2/extra")) == ["vs1"]
    assert ids(data, "ValueSet", ("url", "http://changbai.cn/fhir/ValueSet")) == []


def test_common_parameters(data):
    assert ids(data, "Patient", ("_id", "p1,p3")) == ["p1", "p3"]
    assert ids(data, "Patient", ("_tag", "urn:changbai:tag|vip")) == ["p1"]
    assert ids(data, "Patient", ("_profile", "http://changbai.cn/fhir/StructureDefinition/resident")) == ["p1"]
    assert ids(data, "Patient", ("_source", "http://county-a/fhir")) == ["p1"]
    assert ids(data, "Patient", ("_list", "l1")) == ["p1", "p3"]
    assert ids(data, "Patient", ("_lastUpdated", "gt2000-01-01")) == ["p1", "p2", "p3"]
    assert ids(data, "Patient", ("_lastUpdated", "lt2000-01-01")) == []
    assert ids(data, None, ("_type", "Patient,Condition"), ("_id", "p1,c1,o1")) == ["c1", "p1"]


def test_include_revinclude_iterate(data):
    with data.unit(write=False) as u:
        r = u.search("Observation", [("_id", "o3"), ("_include", "Observation:subject")])
        assert [m.id for m in r.matches] == ["o3"] and [m.id for m in r.included] == ["p2"]
        r = u.search(
            "Observation",
            [("_id", "o3"), ("_include", "Observation:subject"), ("_include:iterate", "Patient:organization")],
        )
        assert sorted(m.id for m in r.included) == ["jl-hosp", "p2"]
        r = u.search("Patient", [("_id", "p1"), ("_revinclude", "Provenance:target")])
        assert [m.id for m in r.included] == ["prov1"]
        r = u.search("Patient", [("_id", "p1"), ("_revinclude", "*:*")])
        assert {m.id for m in r.included} >= {"o1", "o2", "c1", "e1", "prov1", "mr1", "ra1", "l1"}


def test_sort_and_paging(data):
    with data.unit(write=False) as u:
        r = u.search("Patient", [("_sort", "birthdate")])
        assert [m.id for m in r.matches] == ["p2", "p1", "p3"]
        r = u.search("Patient", [("_sort", "-birthdate")])
        assert [m.id for m in r.matches] == ["p3", "p2", "p1"]  # descending: by the end of each date's range
        r = u.search("Observation", [("_sort", "code,-date")])
        assert [m.id for m in r.matches] == ["o4", "o2", "o1", "o3", "bp1"]
        seen = []
        for offset in range(0, 5, 2):
            page = u.search("Observation", [("_sort", "_id"), ("_count", "2"), ("_offset", str(offset))])
            seen += [m.id for m in page.matches]
            assert page.total == 5
        assert seen == ["bp1", "o1", "o2", "o3", "o4"]


def test_summary_elements_total(data):
    with data.unit(write=False) as u:
        r = u.search("Patient", [("_summary", "count")])
        assert r.total == 3 and r.matches == []
        r = u.search("Patient", [("_total", "none")])
        assert r.total is None and len(r.matches) == 3


def test_strict_and_lenient(data):
    with pytest.raises(InvalidInput) as err:
        ids(data, "Patient", ("nonsense", "1"))
    assert err.value.issues[0].expression == ["nonsense"]
    assert ids(data, "Patient", ("nonsense", "1"), ("gender", "female"), strict=False) == ["p2"]
    for bad in [
        ("birthdate", "1980-13"),
        ("probability", "abc"),
        ("gender:exact", "x"),
        ("_count", "-1"),
        ("_sort", "nonsense"),
        ("subject.nonsense", "x"),
    ]:
        rtype = "RiskAssessment" if bad[0] == "probability" else "Observation" if "subject" in bad[0] else "Patient"
        with pytest.raises(InvalidInput):
            ids(data, rtype, bad)


def test_deleted_resources_are_not_found(data):
    with data.unit() as u:
        u.delete("Patient", "p3")
    assert ids(data, "Patient", ("gender", "male")) == ["p1"]
    assert ids(data, "Observation", ("subject.family", "li")) == []


def test_totals_agree_with_the_matches(repo, data):
    """A total comes from the last page when the search fits in it, otherwise from counting the index rows
    alone (when every parameter is an index lookup); either way it is the number of matches."""
    searches = [
        ("Patient", [("family", "zh")]),
        ("Patient", [("_has:Observation:patient:code", "2339-0"), ("birthdate", "1980-05")]),
        ("Organization", [("name", "长春")]),
        ("Observation", [("subject.family", "zhang"), ("date", "ge2024")]),
        ("Observation", [("code", "8480-6"), ("date", "2024-03-01")]),
        ("Observation", [("subject", "Patient/p1"), ("_lastUpdated", "gt2000")]),
    ]
    with repo.unit(write=False) as u:
        for rtype, params in searches:
            full = u.search(rtype, [*params, ("_count", "100")])
            paged = u.search(rtype, [*params, ("_count", "1")])
            counted = u.search(rtype, [*params, ("_summary", "count")])
            assert full.total == paged.total == counted.total == len(full.matches) > 0, (rtype, params)
