"""The authorisation matrix over the API: each role against records of its own facility, of another
facility with and without the resident's authorisation, of another county, and with break-the-glass."""

from __future__ import annotations

import httpx
import pytest

from tests.security.conftest import consent

#: (account, request path, expected status). Records: obs1/psy1/enc1 are p1's at hospA (county 220102,
#: Changchun 220100); obs2 is p2's at hospC (county 220202, Jilin city 220200). drF is p1's family doctor.
MATRIX = [
    # clinicians: own facility yes, another facility no (404: existence not revealed)
    ("clinA", "Observation/obs1", 200),
    ("clinA", "Condition/psy1", 200),
    ("clinA", "Observation/obs2", 404),
    ("clinB", "Observation/obs1", 404),
    ("clinC", "Observation/obs1", 404),
    ("clinC", "Observation/obs2", 200),
    # nurse and pharmacist: own facility; the pharmacist has no scope for encounters (403)
    ("nurseA", "Observation/obs1", 200),
    ("nurseA", "Observation/obs2", 404),
    ("pharmA", "Observation/obs1", 200),
    ("pharmA", "Encounter/enc1", 403),
    # the contracted family doctor (at another facility) sees the resident's whole record
    ("famdocF", "Observation/obs1", 200),
    ("famdocF", "Observation/obs2", 404),
    # facility administrator: records of the facility
    ("adminA", "Encounter/enc1", 200),
    ("adminA", "Observation/obs2", 404),
    # residents: their own record only
    ("resident1", "Observation/obs1", 200),
    ("resident1", "Patient/p1", 200),
    ("resident1", "Observation/obs2", 404),
    ("resident1", "Patient/p2", 404),
    ("resident2", "Observation/obs1", 404),
    # public health by tier: county, other county, city
    ("cdc220102", "Observation/obs1", 200),
    ("cdc220202", "Observation/obs1", 404),
    ("cdc220202", "Observation/obs2", 200),
    ("cdcCity220100", "Observation/obs1", 200),
    ("cdcCity220100", "Observation/obs2", 404),
    # insurer: claims and patients of its city, no clinical observations
    ("insurer220100", "Patient/p1", 200),
    ("insurer220100", "Patient/p2", 404),
    ("insurer220100", "Observation/obs1", 403),
    # the province regulator sees every county
    ("regulatorProv", "Observation/obs1", 200),
    ("regulatorProv", "Observation/obs2", 200),
    # platform operator and a hospital's integration system
    ("operator1", "Observation/obs2", 200),
    ("hisA", "Observation/obs1", 200),
    ("hisA", "Observation/obs2", 404),
    # a child platform node sends its changes up but reads nothing through the API
    ("node220102", "Observation/obs1", 403),
    # a researcher reads only what residents authorised for research (tests/security/test_purpose.py)
    ("researcher1", "Observation/obs1", 404),
    ("researcher1", "Organization/hospA", 200),
    # the privacy auditor reads the audit trail and reviews break-the-glass, no records
    ("auditor1", "Observation/obs1", 403),
    # directories are not personal data
    ("clinC", "Organization/hospA", 200),
    ("resident2", "Practitioner/drA", 200),
]


def test_authorisation_matrix(world):
    got = []
    for user, path, _ in MATRIX:
        r = world.get(user, path)
        got.append((user, path, r.status_code))
        if r.status_code >= 400:
            assert r.json()["resourceType"] == "OperationOutcome"
    assert got == [(u, p, s) for u, p, s in MATRIX]


def test_every_role_is_in_the_matrix(world):
    roles = {world.sec.policy.role(a["role"]).name for a in _accounts(world)}
    assert roles == set(world.sec.policy.roles)


def _accounts(world):
    from changbai.security.accounts import list_accounts

    return [a for a in list_accounts(world.sec.db) if a["username"] not in ("admin", "changbai-web")]


