"""Routes beside the FHIR API (HL7 v2 over HTTP, uploads, CDA, the inbox) follow the same sign-in and
role rules as FHIR: roles.json names who may use each service, and every refusal is audited."""

from __future__ import annotations

import httpx

MESSAGE = (
    "MSH|^~\\&|HIS|hospA|CHANGBAI|JL|20260101120000||ADT^A04^ADT_A01|SVC0001|P|2.5\r"
    "EVN|A04|20260101120000\r"
    "PID|1||MRN-SVC-1^^^hospA^MR||王^小明||19800101|M\r"
    "PV1|1|O\r"
)


def _root(world) -> str:
    return world.fhir.rsplit("/fhir", 1)[0]


def _with(world, username: str | None) -> httpx.Client:
    headers = {"authorization": f"Bearer {world.token(username)}"} if username else {}
    return httpx.Client(base_url=_root(world), headers=headers, timeout=60)


def test_hl7v2_over_http_needs_a_signed_in_system_with_the_service(world):
    with _with(world, None) as anonymous:
        refused = anonymous.post("/exchange/hl7v2", content=MESSAGE.encode())
        assert refused.status_code == 401
        assert refused.json()["resourceType"] == "OperationOutcome"
    with _with(world, "resident1") as resident:
        assert resident.post("/exchange/hl7v2", content=MESSAGE.encode()).status_code == 403
    with _with(world, "hisA") as system:
        accepted = system.post("/exchange/hl7v2", content=MESSAGE.encode())
        assert accepted.status_code == 200
        assert "MSA|AA|SVC0001" in accepted.text
    # the refused attempts changed nothing: only the integration system's message is in the inbox
    with _with(world, "operator1") as operator:
        messages = operator.get("/exchange/inbox").json()["messages"]
        assert [m["controlId"] for m in messages] == ["SVC0001"]


def test_the_inbox_is_for_operators_and_refusals_are_audited(world):
    with _with(world, "hisA") as system:
        assert system.get("/exchange/inbox").status_code == 403
    with _with(world, "clinA") as clinician:
        assert clinician.get("/exchange/inbox").status_code == 403
        # a blank template holds no personal data and stays open
        assert clinician.get("/exchange/upload/patients/template").status_code == 200
    with world.client("operator1") as operator:
        denied = operator.get("AuditEvent", params={"subtype": "denied", "agent": "hisA"}).json()
    assert any("/exchange/inbox" in (e["resource"].get("outcomeDesc") or "") for e in denied.get("entry", []))
