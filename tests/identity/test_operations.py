"""The master index in a running platform: every Patient write is linked; $match, $ihe-pix, decisions."""

from __future__ import annotations

import threading

import httpx

from changbai.identity.residentid import check_character

RID = "urn:oid:2.16.156.10011.1.3"
MATCH_GRADE = "http://hl7.org/fhir/StructureDefinition/match-grade"


def resident_id(seq: str = "123") -> str:
    body = f"22240119800315{seq}"
    return body + check_character(body)


def registration(facility: str, mrn: str, **over) -> dict:
    p = {
        "resourceType": "Patient",
        "identifier": [
            {"system": RID, "value": resident_id()},
            {"system": f"urn:changbai:mrn:{facility}", "value": mrn},
        ],
        "name": [{"family": "张", "given": ["伟"]}],
        "gender": "male",
        "birthDate": "1980-03-15",
        "telecom": [{"system": "phone", "value": "13800138000"}],
        "address": [{"use": "home", "district": "延吉市", "line": ["河南街道光明街12号"]}],
    }
    p.update(over)
    return {k: v for k, v in p.items() if v not in ([], None)}  # an empty list means "leave it out"


def create(fhir: httpx.Client, resource: dict) -> dict:
    r = fhir.post("/Patient", json=resource)
    assert r.status_code == 201, r.text
    return r.json()


def pix(fhir: httpx.Client, token: str, **extra) -> httpx.Response:
    return fhir.get("/Patient/$ihe-pix", params={"sourceIdentifier": token, **extra})


def test_pix_returns_every_identifier_of_the_same_person_across_facilities(fhir):
    a = create(fhir, registration("hospital-a", "A-1"))
    b = create(fhir, registration("clinic-b", "B-9", name=[{"text": "張偉"}]))
    r = pix(fhir, "urn:changbai:mrn:hospital-a|A-1")
    assert r.status_code == 200, r.text
    params = r.json()["parameter"]
    idents = {(p["valueIdentifier"]["system"], p["valueIdentifier"]["value"]) for p in params if "valueIdentifier" in p}
    assert ("urn:changbai:mrn:clinic-b", "B-9") in idents
    refs = {p["valueReference"]["reference"] for p in params if "valueReference" in p}
    assert refs == {f"Patient/{a['id']}", f"Patient/{b['id']}"}
    only = pix(fhir, "urn:changbai:mrn:hospital-a|A-1", targetSystem="urn:changbai:mrn:clinic-b").json()
    assert [p["valueIdentifier"]["value"] for p in only["parameter"]] == ["B-9"]


def test_pix_with_unknown_identifier_is_not_found(fhir):
    assert pix(fhir, "urn:changbai:mrn:x|nope").status_code == 404
    assert pix(fhir, "no-bar").status_code == 400


def test_match_returns_scored_candidates_with_match_grade(fhir):
    a = create(fhir, registration("hospital-a", "A-1"))
    create(
        fhir,
        registration(
            "hospital-a",
            "A-2",
            identifier=[],
            name=[{"text": "李娜"}],
            gender="female",
            birthDate="1990-01-01",
            telecom=[],
        ),
    )
    query = {
        "resourceType": "Parameters",
        "parameter": [
            {
                "name": "resource",
                "resource": {
                    "resourceType": "Patient",
                    "name": [{"text": "Zhang Wei"}],
                    "birthDate": "1980-03-15",
                    "gender": "male",
                    "telecom": [{"system": "phone", "value": "+86 138 0013 8000"}],
                },
            },
            {"name": "count", "valueInteger": 5},
        ],
    }
    r = fhir.post("/Patient/$match", json=query)
    assert r.status_code == 200, r.text
    bundle = r.json()
    assert bundle["type"] == "searchset"
    assert [e["resource"]["id"] for e in bundle["entry"]] == [a["id"]]
    search = bundle["entry"][0]["search"]
    assert search["mode"] == "match" and 0.5 <= search["score"] <= 1
    assert search["extension"] == [{"url": MATCH_GRADE, "valueCode": "probable"}]
    certain_only = {**query, "parameter": [*query["parameter"], {"name": "onlyCertainMatches", "valueBoolean": True}]}
    assert fhir.post("/Patient/$match", json=certain_only).json()["entry"] == []


def test_match_with_nothing_usable_is_a_clear_error(fhir):
    query = {
        "resourceType": "Parameters",
        "parameter": [{"name": "resource", "resource": {"resourceType": "Patient", "gender": "male"}}],
    }
    r = fhir.post("/Patient/$match", json=query)
    assert r.status_code == 400
    assert "nothing usable" in r.json()["issue"][0]["diagnostics"]
    assert fhir.post("/Patient/$match", json={"resourceType": "Parameters", "parameter": []}).status_code == 400
    malformed = {
        "resourceType": "Parameters",
        "parameter": [
            {"name": "resource", "resource": {"resourceType": "Patient", "name": "张伟", "birthDate": "1980-03-15"}}
        ],
    }
    r = fhir.post("/Patient/$match", json=malformed)
    assert r.status_code == 400 and r.json()["resourceType"] == "OperationOutcome"