def test_resident_authorises_another_facility_and_revokes(world):
    assert world.get("clinB", "Observation/obs1").status_code == 404
    with world.client("resident1") as c:
        r = c.post("Consent", json=consent("p1", "Organization/hospB", exclude=["PSY"]))
        assert r.status_code == 201, r.text
        cid = r.json()["id"]
    # hospB now reads p1's record, but not the excluded mental-health condition
    assert world.get("clinB", "Observation/obs1").status_code == 200
    assert world.get("clinB", "Encounter/enc1").status_code == 200
    assert world.get("clinB", "Condition/psy1").status_code == 404
    assert world.get("clinB", "Observation/obs2").status_code == 404
    # the resident revokes it
    with world.client("resident1") as c:
        assert c.delete(f"Consent/{cid}").status_code == 200
    assert world.get("clinB", "Observation/obs1").status_code == 404


def test_expired_authorisation_grants_nothing(world):
    with world.client("resident1") as c:
        assert c.post("Consent", json=consent("p1", "Practitioner/drB", end="2021-01-01")).status_code == 201
    assert world.get("clinB", "Observation/obs1").status_code == 404


def test_only_the_resident_authorises(world):
    with world.client("resident2") as c:
        r = c.post("Consent", json=consent("p1", "Organization/hospC"))
        assert r.status_code == 403
    with world.client("clinC") as c:
        r = c.post("Consent", json=consent("p1", "Organization/hospC"))
        assert r.status_code == 403
    assert world.get("clinC", "Observation/obs1").status_code == 404


def test_break_the_glass(world):
    assert world.get("clinC", "Observation/obs1").status_code == 404
    headers = {"authorization": f"Bearer {world.token('clinC')}"}
    root = world.server.url
    r = httpx.post(f"{root}/auth/break-glass", json={"patient": "p1"}, headers=headers)
    assert r.status_code == 400  # a reason is required
    r = httpx.post(f"{root}/auth/break-glass", json={"patient": "p1", "reason": "unconscious in ER"}, headers=headers)
    assert r.status_code == 200 and r.json()["flagged"] is True
    assert world.get("clinC", "Observation/obs1").status_code == 200
    # pharmacists may not break the glass
    pharm = {"authorization": f"Bearer {world.token('pharmA')}"}
    r = httpx.post(f"{root}/auth/break-glass", json={"patient": "p2", "reason": "urgent"}, headers=pharm)
    assert r.status_code == 403
    # every emergency read is flagged for review in the audit trail
    with world.client("operator1") as c:
        events = c.get("AuditEvent", params={"agent": "clinC", "patient": "p1"}).json()
    flagged = [
        e["resource"]
        for e in events.get("entry", [])
        if any(t["code"] == "BTG" for t in e["resource"].get("meta", {}).get("tag", []))
    ]
    assert len(flagged) >= 2  # the declaration and the read


@pytest.mark.parametrize(
    ("user", "status"),
    [("clinA", 201), ("hisA", 201), ("regulatorProv", 403), ("resident1", 403), ("insurer220100", 403)],
)
def test_who_may_write_observations(world, user, status):
    from tests.security.conftest import observation

    body = observation("new-" + user.lower(), "p1", "hospA")
    body.pop("id")
    with world.client(user) as c:
        r = c.post("Observation", json=body)
    assert r.status_code == status, r.text


def test_updates_only_to_records_of_own_facility(world):
    with world.client("clinC") as c:
        r = c.get("Observation/obs2")
        body = r.json()
        body["status"] = "amended"
        assert c.put("Observation/obs2", json=body).status_code == 200
    with world.client("clinB") as c:
        body["id"] = "obs1"
        body["subject"] = {"reference": "Patient/p1"}
        assert c.put("Observation/obs1", json=body).status_code == 403
        assert c.delete("Observation/obs1").status_code == 403
    assert world.get("clinA", "Observation/obs1").json()["status"] == "final"
