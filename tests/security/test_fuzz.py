"""Hypothesis throws arbitrary paths, parameters, bodies and tokens at the secured API: never a 500,
always a FHIR OperationOutcome on refusal, and nothing hidden comes back."""

from __future__ import annotations

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

TYPES = ["Patient", "Observation", "Condition", "Encounter", "Consent", "AuditEvent", "Organization", "Nope", ""]
PARAMS = [
    "_id",
    "subject",
    "patient",
    "code",
    "identifier",
    "phone",
    "_include",
    "_revinclude",
    "_has:Condition:subject:code",
    "subject:Patient.name",
    "_summary",
    "_total",
    "_count",
    "_sort",
    "_elements",
    "date",
    "agent",
    "_type",
]
text = st.text(alphabet=st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=40)
segment = st.one_of(st.sampled_from(["p1", "p2", "obs1", "obs2", "_history", "$everything", "..", "1", "%00"]), text)


@pytest.fixture
def fuzz_world(request, tmp_path):
    """One secured SQLite world (hypothesis repeats the test body, not the fixture)."""
    from changbai.api.app import create_platform
    from tests.conftest import LiveServer, free_port
    from tests.security.conftest import World, secure_settings, seed

    platform = create_platform(secure_settings(tmp_path, f"sqlite:///{tmp_path / 'fuzz.db'}"))
    seed(platform)
    live = LiveServer(platform.build_app(), free_port()).start()
    world = World(platform, live, platform.security)
    world.tokens = {u: world.token(u) for u in ("clinB", "resident2", "cdc220202")}
    yield world
    live.stop()
    platform.db.dispose()


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    method=st.sampled_from(["GET", "GET", "GET", "POST", "PUT", "DELETE", "PATCH"]),
    rtype=st.sampled_from(TYPES),
    rest=st.lists(segment, max_size=3),
    params=st.lists(st.tuples(st.sampled_from(PARAMS) | text, text), max_size=4),
    body=st.one_of(st.none(), st.dictionaries(text, text, max_size=3), st.just({"resourceType": "Observation"})),
    who=st.sampled_from(["clinB", "resident2", "cdc220202", "none", "garbage"]),
)
def test_no_input_gives_a_500_or_reveals_p1(fuzz_world, method, rtype, rest, params, body, who):
    w = fuzz_world
    headers = {"accept": "application/fhir+json"}
    if who == "garbage":
        headers["authorization"] = "Bearer x.y.z"
    elif who != "none":
        headers["authorization"] = f"Bearer {w.tokens[who]}"
    path = "/".join(x for x in [rtype, *rest] if x)
    try:
        r = httpx.request(method, f"{w.fhir}/{path}", params=params, json=body, headers=headers, timeout=30)
    except (httpx.InvalidURL, UnicodeEncodeError):
        return  # the client refused to send it
    assert r.status_code < 500, (method, path, params, r.text[:300])
    if r.status_code >= 400 and r.request.url.path.startswith("/fhir/"):
        assert r.json()["resourceType"] == "OperationOutcome"
    if r.status_code == 200 and who in ("clinB", "resident2", "cdc220202"):
        # none of these readers may ever see resident p1's clinical record
        assert '"Observation/obs1"' not in r.text and '"id":"obs1"' not in r.text
