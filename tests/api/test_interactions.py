"""The FHIR R4 REST interactions over a real HTTP server, on SQLite and PostgreSQL."""

from __future__ import annotations

import httpx

PATIENT = {
    "resourceType": "Patient",
    "identifier": [{"system": "urn:oid:2.16.156.10011.1.3", "value": "220102199003071234"}],
    "name": [{"family": "王", "given": ["小明"]}],
    "gender": "male",
    "birthDate": "1990-03-07",
}


def create(client: httpx.Client, resource: dict, **kw) -> dict:
    r = client.post(f"/{resource['resourceType']}", json=resource, **kw)
    assert r.status_code == 201, r.text
    return r.json()


def test_create_assigns_id_version_and_headers(client):
    r = client.post("/Patient", json={**PATIENT, "id": "client-chosen"})
    assert r.status_code == 201
    body = r.json()
    assert body["id"] != "client-chosen"  # create ignores a body id; the server assigns one
    assert body["meta"]["versionId"] == "1"
    assert body["meta"]["lastUpdated"].endswith("Z")
    assert r.headers["etag"] == 'W/"1"'
    assert r.headers["location"] == f"{str(client.base_url).rstrip('/')}/Patient/{body['id']}/_history/1"
    assert "last-modified" in r.headers
    assert r.headers["content-type"].startswith("application/fhir+json")


def test_read_vread_update_and_history(client):
    p = create(client, PATIENT)
    pid = p["id"]
    r = client.put(f"/Patient/{pid}", json={**p, "gender": "female"})
    assert r.status_code == 200
    assert r.json()["meta"]["versionId"] == "2"
    assert client.get(f"/Patient/{pid}").json()["gender"] == "female"
    v1 = client.get(f"/Patient/{pid}/_history/1")
    assert v1.status_code == 200 and v1.json()["gender"] == "male"
    assert client.get(f"/Patient/{pid}/_history/9").status_code == 404
    hist = client.get(f"/Patient/{pid}/_history").json()
    assert hist["type"] == "history" and hist["total"] == 2
    assert [e["resource"]["meta"]["versionId"] for e in hist["entry"]] == ["2", "1"]
    assert hist["entry"][1]["request"]["method"] == "POST"


def test_update_creates_with_client_id_and_unchanged_update_keeps_version(client):
    r = client.put("/Patient/jl-0001", json={**PATIENT, "id": "jl-0001"})
    assert r.status_code == 201
    again = client.put("/Patient/jl-0001", json={**PATIENT, "id": "jl-0001"})
    assert again.status_code == 200
    assert again.json()["meta"]["versionId"] == "1"  # nothing changed: no new version


def test_if_match_conflict_gives_412(client):
    p = create(client, PATIENT)
    ok = client.put(f"/Patient/{p['id']}", json={**p, "active": True}, headers={"If-Match": 'W/"1"'})
    assert ok.status_code == 200
    stale = client.put(f"/Patient/{p['id']}", json={**p, "active": False}, headers={"If-Match": 'W/"1"'})
    assert stale.status_code == 412
    assert stale.json()["resourceType"] == "OperationOutcome"
    assert client.get(f"/Patient/{p['id']}").json()["active"] is True


def test_conditional_create_update_and_delete(client):
    cond = {"If-None-Exist": "identifier=urn:oid:2.16.156.10011.1.3|220102199003071234"}
    first = client.post("/Patient", json=PATIENT, headers=cond)
    second = client.post("/Patient", json=PATIENT, headers=cond)
    assert first.status_code == 201 and second.status_code == 200
    assert first.json()["id"] == second.json()["id"]
    r = client.put(
        "/Patient",
        params={"identifier": "urn:oid:2.16.156.10011.1.3|220102199003071234"},
        json={**PATIENT, "active": True},
    )
    assert r.status_code == 200 and r.json()["id"] == first.json()["id"] and r.json()["active"] is True
    created = client.put(
        "/Patient", params={"identifier": "x|none"}, json={**PATIENT, "identifier": [{"system": "x", "value": "none"}]}
    )
    assert created.status_code == 201
    gone = client.delete("/Patient", params={"identifier": "x|none"})
    assert gone.status_code == 200
    assert client.get(f"/Patient/{created.json()['id']}").status_code == 410
    # two matches: conditional create refuses with 412
    create(client, PATIENT)
    assert client.post("/Patient", json=PATIENT, headers=cond).status_code == 412


