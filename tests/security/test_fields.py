"""Resident ID numbers and phone numbers: encrypted at rest, found by exact value, masked for readers who
do not need them in full."""

from __future__ import annotations

from sqlalchemy import text

ID_NUMBER = "220102199001011234"
PHONE = "13812345678"
SYSTEM = "urn:oid:2.16.156.10011.1.3"


def test_not_stored_in_clear(world):
    with world.platform.db.engine.connect() as conn:
        contents = [r[0] for r in conn.execute(text("SELECT content FROM resource_version WHERE rtype = 'Patient'"))]
        codes = [r[0] for r in conn.execute(text("SELECT code FROM idx_token WHERE rtype = 'Patient'"))]
        strings = [r[0] for r in conn.execute(text("SELECT exact FROM idx_string WHERE rtype = 'Patient'"))]
    blob = " ".join(contents + [c or "" for c in codes] + strings)
    assert ID_NUMBER not in blob and PHONE not in blob and "1234" not in " ".join(codes)
    assert "bidx:" in blob


def test_exact_search_by_id_number_and_phone(world):
    with world.client("clinA") as c:
        for params in (
            {"identifier": f"{SYSTEM}|{ID_NUMBER}"},
            {"identifier": ID_NUMBER},
            {"phone": PHONE},
            {"telecom": f"phone|{PHONE}"},
        ):
            bundle = c.get("Patient", params=params).json()
            assert [e["resource"]["id"] for e in bundle.get("entry", [])] == ["p1"], params
        assert c.get("Patient", params={"identifier": f"{SYSTEM}|220102199001011235"}).json().get("entry") is None
        full = c.get("Patient/p1").json()
    assert full["identifier"][0]["value"] == ID_NUMBER and full["telecom"][0]["value"] == PHONE
    assert "extension" not in full["identifier"][0]


def test_masked_for_readers_who_do_not_need_them(world):
    for user in ("nurseA", "regulatorProv", "insurer220100"):
        patient = world.get(user, "Patient/p1").json()
        assert patient["identifier"][0]["value"] == "2201**********1234", user
        assert patient["telecom"][0]["value"] == "138****5678", user
    # the resident sees their own in full
    assert world.get("resident1", "Patient/p1").json()["identifier"][0]["value"] == ID_NUMBER


def test_a_hidden_resident_cannot_be_found_by_number(world):
    with world.client("clinC") as c:
        assert c.get("Patient", params={"identifier": f"{SYSTEM}|{ID_NUMBER}"}).json().get("entry") is None
        assert (
            c.get("Patient", params={"identifier": f"{SYSTEM}|{ID_NUMBER}", "_summary": "count"}).json()["total"] == 0
        )


def test_update_keeps_protection_and_unchanged_stays_unchanged(world):
    with world.client("operator1") as c:
        masked = c.get("Patient/p1").json()
        assert masked["identifier"][0]["value"].startswith("2201****")
        # writing the masked view back changes nothing: the mask never replaces the stored number
        r = c.put("Patient/p1", json=masked)
        assert r.status_code == 200 and r.json()["meta"]["versionId"] == masked["meta"]["versionId"]
        masked["telecom"][0]["value"] = "13900001111"
        r = c.put("Patient/p1", json=masked)
        assert r.status_code == 200 and r.json()["meta"]["versionId"] == "2"
        assert [e["resource"]["id"] for e in c.get("Patient", params={"phone": "13900001111"}).json()["entry"]] == [
            "p1"
        ]
    full = world.get("resident1", "Patient/p1").json()
    assert full["identifier"][0]["value"] == ID_NUMBER and full["telecom"][0]["value"] == "13900001111"


def test_protection_does_not_alter_the_callers_resource(world):
    from changbai.store.pipeline import Context
    from tests.security.conftest import patient

    resource = patient("p9", "220102", "220102200001011238", "13700000000")
    with world.platform.repo.unit(Context(source="system")) as unit:
        unit.update("Patient", "p9", resource)
    assert resource["identifier"][0]["value"] == "220102200001011238"
    assert resource["telecom"][0] == {"system": "phone", "value": "13700000000"}


def test_conditional_lookup_by_id_number(world):
    """Conditional writes (HL7 v2, If-None-Exist) find a resident by number through the search step's
    blind-index rewrite, on the store's compiled lookup as on the general search compiler; a reader whose
    grants narrow the search is answered by the general one, with the resident still hidden."""
    from changbai.store.pipeline import Context
    from changbai.store.search import _token_only
    from changbai.store.urls import parse_query
    from tests.store.test_find import general

    query = f"identifier={SYSTEM}|{ID_NUMBER}"
    with world.platform.repo.unit(Context(source="hl7v2")) as unit:
        request = unit._parse("Patient", parse_query(query))
        unit.pipeline.run_search(unit.conn, unit.ctx, request)
        lookup = _token_only(request)
        assert lookup is not None and lookup.value.startswith("bidx:")
        found = unit.find("Patient", query)
        assert [id for id, _ in found] == ["p1"] and found == general(unit, "Patient", query, 2)
        assert unit.find("Patient", f"identifier={SYSTEM}|220102199001011235") == []
    hidden = world.sec.principal({"sub": "t", "role": "clinician", "scope": "user/*.rs", "organization": "hospC"})
    with world.platform.repo.unit(Context(principal=hidden), write=False) as unit:
        request = unit._parse("Patient", parse_query(query))
        unit.pipeline.run_search(unit.conn, unit.ctx, request)
        assert _token_only(request) is None
        assert unit.find("Patient", query) == []
