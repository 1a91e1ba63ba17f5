"""The authorisation server: discovery, SMART Backend Services, authorisation code + PKCE with the sign-in
page, rotating refresh tokens, revocation, introspection, lockout, rate limits, bad tokens."""

from __future__ import annotations

import base64
import hashlib
import secrets
import time
import uuid

import httpx
import pytest
from joserfc import jwt
from joserfc.jwk import ECKey, RSAKey

from changbai.security.accounts import add_account
from tests.conftest import LiveServer, free_port
from tests.security.conftest import World, secure_settings, seed

REDIRECT = "http://127.0.0.1:9/callback"


def register_system(world: World, client_id: str, key) -> None:
    public = {**key.as_dict(private=False), "alg": "RS384" if key.key_type == "RSA" else "ES384"}
    add_account(
        world.sec.db,
        world.sec.policy,
        client_id,
        "integration",
        kind="client",
        jwks={"keys": [public]},
        organization="hospA",
    )


def assertion(
    world: World,
    client_id: str,
    key,
    *,
    aud: str | None = None,
    exp_in: int = 120,
    jti: str | None = None,
    alg: str | None = None,
) -> str:
    alg = alg or ("RS384" if key.key_type == "RSA" else "ES384")
    now = int(time.time())
    claims = {
        "iss": client_id,
        "sub": client_id,
        "aud": aud or f"{world.server.url}/auth/token",
        "exp": now + exp_in,
        "jti": jti or str(uuid.uuid4()),
    }
    return jwt.encode({"alg": alg, "kid": key.kid}, claims, key, algorithms=[alg])


def backend_token(world: World, signed: str, scope: str = "system/*.rs") -> httpx.Response:
    return httpx.post(
        f"{world.server.url}/auth/token",
        data={
            "grant_type": "client_credentials",
            "scope": scope,
            "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
            "client_assertion": signed,
        },
    )


def test_discovery(world):
    for url in (f"{world.server.url}/.well-known/smart-configuration", f"{world.fhir}/.well-known/smart-configuration"):
        conf = httpx.get(url).json()
        assert conf["token_endpoint"] == f"{world.server.url}/auth/token"
        assert "S256" in conf["code_challenge_methods_supported"]
        assert "private_key_jwt" in conf["token_endpoint_auth_methods_supported"]
    jwks = httpx.get(f"{world.server.url}/auth/jwks").json()
    assert jwks["keys"] and all("d" not in k for k in jwks["keys"])
    assert httpx.get(f"{world.fhir}/metadata").status_code == 200


@pytest.mark.parametrize("kind", ["RSA", "EC"])
def test_backend_services(world, kind):
    key = (
        RSAKey.generate_key(2048, private=True, auto_kid=True)
        if kind == "RSA"
        else ECKey.generate_key("P-384", private=True, auto_kid=True)
    )
    register_system(world, "his-" + kind.lower(), key)
    signed = assertion(world, "his-" + kind.lower(), key)
    r = backend_token(world, signed)
    assert r.status_code == 200, r.text
    token = r.json()["access_token"]
    headers = {"authorization": f"Bearer {token}"}
    assert httpx.get(f"{world.fhir}/Observation/obs1", headers=headers).status_code == 200
    assert httpx.get(f"{world.fhir}/Observation/obs2", headers=headers).status_code == 404
    # the same assertion again is a replay
    again = backend_token(world, signed)
    assert again.status_code == 401 and "replay" in again.json()["error_description"]


def test_bad_client_assertions(world):
    key = RSAKey.generate_key(2048, private=True, auto_kid=True)
    register_system(world, "his-x", key)
    other = RSAKey.generate_key(2048, private=True, auto_kid=True)
    cases = {
        "wrong audience": assertion(world, "his-x", key, aud="https://elsewhere.example/token"),
        "exp too far": assertion(world, "his-x", key, exp_in=3600),
        "expired": assertion(world, "his-x", key, exp_in=-10),
        "wrong key": assertion(world, "his-x", other),
        "unknown client": assertion(world, "nobody", key),
        "malformed": "not.a.jwt",
        "empty": "",
    }
    for name, signed in cases.items():
        r = backend_token(world, signed)
        assert r.status_code == 401, name
        assert r.json()["error"] == "invalid_client", name
    # scope escalation: an integration system asks for what its role does not allow
    r = backend_token(world, assertion(world, "his-x", key), scope="patient/*.cruds user/*.cruds")
    assert r.status_code == 400 and r.json()["error"] == "invalid_scope"
    with world.client("operator1") as c:
        events = c.get("AuditEvent", params={"subtype": "token", "outcome": "4"}).json()
    assert events["total"] >= len(cases) + 1