def test_json_patch(client):
    p = create(client, PATIENT)
    ops = [{"op": "replace", "path": "/gender", "value": "female"}, {"op": "add", "path": "/active", "value": True}]
    r = client.patch(f"/Patient/{p['id']}", json=ops, headers={"content-type": "application/json-patch+json"})
    assert r.status_code == 200, r.text
    assert r.json()["gender"] == "female" and r.json()["meta"]["versionId"] == "2"
    bad = client.patch(
        f"/Patient/{p['id']}",
        json=[{"op": "test", "path": "/gender", "value": "male"}],
        headers={"content-type": "application/json-patch+json"},
    )
    assert bad.status_code == 422
    invalid = client.patch(
        f"/Patient/{p['id']}",
        json=[{"op": "replace", "path": "/gender", "value": 7}],
        headers={"content-type": "application/json-patch+json"},
    )
    assert invalid.status_code == 400  # the patched resource is not valid R4
    assert client.get(f"/Patient/{p['id']}").json()["meta"]["versionId"] == "2"


def test_delete_is_versioned_and_read_gives_410(client):
    p = create(client, PATIENT)
    assert client.delete(f"/Patient/{p['id']}").status_code == 200
    assert client.get(f"/Patient/{p['id']}").status_code == 410
    hist = client.get(f"/Patient/{p['id']}/_history").json()
    assert hist["total"] == 2 and hist["entry"][0]["request"]["method"] == "DELETE"
    assert client.get(f"/Patient/{p['id']}/_history/1").status_code == 200
    # recreate after delete continues the version sequence
    again = client.put(f"/Patient/{p['id']}", json={**PATIENT, "id": p["id"]})
    assert again.status_code == 201 and again.json()["meta"]["versionId"] == "3"


def test_type_and_system_history_with_since_and_paging(client):
    for i in range(5):
        create(client, {**PATIENT, "name": [{"family": f"李{i}"}]})
    create(client, {"resourceType": "Organization", "name": "长春市中心医院"})
    page = client.get("/Patient/_history", params={"_count": 2}).json()
    assert page["total"] == 5 and len(page["entry"]) == 2
    seen = [e["resource"]["id"] for e in page["entry"]]
    while nxt := next((link["url"] for link in page["link"] if link["relation"] == "next"), None):
        page = httpx.get(nxt).json()
        seen += [e["resource"]["id"] for e in page["entry"]]
    assert len(seen) == len(set(seen)) == 5
    system = client.get("/_history").json()
    assert system["total"] == 6
    future = client.get("/_history", params={"_since": "2999-01-01"}).json()
    assert future["total"] == 0


def test_transaction_is_atomic_and_rewrites_urn_uuid(client):
    bundle = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {
                "fullUrl": "urn:uuid:61ebe359-bfdc-4613-8bf2-c5e300945f0a",
                "resource": PATIENT,
                "request": {"method": "POST", "url": "Patient"},
            },
            {
                "fullUrl": "urn:uuid:88f151c0-a954-468a-88bd-5ae15c08e059",
                "resource": {
                    "resourceType": "Observation",
                    "status": "final",
                    "code": {"coding": [{"system": "http://loinc.org", "code": "8480-6"}]},
                    "subject": {"reference": "urn:uuid:61ebe359-bfdc-4613-8bf2-c5e300945f0a"},
                    "valueQuantity": {
                        "value": 130,
                        "unit": "mmHg",
                        "system": "http://unitsofmeasure.org",
                        "code": "mm[Hg]",
                    },
                },
                "request": {"method": "POST", "url": "Observation"},
            },
        ],
    }
    r = client.post("", json=bundle)
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["type"] == "transaction-response"
    pid = out["entry"][0]["response"]["location"].split("/")[1]
    obs = out["entry"][1]["resource"]
    assert obs["subject"]["reference"] == f"Patient/{pid}"
    assert client.get("/Observation", params={"subject": f"Patient/{pid}"}).json()["total"] == 1
    # a failing entry rolls the whole transaction back and is named
    bad = {
        **bundle,
        "entry": [
            *bundle["entry"],
            {"resource": {"resourceType": "Patient", "gender": 5}, "request": {"method": "POST", "url": "Patient"}},
        ],
    }
    r = client.post("", json=bad)
    assert r.status_code == 400
    assert "Bundle.entry[2]" in r.json()["issue"][0]["diagnostics"]
    assert client.get("/Patient").json()["total"] == 1