def test_invalid_resident_id_is_flagged_and_does_not_link(fhir):
    bad = resident_id()[:-1] + ("0" if resident_id()[-1] != "0" else "1")
    a = create(
        fhir,
        registration(
            "hospital-a",
            "A-1",
            identifier=[{"system": RID, "value": bad}],
            name=[{"text": "王芳"}],
            telecom=[],
            address=[],
            birthDate="1975-05-05",
        ),
    )
    b = create(
        fhir,
        registration(
            "clinic-b",
            "B-1",
            identifier=[{"system": RID, "value": bad}],
            name=[{"text": "李强"}],
            telecom=[],
            address=[],
            birthDate="1960-06-06",
        ),
    )
    pix_ids = {
        p["valueReference"]["reference"] for p in pix(fhir, f"{RID}|{bad}").json()["parameter"] if "valueReference" in p
    }
    assert pix_ids == {f"Patient/{a['id']}", f"Patient/{b['id']}"}  # both carry it, but two persons:
    people = fhir.get(f"/Patient/{a['id']}/$empi-history").json()["parameter"]
    assert all("auto-link" not in str(e) for e in people)


def test_not_duplicate_sticks_and_unlink_link_are_recorded(fhir):
    a = create(fhir, registration("hospital-a", "A-1"))
    b = create(fhir, registration("clinic-b", "B-1"))
    r = fhir.post(
        "/Patient/$empi-not-duplicate",
        json={
            "resourceType": "Parameters",
            "parameter": [{"name": "patient", "valueString": b["id"]}, {"name": "other", "valueString": a["id"]}],
        },
    )
    assert r.status_code == 200, r.text
    people = r.json()["parameter"]
    assert [p["valueReference"]["reference"] for p in people if "valueReference" in p] == [f"Patient/{b['id']}"]
    # An update of b is matched again, but the decision sticks.
    b["telecom"] = [{"system": "phone", "value": "13800138000", "use": "mobile"}]
    assert fhir.put(f"/Patient/{b['id']}", json=b).status_code == 200
    refs = {
        p["valueReference"]["reference"]
        for p in pix(fhir, "urn:changbai:mrn:clinic-b|B-1").json()["parameter"]
        if "valueReference" in p
    }
    assert refs == {f"Patient/{b['id']}"}
    # A reviewer links them after all; the history shows every decision.
    r = fhir.post(
        "/Patient/$empi-link",
        json={
            "resourceType": "Parameters",
            "parameter": [{"name": "patient", "valueString": b["id"]}, {"name": "other", "valueString": a["id"]}],
        },
    )
    assert r.status_code == 200
    actions = [
        next(p["valueString"] for p in e["part"] if p["name"] == "action")
        for e in fhir.get(f"/Patient/{b['id']}/$empi-history").json()["parameter"]
    ]
    assert actions[0] == "auto-link" and "not-duplicate" in actions and actions[-1] == "link"
    r = fhir.post(
        "/Patient/$empi-unlink",
        json={"resourceType": "Parameters", "parameter": [{"name": "patient", "valueString": b["id"]}]},
    )
    assert [p["valueReference"]["reference"] for p in r.json()["parameter"] if "valueReference" in p] == [
        f"Patient/{b['id']}"
    ]


def test_possible_matches_wait_in_the_review_queue(fhir):
    create(fhir, registration("hospital-a", "A-1", identifier=[], name=[{"text": "朴明哲"}], birthDate="2001-05-05"))
    create(fhir, registration("clinic-b", "B-1", identifier=[], name=[{"text": "朴明浩"}], birthDate="2001-05-05"))
    items = fhir.get("/Patient/$empi-review").json()["parameter"]
    assert len(items) == 1
    assert {p["name"]: p.get("valueCode") for p in items[0]["part"]}["status"] == "open"


def test_concurrent_registrations_of_a_new_person_make_one_person(fhir, empi_platform):
    results: list[dict] = []

    def register(facility: str) -> None:
        with httpx.Client(base_url=str(fhir.base_url), timeout=60) as c:
            r = c.post("/Patient", json=registration(facility, f"{facility}-1"))
            results.append(r.json())

    threads = [threading.Thread(target=register, args=(f,)) for f in ("hospital-a", "clinic-b", "village-c")]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    ids = {r["id"] for r in results}
    refs = {
        p["valueReference"]["reference"]
        for p in pix(fhir, "urn:changbai:mrn:hospital-a|hospital-a-1").json()["parameter"]
        if "valueReference" in p
    }
    assert refs == {f"Patient/{i}" for i in ids}


