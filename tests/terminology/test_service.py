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
    from changbai.terminology.binding import binding_checker_for

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
    check = binding_checker_for(tx_platform.repo)
    assert check("required", "http://example.org/vs/local-sex", "1", "Patient.x") is None
    issue = check("required", "http://example.org/vs/local-sex", "9", "Patient.x")
    assert issue is not None and issue.severity == "error" and "local-sex" in issue.diagnostics
    assert check("required", "http://hl7.org/fhir/ValueSet/unknown", "x", "Patient.y") is None