def test_transaction_resolves_conditional_references_and_order(client):
    existing = create(client, PATIENT)
    bundle = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {
                "resource": {
                    "resourceType": "Encounter",
                    "status": "finished",
                    "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "AMB"},
                    "subject": {"reference": "Patient?identifier=urn:oid:2.16.156.10011.1.3|220102199003071234"},
                },
                "request": {"method": "POST", "url": "Encounter"},
            },
            {"request": {"method": "GET", "url": "Encounter?subject=Patient/" + existing["id"]}},
            {"request": {"method": "DELETE", "url": f"Patient/{existing['id']}-nothing"}},
        ],
    }
    r = client.post("", json=bundle)
    assert r.status_code == 200, r.text
    entries = r.json()["entry"]
    assert entries[0]["resource"]["subject"]["reference"] == f"Patient/{existing['id']}"
    # GET runs after the POST, so the search sees the new encounter
    assert entries[1]["resource"]["total"] == 1


def test_batch_entries_succeed_or_fail_on_their_own(client):
    bundle = {
        "resourceType": "Bundle",
        "type": "batch",
        "entry": [
            {"resource": PATIENT, "request": {"method": "POST", "url": "Patient"}},
            {
                "resource": {"resourceType": "Patient", "birthDate": "1990-13-45"},
                "request": {"method": "POST", "url": "Patient"},
            },
            {"request": {"method": "GET", "url": "Patient/does-not-exist"}},
        ],
    }
    r = client.post("", json=bundle)
    assert r.status_code == 200
    statuses = [e["response"]["status"] for e in r.json()["entry"]]
    assert statuses[0].startswith("201") and statuses[1].startswith("400") and statuses[2].startswith("404")
    assert r.json()["entry"][1]["response"]["outcome"]["resourceType"] == "OperationOutcome"
    assert client.get("/Patient").json()["total"] == 1


def test_prefer_return(client):
    minimal = client.post("/Patient", json=PATIENT, headers={"Prefer": "return=minimal"})
    assert minimal.status_code == 201 and minimal.content == b"" and "location" in minimal.headers
    oo = client.post("/Patient", json=PATIENT, headers={"Prefer": "return=OperationOutcome"})
    assert oo.json()["resourceType"] == "OperationOutcome"


def test_capability_statement_tells_the_truth(client):
    cs = client.get("/metadata").json()
    assert cs["resourceType"] == "CapabilityStatement" and cs["fhirVersion"] == "4.0.1"
    rest = cs["rest"][0]
    types = {r["type"]: r for r in rest["resource"]}
    assert len(types) == 146
    patient_params = {p["name"] for p in types["Patient"]["searchParam"]}
    assert {"identifier", "name", "birthdate", "_id", "_lastUpdated"} <= patient_params
    assert {"name": "everything", "definition": "http://hl7.org/fhir/OperationDefinition/Patient-everything"} in types[
        "Patient"
    ]["operation"]
    assert {i["code"] for i in rest["interaction"]} >= {"transaction", "batch", "history-system"}


def test_validate_operation(client):
    ok = client.post("/Patient/$validate", json=PATIENT)
    assert ok.status_code == 200 and ok.json()["issue"][0]["severity"] == "information"
    bad = client.post("/Patient/$validate", json={"resourceType": "Patient", "gender": 1, "foo": "bar"})
    assert bad.status_code == 200
    where = {e for i in bad.json()["issue"] for e in i.get("expression", [])}
    assert {"Patient.gender", "Patient.foo"} <= where
    assert client.get("/Patient").json()["total"] == 0  # $validate stores nothing


