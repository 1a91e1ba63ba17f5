"""The platform served the way `changbai serve` does, with the exchange installed: MLLP beside HTTP, and
the inbox, HL7-over-HTTP, CSV and CDA routes."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from changbai.exchange.mllp import MllpClient
from changbai.exchange.service import install
from changbai.settings import Settings
from tests.conftest import LiveServer, free_port
from tests.exchange.messages import adt, oru

WST500 = Path(__file__).parent / "data" / "wst500-discharge.xml"


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[httpx.Client, int]]:
    from changbai.api.app import create_platform

    mllp_port = free_port()
    settings = Settings(data_dir=tmp_path, database_url=f"sqlite:///{tmp_path / 'x.db'}", mllp_port=mllp_port)
    platform = create_platform(settings, extensions=[install])
    live = LiveServer(platform.build_app(), free_port()).start()
    with httpx.Client(base_url=live.url, timeout=60) as client:
        yield client, mllp_port
    live.stop()
    platform.db.dispose()


def test_serve_runs_mllp_and_the_inbox_shows_what_came_in(served: tuple[httpx.Client, int]) -> None:
    client, port = served

    async def send() -> bytes:
        c = await MllpClient("127.0.0.1", port).connect()
        ack = await c.send(adt(control_id="WEB1"))
        await c.close()
        return ack

    assert b"MSA|AA|WEB1" in asyncio.run(send())
    bad = client.post("/exchange/hl7v2", content=adt(control_id="WEB2").replace("19800215", "19800299").encode())
    assert bad.status_code == 200 and "MSA|AE|WEB2" in bad.text
    failed = client.get("/exchange/inbox", params={"status": "error"}).json()["messages"]
    assert [m["controlId"] for m in failed] == ["WEB2"]
    shown = client.get(f"/exchange/inbox/{failed[0]['id']}").json()
    assert "19800299" in shown["message"] and shown["problems"][0]["field"] == 7
    replayed = client.post(f"/exchange/inbox/{failed[0]['id']}/replay", content=adt(control_id="WEB2").encode())
    assert "MSA|AA|WEB2" in replayed.text
    assert client.get("/exchange/inbox", params={"status": "error"}).json()["messages"] == []
    assert client.get("/exchange/inbox/99999").status_code == 404


def test_hl7_over_http_csv_and_cda_routes(served: tuple[httpx.Client, int]) -> None:
    client, _ = served
    assert "MSA|AA|H1" in client.post("/exchange/hl7v2", content=oru(control_id="H1").encode()).text
    template = client.get("/exchange/upload/patients/template")
    assert template.headers["content-type"].startswith("text/csv") and "patient_id" in template.text
    csv = "patient_id,code,display,value,unit,date\r\nP1,2345-7,血糖,5.6,mmol/L,2026-03-01\r\nP2,,x,1,,2026-03-01\r\n"
    report = client.post("/exchange/upload/observations", params={"facility": "C1"}, content=csv.encode()).json()
    assert report["accepted"] == 1 and report["refused"] == 1 and report["rows"][1]["reasons"] == ["code is required"]
    assert client.post("/exchange/upload/observations", content=csv.encode()).status_code == 400
    stored = client.post("/exchange/cda", content=WST500.read_bytes())
    assert stored.status_code == 201 and stored.json()["sections"] == {"problems": 1, "vitals": 2}
    doc = client.get(f"/fhir/{stored.json()['documentReference']}").json()
    assert doc["content"][0]["attachment"]["contentType"] == "application/hl7-cda+xml"
    assert client.post("/exchange/cda", content=b"<not-cda/>").json()["resourceType"] == "OperationOutcome"