def pkce() -> tuple[str, str]:
    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    return verifier, challenge


def authorize_params(world: World, challenge: str, scope: str = "openid fhirUser offline_access patient/*.rs") -> dict:
    return {
        "response_type": "code",
        "client_id": "app1",
        "redirect_uri": REDIRECT,
        "scope": scope,
        "state": "s1",
        "aud": world.fhir,
        "code_challenge": challenge,
        "code_challenge_method": "S256",
    }


@pytest.fixture
def app_world(world):
    add_account(world.sec.db, world.sec.policy, "app1", "operator", kind="client", redirect_uris=[REDIRECT])
    return world


def sign_in(world: World, username: str, password: str, params: dict) -> httpx.Response:
    return httpx.post(f"{world.server.url}/auth/authorize", data={**params, "username": username, "password": password})


def test_authorisation_code_with_pkce_and_rotating_refresh(app_world):
    w = app_world
    verifier, challenge = pkce()
    params = authorize_params(w, challenge)
    page = httpx.get(f"{w.server.url}/auth/authorize", params=params)
    assert (
        page.status_code == 200
        and "登录" in page.text
        and "<script" not in page.text
        and "http" not in page.text.split("<style>")[1].split("</style>")[0]
    )
    english = httpx.get(f"{w.server.url}/auth/authorize", params={**params, "lang": "en"})
    assert "Sign in" in english.text
    r = sign_in(w, "resident1", "pw-resident1-secret", params)
    assert r.status_code == 302
    location = httpx.URL(r.headers["location"])
    assert str(location).startswith(REDIRECT) and location.params["state"] == "s1"
    code = location.params["code"]
    token_url = f"{w.server.url}/auth/token"
    # a wrong verifier fails, and the code is then spent
    bad = httpx.post(
        token_url,
        data={
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": REDIRECT,
            "client_id": "app1",
            "code_verifier": "x" * 50,
        },
    )
    assert bad.status_code == 400 and bad.json()["error"] == "invalid_grant"
    r = sign_in(w, "resident1", "pw-resident1-secret", params)
    code = httpx.URL(r.headers["location"]).params["code"]
    tok = httpx.post(
        token_url,
        data={
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": REDIRECT,
            "client_id": "app1",
            "code_verifier": verifier,
        },
    )
    assert tok.status_code == 200, tok.text
    body = tok.json()
    assert body["patient"] == "p1" and body["refresh_token"]
    headers = {"authorization": f"Bearer {body['access_token']}"}
    assert httpx.get(f"{w.fhir}/Observation/obs1", headers=headers).status_code == 200
    assert httpx.get(f"{w.fhir}/Observation/obs2", headers=headers).status_code == 404
    # refresh rotates; reusing the old refresh token revokes the family
    first = body["refresh_token"]
    r2 = httpx.post(token_url, data={"grant_type": "refresh_token", "refresh_token": first, "client_id": "app1"})
    assert r2.status_code == 200
    second = r2.json()["refresh_token"]
    assert second != first
    reuse = httpx.post(token_url, data={"grant_type": "refresh_token", "refresh_token": first, "client_id": "app1"})
    assert reuse.status_code == 400
    after = httpx.post(token_url, data={"grant_type": "refresh_token", "refresh_token": second, "client_id": "app1"})
    assert after.status_code == 400


def test_scope_escalation_at_sign_in(app_world):
    _, challenge = pkce()
    params = authorize_params(app_world, challenge, scope="user/*.cruds")
    r = sign_in(app_world, "resident1", "pw-resident1-secret", params)
    assert r.status_code == 302
    assert httpx.URL(r.headers["location"]).params["error"] == "invalid_scope"


def test_unregistered_redirect_and_missing_pkce(app_world):
    _, challenge = pkce()
    params = authorize_params(app_world, challenge)
    r = httpx.get(f"{app_world.server.url}/auth/authorize", params={**params, "redirect_uri": "https://evil.example/"})
    assert r.status_code == 400
    r = httpx.get(f"{app_world.server.url}/auth/authorize", params={**params, "code_challenge_method": "plain"})
    assert r.status_code == 400


