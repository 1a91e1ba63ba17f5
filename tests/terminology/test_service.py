"""The terminology service on a running platform: operations over HTTP, served from the store, and the
hooks for search (:below) and validation (bindings)."""

from __future__ import annotations

import httpx
import pytest

from changbai.terminology.content import load
from changbai.terminology.service import install
from tests.conftest import LiveServer, free_port

ICD10 = "http://hl7.org/fhir/sid/icd-10"
BASE = "https://changbai.example/fhir"


@pytest.fixture
def tx_platform(settings):
    from changbai.api.app import create_platform

    p = create_platform(settings, extensions=[install])
    load(p.repo)
    yield p
    p.db.dispose()


@pytest.fixture
def fhir(tx_platform):
    live = LiveServer(tx_platform.build_app(), free_port()).start()
    with httpx.Client(base_url=live.fhir, timeout=60, headers={"accept": "application/fhir+json"}) as c:
        yield c
    live.stop()


def values(body: dict) -> dict:
    out: dict = {}
    for p in body["parameter"]:
        out.setdefault(p["name"], []).append(next((v for k, v in p.items() if k.startswith("value")), p))
    return out


def test_lookup_over_http_from_the_store(fhir):
    r = fhir.get("/CodeSystem/$lookup", params={"system": ICD10, "code": "E11.9"})
    assert r.status_code == 200, r.text
    assert values(r.json())["display"] == ["非胰岛素依赖型糖尿病不伴有并发症"]
    r = fhir.get("/CodeSystem/$lookup", params={"system": ICD10, "code": "nope"})
    assert r.status_code == 404 and r.json()["resourceType"] == "OperationOutcome"


def test_validate_code_expand_subsumes_and_translate_over_http(fhir):
    r = fhir.post(
        "/ValueSet/$validate-code",
        json={
            "resourceType": "Parameters",
            "parameter": [
                {"name": "url", "valueUri": f"{BASE}/ValueSet/gb-t-2260"},
                {"name": "coding", "valueCoding": {"system": f"{BASE}/CodeSystem/gb-t-2260", "code": "220100"}},
            ],
        },
    )
    assert r.status_code == 200, r.text
    assert values(r.json())["result"] == [True] and values(r.json())["display"] == ["长春市"]
    r = fhir.post(
        "/ValueSet/$expand",
        json={
            "resourceType": "Parameters",
            "parameter": [
                {"name": "url", "valueUri": f"{BASE}/ValueSet/gb-t-3304"},
                {"name": "filter", "valueString": "朝鲜"},
            ],
        },
    )
    assert r.status_code == 200, r.text
    assert [c["code"] for c in r.json()["expansion"]["contains"]] == ["10"]
    r = fhir.get("/CodeSystem/$subsumes", params={"system": ICD10, "codeA": "IX", "codeB": "I10"})
    assert values(r.json())["outcome"] == ["subsumes"]
    r = fhir.get(
        "/ConceptMap/$translate",
        params={
            "sourceSystem": f"{BASE}/CodeSystem/gb-t-2261-1-sex",
            "sourceCode": "1",
            "targetSystem": "http://hl7.org/fhir/administrative-gender",
        },
    )
    assert r.status_code == 200, r.text
    assert values(r.json())["result"] == [True]


def test_conditions_coded_in_a_chapter_are_found_with_below(fhir):
    def condition(code: str) -> dict:
        return {
            "resourceType": "Condition",
            "subject": {"reference": "Patient/p1"},
            "code": {"coding": [{"system": ICD10, "code": code}]},
        }

    fhir.put("/Patient/p1", json={"resourceType": "Patient", "id": "p1"})
    for code in ("I10", "I21.9", "E11.9"):
        assert fhir.post("/Condition", json=condition(code)).status_code == 201
    r = fhir.get("/Condition", params={"code:below": f"{ICD10}|IX"})
    assert r.status_code == 200, r.text
    found = sorted(e["resource"]["code"]["coding"][0]["code"] for e in r.json().get("entry", []))
    assert found == ["I10", "I21.9"]


def test_binding_checker_uses_value_sets_added_to_the_store(tx_platform):
    from changbai.terminology.binding import binding_checker_for, binding_checker_for_url

    vs = {
        "resourceType": "ValueSet",
        "id": "local-sex",
        "url": "http://example.org/vs/local-sex",
        "status": "active",
        "compose": {
            "include": [{"system": f"{BASE}/CodeSystem/gb-t-2261-1-sex", "concept": [{"code": "1"}, {"code": "2"}]}]
        },
    }
    with tx_platform.repo.unit() as unit:
        unit.create(vs)
    # the checker of the node, and the one bulk load's worker processes build from the database URL
    for check in (binding_checker_for(tx_platform.repo), binding_checker_for_url(tx_platform.repo.db.url)):
        assert check("required", "http://example.org/vs/local-sex", "1", "Patient.x") is None
        issue = check("required", "http://example.org/vs/local-sex", "9", "Patient.x")
        assert issue is not None and issue.severity == "error" and "local-sex" in issue.diagnostics
        assert check("required", "http://hl7.org/fhir/ValueSet/unknown", "x", "Patient.y") is None
        issue = check("required", "http://hl7.org/fhir/ValueSet/administrative-gender|4.0.1", "often", "Patient.z")
        assert issue is not None and "administrative-gender" in issue.diagnostics


