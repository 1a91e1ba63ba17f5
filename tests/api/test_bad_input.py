"""Bad input gets a 4xx with an OperationOutcome that says what and where, and changes nothing."""

from __future__ import annotations

import pytest

from changbai.settings import Settings


@pytest.fixture
def settings(tmp_path, database_url):
    return Settings(data_dir=tmp_path / "var", database_url=database_url, max_body_bytes=10_000, mllp_port=0)


def outcome(r, status):
    assert r.status_code == status, r.text
    body = r.json()
    assert body["resourceType"] == "OperationOutcome"
    assert body["issue"][0]["diagnostics"]
    return body["issue"]


def test_malformed_json(client):
    issues = outcome(
        client.post(
            "/Patient", content=b'{"resourceType": "Patient",', headers={"content-type": "application/fhir+json"}
        ),
        400,
    )
    assert "not valid JSON" in issues[0]["diagnostics"]


def test_wrong_and_unknown_resource_type(client):
    outcome(
        client.post("/Patient", json={"resourceType": "Observation", "status": "final", "code": {"text": "x"}}), 400
    )
    outcome(client.post("/Dragon", json={"resourceType": "Dragon"}), 404)
    issues = outcome(client.put("/Patient/x", json={"resourceType": "Patient", "id": "x", "kind": "dragon"}), 400)
    assert issues[0]["expression"] == ["Patient.kind"]


def test_element_not_valid_r4_names_the_place(client):
    issues = outcome(
        client.post("/Patient", json={"resourceType": "Patient", "birthDate": "1990-02-30", "name": {"family": "x"}}),
        400,
    )
    where = {e for i in issues for e in i["expression"]}
    assert where == {"Patient.birthDate", "Patient.name"}


def test_id_mismatch(client):
    issues = outcome(client.put("/Patient/a", json={"resourceType": "Patient", "id": "b"}), 400)
    assert "does not match" in issues[0]["diagnostics"]
    outcome(client.put("/Patient/a", json={"resourceType": "Patient"}), 400)


def test_unsupported_media_type_and_format(client):
    outcome(client.post("/Patient", content=b"<Patient/>", headers={"content-type": "application/fhir+xml"}), 415)
    outcome(client.get("/metadata", headers={"accept": "application/fhir+xml"}), 406)


def test_body_over_limit(client):
    big = {"resourceType": "Patient", "name": [{"text": "x" * 20_000}]}
    outcome(client.post("/Patient", json=big), 413)


def test_bad_search_and_unknown_interaction(client):
    issues = outcome(client.get("/Patient", params={"nonsense": "1"}), 400)
    assert issues[0]["expression"] == ["nonsense"]
    lenient = client.get("/Patient", params={"nonsense": "1"}, headers={"Prefer": "handling=lenient"})
    assert lenient.status_code == 200
    outcome(client.get("/Patient", params={"birthdate": "yesterday"}), 400)
    outcome(client.get("/Patient/a/b/c/d/e"), 404)
    outcome(client.delete("/Patient"), 405)


def test_bad_bundles(client):
    outcome(client.post("", json={"resourceType": "Bundle", "type": "collection"}), 400)
    outcome(
        client.post(
            "",
            json={
                "resourceType": "Bundle",
                "type": "transaction",
                "entry": [{"request": {"method": "FETCH", "url": "Patient"}}],
            },
        ),
        400,
    )


def test_nothing_changed_after_bad_input(client):
    client.post("/Patient", json={"resourceType": "Patient", "gender": 7})
    client.post("/Patient", content=b"{", headers={"content-type": "application/fhir+json"})
    assert client.get("/Patient").json()["total"] == 0
    assert client.get("/_history").json()["total"] == 0
