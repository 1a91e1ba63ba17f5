"""The parent's side of replication and retrieval, in-process on both backends, with security on as on
every real node: a resend changes nothing, an older version never overwrites a newer one, ids never
collide, only registered node clients (SMART Backend Services) whose scopes cover a batch may send it,
what a policy keeps back never leaves, and a county clinician retrieves a resident's record through the
province only where the province's consent rules let them."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from joserfc.jwk import ECKey

from changbai.exchange.federation.credentials import (
    BackendServicesClient,
    CredentialsUnavailable,
    load_or_create_key,
    public_jwks,
)
from changbai.exchange.federation.enrol import register_child
from changbai.exchange.federation.operations import ON_BEHALF_OF, encode_user
from changbai.exchange.federation.policy import load_policy, parse_policy
from changbai.exchange.federation.replicate import EXT_ORIGIN, EXT_VERSION
from changbai.settings import Settings
from tests.conftest import LiveServer, free_port

RID = "urn:oid:2.16.156.10011.1.3"


def new_key() -> ECKey:
    return ECKey.generate_key("P-384", private=True, auto_kid=True)


def user_token(platform: Any, username: str, role: str, audience: str, **attrs: Any) -> str:
    """An account of ``platform`` and a token for it, as its sign-in would give."""
    from changbai.security.accounts import add_account, get_account

    sec = platform.security
    if get_account(sec.db, username) is None:
        add_account(sec.db, sec.policy, username, role, password="pw-long-enough", **attrs)
    account = get_account(sec.db, username)
    scope = " ".join(str(s) for s in sec.policy.role(role).scopes)
    return str(sec.tokens.issue(account, scope, audience)[0])


@dataclass
class Province:
    platform: Any
    live: LiveServer
    keys: dict[str, ECKey] = field(default_factory=dict)
    clients: dict[str, BackendServicesClient] = field(default_factory=dict)

    scopes: dict[str, str] = field(default_factory=dict)

    def node_headers(self, node: str) -> dict[str, str]:
        if node not in self.clients:
            scope = self.scopes.get(node, "system/*.cud")
            self.clients[node] = BackendServicesClient(self.live.fhir, node, self.keys[node], scope)
        return self.clients[node].headers()

    def send(self, entries: list[dict[str, Any]], node: str = "county-a") -> httpx.Response:
        return httpx.post(
            f"{self.live.fhir}/$replicate",
            json={"resourceType": "Bundle", "type": "batch", "entry": entries},
            headers=self.node_headers(node),
            timeout=30,
        )

    def get(self, path: str, **params: Any) -> httpx.Response:
        token = user_token(self.platform, "ops", "operator", self.live.fhir)
        return httpx.get(f"{self.live.fhir}/{path}", params=params, headers={"authorization": f"Bearer {token}"})


@pytest.fixture
def province(settings: Settings) -> Iterator[Province]:
    from changbai.api.app import create_platform

    port = free_port()
    s = settings.model_copy(
        update={
            "node_id": "prov",
            "node_tier": "province",
            "security": True,
            "base_url": f"http://127.0.0.1:{port}/fhir",
        }
    )
    platform = create_platform(s)
    prov = Province(platform, LiveServer(platform.build_app(), port).start())
    for node in ("county-a", "county-b"):
        prov.keys[node] = new_key()
        register_child(platform.db, node, public_jwks(prov.keys[node]))
    yield prov
    prov.live.stop()
    for c in prov.clients.values():
        c.close()
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


def counts(r: httpx.Response) -> dict[str, int]:
    assert r.status_code == 200, r.text
    return {p["name"]: p["valueInteger"] for p in r.json()["parameter"]}


def pat(id: str, family: str) -> dict[str, Any]:
    return {"resourceType": "Patient", "id": id, "name": [{"family": family}]}


def test_resend_and_stale_versions_change_nothing(province: Province) -> None:
    batch = [change("county-a", 1, pat("p1", "Zhao")), change("county-a", 2, pat("p1", "Qian"))]
    assert counts(province.send(batch)) == {"applied": 2, "skipped": 0, "rejected": 0}
    assert counts(province.send(batch)) == {"applied": 0, "skipped": 2, "rejected": 0}
    assert counts(province.send([change("county-a", 1, pat("p1", "Old"))]))["skipped"] == 1
    r = province.get("Patient/p1").json()
    assert r["name"][0]["family"] == "Qian" and r["meta"]["versionId"] == "2"
    assert r["meta"]["source"] == "urn:changbai:node:county-a"
    assert counts(province.send([change("county-a", 3, None, "Patient/p1")]))["applied"] == 1
    assert province.get("Patient/p1").status_code == 410


def test_ids_from_two_origins_never_collide(province: Province) -> None:
    counts(province.send([change("county-a", 1, pat("same", "FromA"))]))
    obs = {
        "resourceType": "Observation",
        "id": "o1",
        "status": "final",
        "code": {"text": "bp"},
        "subject": {"reference": "Patient/same"},
    }
    sent = province.send([change("county-b", 1, pat("same", "FromB")), change("county-b", 1, obs)], node="county-b")
    assert counts(sent)["applied"] == 2
    assert province.get("Patient/same").json()["name"][0]["family"] == "FromA"
    found = province.get("Patient", family="FromB").json()["entry"][0]["resource"]
    assert found["id"] != "same"
    # The other origin's references follow its renamed resource.
    assert province.get("Observation/o1").json()["subject"]["reference"] == f"Patient/{found['id']}"
    # Its next version lands on the renamed resource, not on county-a's.
    counts(province.send([change("county-b", 2, pat("same", "FromB2"))], node="county-b"))
    assert province.get(f"Patient/{found['id']}").json()["name"][0]["family"] == "FromB2"
    assert province.get("Patient/same").json()["name"][0]["family"] == "FromA"


def test_only_registered_node_clients_may_replicate(province: Province) -> None:
    url = f"{province.live.fhir}/$replicate"
    batch = {"resourceType": "Bundle", "type": "batch", "entry": [change("county-a", 1, pat("x1", "Sun"))]}
    # No token, or a token that is not a node's: refused with an OperationOutcome, nothing stored.
    r = httpx.post(url, json=batch)
    assert r.status_code == 401 and r.json()["resourceType"] == "OperationOutcome"
    operator = user_token(province.platform, "ops", "operator", province.live.fhir)
    r = httpx.post(url, json=batch, headers={"authorization": f"Bearer {operator}"})
    assert r.status_code == 403 and "not a registered node" in r.text
    # A key the parent does not know gets no token at all.
    stranger = BackendServicesClient(province.live.fhir, "county-a", new_key(), "system/*.cud")
    with pytest.raises(CredentialsUnavailable, match=r"does not verify"):
        stranger.headers()
    # A node whose registration allows only Patients may not send an Observation (the whole batch waits).
    province.keys["county-c"] = new_key()
    province.scopes["county-c"] = "system/Patient.cud"
    register_child(
        province.platform.db, "county-c", public_jwks(province.keys["county-c"]), scopes="system/Patient.cud"
    )
    obs = {"resourceType": "Observation", "id": "x2", "status": "final", "code": {"text": "bp"}}
    r = province.send([change("county-c", 1, pat("x1", "Sun")), change("county-c", 1, obs)], node="county-c")
    assert r.status_code == 403 and "system/Observation" in r.text
    assert province.get("Patient/x1").status_code == 404
    assert counts(province.send([change("county-c", 1, pat("x1", "Sun"))], node="county-c"))["applied"] == 1


def test_a_bad_entry_is_rejected_without_blocking_the_link(province: Province) -> None:
    bad = {"resourceType": "Patient", "id": "bad", "gender": 42}
    c = counts(province.send([change("county-a", 1, bad), change("county-a", 1, pat("good", "Li"))]))
    assert c == {"applied": 1, "skipped": 0, "rejected": 1}
    assert province.get("Patient/good").status_code == 200
    r = province.send([{"request": {"method": "PUT", "url": "Patient/nope"}}])
    assert r.status_code == 400 and "origin" in r.text


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


def test_county_clinician_retrieves_through_the_province_by_its_consent_rules(
    province: Province, tmp_path: Path
) -> None:
    from changbai.api.app import create_platform

    rid = {"system": RID, "value": "220281199001011234"}
    patient = {**pat("res1", "Zhou"), "identifier": [rid]}
    obs = {
        "resourceType": "Observation",
        "id": "res1-bp",
        "status": "final",
        "code": {"text": "bp"},
        "subject": {"reference": "Patient/res1"},
    }
    counts(province.send([change("county-b", 1, patient), change("county-b", 1, obs)], node="county-b"))
    port = free_port()
    county_settings = Settings(
        data_dir=tmp_path / "c",
        database_url=f"sqlite:///{tmp_path / 'county.db'}",
        security=True,
        mllp_port=0,
        node_id="county-d",
        node_tier="county",
        parent_url=province.live.fhir,
        base_url=f"http://127.0.0.1:{port}/fhir",
    )
    # The county's key pair, registered at the province (as `changbai federation children add` does).
    key = load_or_create_key(tmp_path / "c" / "keys" / "node-client.json")
    register_child(province.platform.db, "county-d", public_jwks(key), region="220102")
    county = create_platform(county_settings)
    county_live = LiveServer(county.build_app(), port).start()
    try:
        doctor = user_token(county, "dr-a", "clinician", county_live.fhir, organization="hosp-a")
        ask = httpx.Client(base_url=county_live.fhir, headers={"authorization": f"Bearer {doctor}"}, timeout=30)
        query = {"identifier": f"{rid['system']}|{rid['value']}"}
        # Without the resident's authorisation the province shows a hosp-a clinician nothing of county-b's.
        r = ask.get("/Patient/$cross-region-retrieve", params=query)
        assert r.status_code == 200, r.text
        assert r.json()["total"] == 0
        # The resident authorises hosp-a (recorded at county-b, replicated): now the record comes back.
        consent = {
            "resourceType": "Consent",
            "id": "c1",
            "status": "active",
            "scope": {
                "coding": [{"system": "http://terminology.hl7.org/CodeSystem/consentscope", "code": "patient-privacy"}]
            },
            "category": [{"coding": [{"system": "http://loinc.org", "code": "59284-0"}]}],
            "patient": {"reference": "Patient/res1"},
            "provision": {
                "type": "permit",
                "actor": [
                    {
                        "role": {
                            "coding": [
                                {"system": "http://terminology.hl7.org/CodeSystem/v3-ParticipationType", "code": "IRCP"}
                            ]
                        },
                        "reference": {"reference": "Organization/hosp-a"},
                    }
                ],
            },
        }
        counts(province.send([change("county-b", 1, consent)], node="county-b"))
        r = ask.get("/Patient/$cross-region-retrieve", params=query)
        assert r.status_code == 200, r.text
        got = {f"{e['resource']['resourceType']}/{e['resource']['id']}" for e in r.json()["entry"]}
        assert {"Patient/res1", "Observation/res1-bp"} <= got
        # The province's audit trail names the clinician and the county they signed in at.
        events = province.get("AuditEvent", agent="dr-a@county-d").json()["entry"]
        read = [x["what"]["reference"] for e in events for x in e["resource"].get("entity", []) if x.get("what")]
        assert "Observation/res1-bp" in read and "Patient/res1" in read
        # Bad input is a clear error at the county; nobody signed in gets nothing.
        assert ask.get("/Patient/$cross-region-retrieve").status_code == 400
        assert httpx.get(f"{county_live.fhir}/Patient/$cross-region-retrieve", params=query).status_code == 401
        # A node may not pass an operator off as the asker.
        forged = encode_user(county.security.principal({"sub": "x", "role": "operator", "scope": "user/*.rs"}), "c")
        r = httpx.get(
            f"{province.live.fhir}/Patient/$cross-region-retrieve",
            params=query,
            headers={**province.node_headers("county-b"), ON_BEHALF_OF: forged},
        )
        assert r.status_code == 403
        ask.close()
    finally:
        county_live.stop()
        county.db.dispose()