def test_required_bindings_of_fhir_core_are_enforced_over_http(fhir):
    r = fhir.post("/Patient", json={"resourceType": "Patient", "id": "g1", "gender": "often"})
    assert r.status_code in (400, 422), r.text
    outcome = r.json()
    assert outcome["resourceType"] == "OperationOutcome"
    issue = outcome["issue"][0]
    assert issue["severity"] == "error" and issue["expression"] == ["Patient.gender"]
    assert "'often'" in issue["diagnostics"]
    assert "http://hl7.org/fhir/ValueSet/administrative-gender" in issue["diagnostics"]
    assert fhir.get("/Patient", params={"gender": "often"}).json().get("total", 0) == 0

    # codes of external code systems are not refused: MIME types and UCUM judged by syntax only, BCP-47
    # languages and SNOMED CT not judged; an extensible binding that is not met is a warning, not a refusal
    patient = {
        "resourceType": "Patient",
        "gender": "female",
        "photo": [{"contentType": "image/jpeg; name=photo.jpg", "url": "http://example.org/p.jpg"}],
        "communication": [{"language": {"coding": [{"system": "urn:ietf:bcp:47", "code": "zh-CN"}]}}],
        "maritalStatus": {
            "coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-MaritalStatus", "code": "Q"}]
        },
    }
    r = fhir.post("/Patient", json=patient, headers={"prefer": "return=OperationOutcome"})
    assert r.status_code == 201, r.text
    warnings = [i for i in r.json()["issue"] if i["severity"] == "warning"]
    assert [w["expression"] for w in warnings] == [["Patient.maritalStatus"]]
    assert "http://hl7.org/fhir/ValueSet/marital-status" in warnings[0]["diagnostics"]
    observation = {
        "resourceType": "Observation",
        "status": "final",
        "code": {"coding": [{"system": "http://snomed.info/sct", "code": "271649006"}]},
        "bodySite": {"coding": [{"system": "http://snomed.info/sct", "code": "368209003"}]},
        "valueQuantity": {"value": 120, "unit": "mmHg", "system": "http://unitsofmeasure.org", "code": "mm[Hg]"},
    }
    assert fhir.post("/Observation", json=observation).status_code == 201


def test_operations_know_the_fhir_core_terminology_behind_the_store(fhir):
    r = fhir.get(
        "/ValueSet/$validate-code",
        params={
            "url": "http://hl7.org/fhir/ValueSet/administrative-gender",
            "system": "http://hl7.org/fhir/administrative-gender",
            "code": "female",
        },
    )
    assert r.status_code == 200, r.text
    assert values(r.json())["result"] == [True] and values(r.json())["display"] == ["Female"]
    r = fhir.get("/ValueSet/$expand", params={"url": "http://hl7.org/fhir/ValueSet/administrative-gender"})
    assert sorted(c["code"] for c in r.json()["expansion"]["contains"]) == ["female", "male", "other", "unknown"]


def test_terminology_capabilities_and_the_expansion_limit_over_http(settings):
    """GET metadata?mode=terminology is the TerminologyCapabilities; an unpaged $expand beyond the node's
    limit (CHANGBAI_TERMINOLOGY_EXPANSION_LIMIT) is refused as too costly, a page of it is not."""
    from changbai.api.app import create_platform

    platform = create_platform(settings.model_copy(update={"terminology_expansion_limit": 3}), extensions=[install])
    live = LiveServer(platform.build_app(), free_port()).start()
    try:
        with httpx.Client(base_url=live.fhir, timeout=60, headers={"accept": "application/fhir+json"}) as c:
            caps = c.get("/metadata", params={"mode": "terminology"}).json()
            assert caps["resourceType"] == "TerminologyCapabilities"
            assert {"name": "excludeNested"} in caps["expansion"]["parameter"]
            assert c.get("/metadata").json()["resourceType"] == "CapabilityStatement"
            cs = {
                "resourceType": "CodeSystem",
                "url": "http://example.org/cs/five",
                "status": "active",
                "content": "complete",
                "concept": [{"code": f"c{i}", "display": f"Code {i}"} for i in range(5)],
            }
            vs = {
                "resourceType": "ValueSet",
                "url": "http://example.org/vs/five",
                "status": "active",
                "compose": {"include": [{"system": cs["url"]}]},
            }
            assert c.post("/CodeSystem", json=cs).status_code == 201
            assert c.post("/ValueSet", json=vs).status_code == 201
            r = c.get("/ValueSet/$expand", params={"url": vs["url"]})
            assert r.status_code == 422 and r.json()["issue"][0]["code"] == "too-costly"
            r = c.get("/ValueSet/$expand", params={"url": vs["url"], "count": "2"})
            assert r.status_code == 200 and [x["code"] for x in r.json()["expansion"]["contains"]] == ["c0", "c1"]
    finally:
        live.stop()
        platform.db.dispose()