def test_patient_everything_is_the_compartment_paged(client):
    p = create(client, PATIENT)
    other = create(client, {**PATIENT, "name": [{"family": "赵"}]})
    for i in range(3):
        create(
            client,
            {
                "resourceType": "Observation",
                "status": "final",
                "code": {"text": f"obs {i}"},
                "subject": {"reference": f"Patient/{p['id']}"},
            },
        )
    create(
        client,
        {
            "resourceType": "Observation",
            "status": "final",
            "code": {"text": "other"},
            "subject": {"reference": f"Patient/{other['id']}"},
        },
    )
    everything = client.get(f"/Patient/{p['id']}/$everything").json()
    ids = {(e["resource"]["resourceType"], e["resource"]["id"]) for e in everything["entry"]}
    assert ("Patient", p["id"]) in ids and ("Patient", other["id"]) not in ids
    assert sum(1 for t, _ in ids if t == "Observation") == 3
    paged = client.get(f"/Patient/{p['id']}/$everything", params={"_count": 2}).json()
    assert len(paged["entry"]) == 2 and any(link["relation"] == "next" for link in paged["link"])
    assert client.get("/Patient/nobody/$everything").status_code == 404


def test_compartment_search(client):
    p = create(client, PATIENT)
    create(
        client,
        {
            "resourceType": "Condition",
            "subject": {"reference": f"Patient/{p['id']}"},
            "code": {"coding": [{"system": "http://hl7.org/fhir/sid/icd-10", "code": "I10"}]},
        },
    )
    r = client.get(f"/Patient/{p['id']}/Condition", params={"code": "I10"})
    assert r.status_code == 200 and r.json()["total"] == 1


def test_search_paging_is_stable_while_data_changes(client):
    for i in range(5):
        create(client, {**PATIENT, "name": [{"family": f"周{i}"}]})
    page = client.get("/Patient", params={"_count": 2}).json()
    seen = [e["resource"]["id"] for e in page["entry"]]
    create(client, {**PATIENT, "name": [{"family": "新"}]})  # arrives between pages
    while nxt := next((link["url"] for link in page["link"] if link["relation"] == "next"), None):
        page = httpx.get(nxt).json()
        seen += [e["resource"]["id"] for e in page.get("entry", [])]
    assert len(seen) == len(set(seen)) == 5  # no duplicates, none skipped
    self_link = next(link["url"] for link in page["link"] if link["relation"] == "self")
    assert httpx.get(self_link).status_code == 200


def test_search_via_post_and_head(client):
    create(client, PATIENT)
    r = client.post(
        "/Patient/_search", data={"gender": "male"}, headers={"content-type": "application/x-www-form-urlencoded"}
    )
    assert r.status_code == 200 and r.json()["total"] == 1
    assert "gender=male" in next(link["url"] for link in r.json()["link"] if link["relation"] == "self")
    head = client.head("/Patient")
    assert head.status_code == 200 and head.content == b""


def test_transaction_conditional_update_maps_its_full_url(client):
    ident = "urn:oid:2.16.156.10011.1.3|220102199003071234"
    bundle = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {
                "fullUrl": "urn:uuid:3c5a9d0e-0000-4000-8000-000000000001",
                "resource": PATIENT,
                "request": {"method": "PUT", "url": f"Patient?identifier={ident}"},
            },
            {
                "resource": {
                    "resourceType": "Encounter",
                    "status": "finished",
                    "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "IMP"},
                    "subject": {"reference": "urn:uuid:3c5a9d0e-0000-4000-8000-000000000001"},
                },
                "request": {"method": "POST", "url": "Encounter"},
            },
        ],
    }
    first = client.post("", json=bundle).json()["entry"]
    pid = first[0]["response"]["location"].split("/")[1]
    assert first[1]["resource"]["subject"]["reference"] == f"Patient/{pid}"
    second = client.post("", json=bundle).json()["entry"]  # now the condition matches the same patient
    assert second[0]["response"]["location"].split("/")[1] == pid
    assert second[1]["resource"]["subject"]["reference"] == f"Patient/{pid}"