def test_lockout_after_repeated_failures(app_world):
    _, challenge = pkce()
    params = authorize_params(app_world, challenge)
    for _ in range(5):
        assert sign_in(app_world, "clinA", "wrong", params).status_code == 401
    r = sign_in(app_world, "clinA", "pw-clinA-secret", params)
    assert r.status_code == 401 and ("锁定" in r.text)
    with app_world.client("operator1") as c:
        events = c.get("AuditEvent", params={"agent": "clinA", "subtype": "login"}).json()
    assert events["total"] == 6 and all(e["resource"]["outcome"] == "4" for e in events["entry"])


def test_revocation_and_introspection(world):
    token = world.token("clinA")
    caller = {"authorization": f"Bearer {world.token('operator1')}"}
    info = httpx.post(f"{world.server.url}/auth/introspect", data={"token": token}, headers=caller).json()
    assert info["active"] is True and info["sub"] == "clinA"
    assert httpx.post(f"{world.server.url}/auth/introspect", data={"token": token}).status_code == 401
    assert httpx.post(f"{world.server.url}/auth/revoke", data={"token": token}).status_code == 200
    info = httpx.post(f"{world.server.url}/auth/introspect", data={"token": token}, headers=caller).json()
    assert info == {"active": False}
    r = httpx.get(f"{world.fhir}/Observation/obs1", headers={"authorization": f"Bearer {token}"})
    assert r.status_code == 401 and "revoked" in r.json()["issue"][0]["diagnostics"]


def test_bad_bearer_tokens_are_refused_and_change_nothing(world):
    good = world.token("clinA")
    header, payload, signature = good.split(".")
    tampered_payload = (
        base64.urlsafe_b64encode(base64.urlsafe_b64decode(payload + "==").replace(b'"clinician"', b'"operator"'))
        .rstrip(b"=")
        .decode()
    )
    cases = {
        "garbage": "garbage",
        "tampered": f"{header}.{tampered_payload}.{signature}",
        "expired": world.token("clinA", seconds=-5),
        "wrong audience": world.token("clinA", audience="https://other-node.example/fhir"),
        "huge": "a." * 10000 + "b",
        "none alg": base64.urlsafe_b64encode(b'{"alg":"none"}').decode().rstrip("=") + "." + payload + ".",
    }
    from tests.security.conftest import observation

    for name, token in cases.items():
        for scheme in ("Bearer",):
            r = httpx.post(
                f"{world.fhir}/Observation",
                json=observation("x-" + name.replace(" ", ""), "p1", "hospA"),
                headers={"authorization": f"{scheme} {token}"},
            )
            assert r.status_code == 401, name
            assert r.json()["resourceType"] == "OperationOutcome"
    r = httpx.get(f"{world.fhir}/Observation/obs1", headers={"authorization": "Basic YWRtaW46YWRtaW4="})
    assert r.status_code == 401
    with world.client("operator1") as c:
        assert c.get("Observation", params={"_summary": "count"}).json()["total"] == 2
        denied = c.get("AuditEvent", params={"subtype": "denied", "agent": "(unauthenticated)"}).json()
    assert denied["total"] >= len(cases) + 1


def test_token_endpoint_rate_limit(tmp_path, database_url):
    from changbai.api.app import create_platform

    platform = create_platform(secure_settings(tmp_path, database_url, token_rate_per_minute=3))
    seed(platform)
    live = LiveServer(platform.build_app(), free_port()).start()
    try:
        statuses = [httpx.post(f"{live.url}/auth/token", data={"grant_type": "password"}).status_code for _ in range(5)]
        assert statuses[:3] == [400, 400, 400]
        assert statuses[3] == 429
        last = httpx.post(f"{live.url}/auth/token", data={"grant_type": "password"})
        assert last.status_code == 429 and last.json()["resourceType"] == "OperationOutcome"
    finally:
        live.stop()
        platform.db.dispose()


def test_key_rotation_keeps_issued_tokens_valid(world):
    token = world.token("clinA")
    world.sec.keys.rotate()
    assert len(httpx.get(f"{world.server.url}/auth/jwks").json()["keys"]) == 2
    assert httpx.get(f"{world.fhir}/Observation/obs1", headers={"authorization": f"Bearer {token}"}).status_code == 200
    fresh = world.token("clinA")
    assert (
        jwt.decode(fresh, world.sec.keys.verification_keys(), algorithms=["ES384"]).header["kid"]
        != jwt.decode(token, world.sec.keys.verification_keys(), algorithms=["ES384"]).header["kid"]
    )
