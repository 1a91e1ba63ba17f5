"""Purpose-only authorisations: a resident authorises a purpose of use (research, payment, treatment)
instead of a named reader. Whoever acts with that purpose, and whose role may act with it (roles.json
"purposes"), reads the record within the period and without the excluded categories. The purpose is the
one the request states (X-Purpose-Of-Use) or the one the access token was issued for."""

from __future__ import annotations

import pytest

from tests.security.conftest import consent

#: (reader, stated purpose, path, expected). p1 authorised research without mental health, and treatment;
#: p2 authorised payment. Nobody named a reader.
MATRIX = [
    ("researcher1", "HRESCH", "Observation/obs1", 200),
    ("researcher1", "HRESCH", "Condition/psy1", 404),  # excluded category
    ("researcher1", None, "Observation/obs1", 404),  # no purpose stated: no purpose-only authorisation
    ("researcher1", "HRESCH", "Observation/obs2", 404),  # p2 authorised payment, not research
    ("researcher1", "TREAT", "Observation/obs1", 403),  # a purpose researchers may not act under
    ("clinB", "TREAT", "Condition/psy1", 200),  # treatment by anyone treating, nothing excluded
    ("clinB", None, "Observation/obs1", 404),
    ("clinB", "HRESCH", "Observation/obs1", 403),  # clinicians do not act for research
    ("clinB", "TREAT", "Observation/obs2", 404),  # p2 did not authorise treatment by others
    ("insurer220100", "HPAYMT", "Patient/p2", 200),  # p2 lives outside the insurer's city
    ("insurer220100", None, "Patient/p2", 404),
    ("insurer220100", "HPAYMT", "Observation/obs2", 403),  # payment or not, no scope for observations
    ("researcher1", "not a code!", "Observation/obs1", 400),
]


@pytest.fixture
def authorised(world):
    for user, pid, purposes, exclude in (
        ("resident1", "p1", ["HRESCH"], ["PSY"]),
        ("resident1", "p1", ["TREAT"], None),
        ("resident2", "p2", ["HPAYMT"], None),
    ):
        with world.client(user) as c:
            r = c.post("Consent", json=consent(pid, exclude=exclude, purposes=purposes))
            assert r.status_code == 201, r.text
    return world


def get(world, user: str, path: str, purpose: str | None, **params):
    headers = {"x-purpose-of-use": purpose} if purpose else {}
    with world.client(user) as c:
        return c.get(path, headers=headers, params=params)


def test_purpose_only_authorisations(authorised):
    got = []
    for user, purpose, path, _ in MATRIX:
        r = get(authorised, user, path, purpose)
        got.append((user, purpose, path, r.status_code))
        if r.status_code >= 400:
            assert r.json()["resourceType"] == "OperationOutcome"
    assert got == [tuple(m) for m in MATRIX]


def test_purpose_limits_searches_and_counts(authorised):
    def total(path: str, purpose: str | None, **params) -> int:
        r = get(authorised, "researcher1", path, purpose, _summary="count", **params)
        assert r.status_code == 200, r.text
        return r.json()["total"]

    assert total("Observation", "HRESCH", subject="Patient/p1") == 1
    assert total("Condition", "HRESCH", subject="Patient/p1") == 0  # psy1 is excluded
    assert total("Observation", "HRESCH") == 1  # nothing of p2
    assert total("Observation", None) == 0


def test_purpose_from_the_access_token(authorised):
    """A token issued for a purpose (the launch context) acts with it; a request may not state another."""
    token = authorised.token("researcher1", purpose="HRESCH")
    headers = {"authorization": f"Bearer {token}"}
    import httpx

    with httpx.Client(base_url=authorised.fhir, headers=headers, timeout=60) as c:
        assert c.get("Observation/obs1").status_code == 200
        other = c.get("Observation/obs1", headers={"x-purpose-of-use": "HPAYMT"})
        assert other.status_code == 403 and "HRESCH" in other.text
    with pytest.raises(Exception, match="purpose"):
        authorised.token("clinB", purpose="HRESCH")  # the role may not act for research


def test_expired_or_revoked_purpose_authorisation_grants_nothing(world):
    with world.client("resident1") as c:
        assert c.post("Consent", json=consent("p1", end="2021-01-01", purposes=["HRESCH"])).status_code == 201
    assert get(world, "researcher1", "Observation/obs1", "HRESCH").status_code == 404
    with world.client("resident1") as c:
        r = c.post("Consent", json=consent("p1", purposes=["HRESCH"]))
        cid = r.json()["id"]
    assert get(world, "researcher1", "Observation/obs1", "HRESCH").status_code == 200
    with world.client("resident1") as c:
        assert c.delete(f"Consent/{cid}").status_code == 200
    assert get(world, "researcher1", "Observation/obs1", "HRESCH").status_code == 404
