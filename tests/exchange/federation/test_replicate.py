"""The parent's side of replication and retrieval, in-process on both backends: a resend changes nothing,
an older version never overwrites a newer one, ids never collide, only nodes with the secret may send,
what a policy keeps back never leaves, and a county retrieves a resident's record through the province."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from changbai.exchange.federation.credentials import SharedSecret
from changbai.exchange.federation.policy import load_policy, parse_policy
from changbai.exchange.federation.replicate import EXT_ORIGIN, EXT_VERSION
from changbai.settings import Settings
from tests.conftest import LiveServer, free_port

SECRET = "s3cret"


@pytest.fixture
def province(settings: Settings) -> Iterator[tuple[Any, LiveServer]]:
    from changbai.api.app import create_platform

    port = free_port()
    s = settings.model_copy(
        update={
            "node_id": "prov",
            "node_tier": "province",
            "node_secret": SECRET,
            "base_url": f"http://127.0.0.1:{port}/fhir",
        }
    )
    platform = create_platform(s)
    live = LiveServer(platform.build_app(), port).start()
    yield platform, live
    live.stop()
    platform.db.dispose()


def change(origin: str, version: int, resource: dict[str, Any] | None, url: str | None = None) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "extension": [{"url": EXT_ORIGIN, "valueString": origin}, {"url": EXT_VERSION, "valueInteger": version}],
        "request": {
            "method": "PUT" if resource else "DELETE",
            "url": url or f"{resource['resourceType']}/{resource['id']}",
        },  # type: ignore[index]
    }
    if resource:
        entry["resource"] = resource
    return entry


def send(
    live: LiveServer, entries: list[dict[str, Any]], node: str = "county-a", secret: str = SECRET
) -> httpx.Response:
    return httpx.post(
        f"{live.fhir}/$replicate",
        json={"resourceType": "Bundle", "type": "batch", "entry": entries},
        headers=SharedSecret(node, secret).headers(),
        timeout=30,
    )


def counts(r: httpx.Response) -> dict[str, int]:
    assert r.status_code == 200, r.text
    return {p["name"]: p["valueInteger"] for p in r.json()["parameter"]}


def pat(id: str, family: str) -> dict[str, Any]:
    return {"resourceType": "Patient", "id": id, "name": [{"family": family}]}


def test_resend_and_stale_versions_change_nothing(province) -> None:  # type: ignore[no-untyped-def]
    _, live = province
    batch = [change("county-a", 1, pat("p1", "Zhao")), change("county-a", 2, pat("p1", "Qian"))]
    assert counts(send(live, batch)) == {"applied": 2, "skipped": 0, "rejected": 0}
    assert counts(send(live, batch)) == {"applied": 0, "skipped": 2, "rejected": 0}
    assert counts(send(live, [change("county-a", 1, pat("p1", "Old"))]))["skipped"] == 1
    r = httpx.get(f"{live.fhir}/Patient/p1").json()
    assert r["name"][0]["family"] == "Qian" and r["meta"]["versionId"] == "2"
    assert r["meta"]["source"] == "urn:changbai:node:county-a"
    assert counts(send(live, [change("county-a", 3, None, "Patient/p1")]))["applied"] == 1
    assert httpx.get(f"{live.fhir}/Patient/p1").status_code == 410


def test_ids_from_two_origins_never_collide(province) -> None:  # type: ignore[no-untyped-def]
    _, live = province
    counts(send(live, [change("county-a", 1, pat("same", "FromA"))]))
    obs = {
        "resourceType": "Observation",
        "id": "o1",
        "status": "final",
        "code": {"text": "bp"},
        "subject": {"reference": "Patient/same"},
    }
    assert (
        counts(send(live, [change("county-b", 1, pat("same", "FromB")), change("county-b", 1, obs)], node="county-b"))[
            "applied"
        ]
        == 2
    )
    a = httpx.get(f"{live.fhir}/Patient/same").json()
    assert a["name"][0]["family"] == "FromA"
    found = httpx.get(f"{live.fhir}/Patient", params={"family": "FromB"}).json()["entry"][0]["resource"]
    assert found["id"] != "same"
    # The other origin's references follow its renamed resource.
    assert httpx.get(f"{live.fhir}/Observation/o1").json()["subject"]["reference"] == f"Patient/{found['id']}"
    # Its next version lands on the renamed resource, not on county-a's.
    counts(send(live, [change("county-b", 2, pat("same", "FromB2"))], node="county-b"))
    assert httpx.get(f"{live.fhir}/Patient/{found['id']}").json()["name"][0]["family"] == "FromB2"
    assert httpx.get(f"{live.fhir}/Patient/same").json()["name"][0]["family"] == "FromA"


def test_only_nodes_with_the_secret_may_replicate(province) -> None:  # type: ignore[no-untyped-def]
    _, live = province
    r = send(live, [change("county-a", 1, pat("x1", "Sun"))], secret="wrong")
    assert r.status_code == 401 and r.json()["resourceType"] == "OperationOutcome"
    r = httpx.post(f"{live.fhir}/$replicate", json={"resourceType": "Bundle", "type": "batch"})
    assert r.status_code == 401
    assert httpx.get(f"{live.fhir}/Patient/x1").status_code == 404


def test_a_bad_entry_is_rejected_without_blocking_the_link(province) -> None:  # type: ignore[no-untyped-def]
    _, live = province
    bad = {"resourceType": "Patient", "id": "bad", "gender": 42}
    c = counts(send(live, [change("county-a", 1, bad), change("county-a", 1, pat("good", "Li"))]))
    assert c == {"applied": 1, "skipped": 0, "rejected": 1}
    assert httpx.get(f"{live.fhir}/Patient/good").status_code == 200


def test_policy_keeps_types_and_identifiers_back() -> None:
    national = load_policy("national-basic")
    assert national.sends("Patient") and not national.sends("Subscription") and not national.sends("Claim")
    p = {
        "resourceType": "Patient",
        "id": "p",
        "name": [{"family": "王"}],
        "birthDate": "1980-05-06",
        "identifier": [{"system": "urn:oid:2.16.156.10011.1.3", "value": "220102198005061234"}],
        "address": [{"line": ["人民大街 1 号"], "city": "长春市", "district": "朝阳区"}],
        "text": {"status": "generated", "div": "<div>王</div>"},
    }
    out = national.apply(p)
    assert "name" not in out and "text" not in out and out["birthDate"] == "1980"
    assert out["address"] == [{"city": "长春市", "district": "朝阳区"}]
    assert out["identifier"][0]["value"] != "220102198005061234" and len(out["identifier"][0]["value"]) == 64
    assert p["name"] == [{"family": "王"}]  # the node's own copy is untouched
    assert load_policy("whole-record").apply(p) is p
    masked = parse_policy({"name": "m", "deidentify": [{"path": "Patient.telecom.value", "action": "mask", "keep": 3}]})
    assert masked.apply({"resourceType": "Patient", "telecom": [{"value": "13912345678"}]})["telecom"][0]["value"] == (
        "139********"
    )


def test_county_retrieves_a_record_through_the_province(province, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from changbai.api.app import create_platform

    _, live = province
    rid = {"system": "urn:oid:2.16.156.10011.1.3", "value": "220281199001011234"}
    patient = {**pat("res1", "Zhou"), "identifier": [rid]}
    obs = {
        "resourceType": "Observation",
        "id": "res1-bp",
        "status": "final",
        "code": {"text": "bp"},
        "subject": {"reference": "Patient/res1"},
    }
    counts(send(live, [change("county-b", 1, patient), change("county-b", 1, obs)], node="county-b"))
    county = create_platform(
        Settings(
            data_dir=tmp_path / "c",
            database_url=f"sqlite:///{tmp_path / 'county.db'}",
            node_id="county-a",
            node_tier="county",
            node_secret=SECRET,
            parent_url=live.fhir,
        )
    )
    county_live = LiveServer(county.build_app(), free_port()).start()
    try:
        r = httpx.get(
            f"{county_live.fhir}/$cross-region-retrieve",
            params={"identifier": f"{rid['system']}|{rid['value']}"},
            timeout=30,
        )
        assert r.status_code == 200, r.text
        got = {f"{e['resource']['resourceType']}/{e['resource']['id']}" for e in r.json()["entry"]}
        assert got == {"Patient/res1", "Observation/res1-bp"}
        # Asking without credentials at the province works only for its own users (no node headers: local).
        assert httpx.get(f"{county_live.fhir}/$cross-region-retrieve").status_code == 400
    finally:
        county_live.stop()
        county.db.dispose()