def params(**values: str) -> dict:
    return {"resourceType": "Parameters", "parameter": [{"name": k, "valueString": v} for k, v in values.items()]}


def persons_of(fhir: httpx.Client, token: str) -> set[str]:
    return {p["valueReference"]["reference"] for p in pix(fhir, token).json()["parameter"] if "valueReference" in p}


def test_merge_then_unmerge_returns_the_exact_previous_state_with_provenance(fhir):
    a1 = create(fhir, registration("hospital-a", "A-1"))
    a2 = create(fhir, registration("clinic-b", "B-1"))  # linked automatically to a1
    c = create(
        fhir,
        registration(
            "village-c",
            "C-1",
            identifier=[{"system": "urn:changbai:mrn:village-c", "value": "C-1"}],
            name=[{"text": "李强"}],
            telecom=[],
            address=[],
            birthDate="1962-08-01",
        ),
    )
    before = {t: persons_of(fhir, t) for t in ("urn:changbai:mrn:hospital-a|A-1", "urn:changbai:mrn:village-c|C-1")}
    assert before["urn:changbai:mrn:hospital-a|A-1"] == {f"Patient/{a1['id']}", f"Patient/{a2['id']}"}
    assert before["urn:changbai:mrn:village-c|C-1"] == {f"Patient/{c['id']}"}

    r = fhir.post("/Patient/$empi-merge", json=params(source=c["id"], target=a1["id"]))
    assert r.status_code == 200, r.text
    merge_id = r.json()["parameter"][0]["valueString"]
    assert persons_of(fhir, "urn:changbai:mrn:village-c|C-1") == {
        f"Patient/{a1['id']}",
        f"Patient/{a2['id']}",
        f"Patient/{c['id']}",
    }

    r = fhir.post("/Patient/$empi-unmerge", json=params(merge=merge_id))
    assert r.status_code == 200, r.text
    after = {t: persons_of(fhir, t) for t in before}
    assert after == before
    assert fhir.post("/Patient/$empi-unmerge", json=params(merge=merge_id)).status_code == 409

    provenance = fhir.get("/Provenance", params={"target": f"Patient/{c['id']}"}).json()
    codes = sorted(e["resource"]["activity"]["coding"][0]["code"] for e in provenance.get("entry", []))
    assert codes == ["merge", "unmerge"]


def test_golden_record_takes_each_element_by_survivorship(fhir):
    a = create(fhir, registration("hospital-a", "A-1", telecom=[{"system": "phone", "value": "13800138000"}]))
    b = create(
        fhir,
        registration(
            "clinic-b",
            "B-1",
            name=[{"text": "張偉"}],
            telecom=[{"system": "phone", "value": "13800138000"}, {"system": "phone", "value": "13911112222"}],
        ),
    )
    r = fhir.get(f"/Patient/{b['id']}/$empi-golden")
    assert r.status_code == 200, r.text
    golden = r.json()
    assert {link["other"]["reference"] for link in golden["link"]} == {f"Patient/{a['id']}", f"Patient/{b['id']}"}
    assert all(link["type"] == "seealso" for link in golden["link"])
    assert sorted(t["value"] for t in golden["telecom"]) == ["13800138000", "13911112222"]  # union
    systems = {i["system"] for i in golden["identifier"]}
    assert {"urn:changbai:mrn:hospital-a", "urn:changbai:mrn:clinic-b", RID} <= systems
    assert golden["birthDate"] == "1980-03-15"


def test_rematch_after_a_model_change_keeps_decisions_of_people(empi_platform, fhir):
    from changbai.identity.model import Guard, load
    from changbai.identity.registry import Registry, rematch

    a = create(fhir, registration("hospital-a", "A-1"))
    b = create(fhir, registration("clinic-b", "B-1"))
    c = create(fhir, registration("village-c", "C-1"))
    d = create(
        fhir,
        registration(
            "clinic-d",
            "D-1",
            identifier=[],
            name=[{"text": "李娜"}],
            gender="female",
            birthDate="1990-01-01",
            telecom=[],
            address=[],
        ),
    )
    fhir.post("/Patient/$empi-link", json=params(patient=d["id"], other=a["id"]))  # a person's decision
    strict = load()
    strict.guards.append(Guard("review-everything", {}, {}, "review"))  # nothing links automatically any more
    counts = rematch(empi_platform.repo, strict)
    assert counts["patients"] == 4 and counts["replayed"] == 1
    with empi_platform.repo.unit(write=False) as unit:
        registry = Registry(unit.conn)
        assert registry.person_of(d["id"]) == registry.person_of(a["id"])
        assert len({registry.person_of(p["id"]) for p in (a, b, c)}) == 3
    counts = rematch(empi_platform.repo)  # back to the shipped model: a, b, c are one person again
    with empi_platform.repo.unit(write=False) as unit:
        registry = Registry(unit.conn)
        assert len({registry.person_of(p["id"]) for p in (a, b, c, d)}) == 1
