# ruff: noqa: F811  (test parameters named after the imported fixture)
"""The synthetic province's hospitals send HL7 v2 (rendered from its records) over MLLP; the platform's
record then says what the hospitals' records say."""

from __future__ import annotations

import asyncio
import json
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest

from changbai.exchange import v2render
from changbai.exchange.mllp import MllpClient, MllpServer
from changbai.exchange.service import build_intake
from tests.exchange.fixtures import core_platform, search  # noqa: F401  (core_platform: a pytest fixture)

RESIDENT_ID = "urn:oid:2.16.156.10011.1.3"


@pytest.fixture(scope="module")
def province(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[dict[str, Any]]]:
    from changbai.synth import generate

    out = tmp_path_factory.mktemp("province")
    generate(out, 40, 7)
    data = {}
    for rtype in ("Patient", "Encounter", "Observation", "Immunization"):
        path = Path(out) / f"{rtype}.ndjson"
        data[rtype] = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]
    return data


def _traffic(province: dict[str, list[dict[str, Any]]]) -> tuple[list[str], dict[str, Any]]:
    patients = {p["id"]: p for p in province["Patient"]}
    by_patient: dict[str, dict[str, list[dict[str, Any]]]] = defaultdict(lambda: defaultdict(list))
    for rtype in ("Encounter", "Observation", "Immunization"):
        for r in province[rtype]:
            ref = (r.get("subject") or r.get("patient") or {}).get("reference", "")
            by_patient[ref.split("/")[-1]][rtype].append(r)
    messages, expected = [], {}
    for pid, records in sorted(by_patient.items()):
        patient = patients.get(pid)
        if patient is None or not records["Encounter"]:
            continue
        enc = records["Encounter"][0]
        facility = enc.get("serviceProvider", {}).get("reference", "Organization/x").split("/")[-1]
        messages.append(v2render.adt(patient, enc, "A04", facility, f"{pid}-adt"))
        quantities = [o for o in records["Observation"] if "valueQuantity" in o or o.get("component")][:5]
        msg = v2render.oru(patient, quantities, facility, f"{pid}-oru") if quantities else None
        if msg:
            messages.append(msg)
        for i, imm in enumerate(records["Immunization"][:3]):
            vxu = v2render.vxu(patient, imm, facility, f"{pid}-vxu{i}")
            if vxu:
                messages.append(vxu)
        expected[pid] = {
            "patient": patient,
            "encounter": enc,
            "observations": quantities,
            "immunizations": records["Immunization"][:3],
        }
    return messages, expected


def test_synthetic_hospital_traffic_lands_as_the_same_record(
    core_platform: Any, province: dict[str, list[dict[str, Any]]]
) -> None:
    messages, expected = _traffic(province)
    assert len(expected) >= 10 and len(messages) > len(expected)

    intake = build_intake(core_platform)

    async def send() -> list[bytes]:
        server = await MllpServer(intake.handle, "127.0.0.1", 0).start()
        clients = [await MllpClient("127.0.0.1", server.port).connect() for _ in range(4)]

        async def run(client: MllpClient, batch: list[str]) -> list[bytes]:
            return [await client.send(m.encode("utf-8")) for m in batch]

        parts = await asyncio.gather(*(run(c, messages[i::4]) for i, c in enumerate(clients)))
        for c in clients:
            await c.close()
        await server.stop()
        return [a for part in parts for a in part]

    acks = asyncio.run(send())
    # the hospitals ask for enhanced mode (MSH-15 AL, MSH-16 NE): a commit ACK each, the outcome in the inbox
    assert all(b"MSA|CA|" in a for a in acks), [a for a in acks if b"MSA|CA|" not in a][:3]
    assert {r.ack_code for r in intake.store.list(limit=len(messages))} == {"AA"}

    for want in expected.values():
        patient = want["patient"]
        resident = next(i["value"] for i in patient["identifier"] if i["system"] == RESIDENT_ID)
        [(pid, _, stored)] = search(core_platform, "Patient", f"identifier={RESIDENT_ID}|{resident}")
        assert stored["name"][0]["family"] == patient["name"][0]["family"]
        assert stored["name"][0]["given"] == patient["name"][0]["given"][:1]
        assert stored["birthDate"] == patient["birthDate"] and stored["gender"] == patient["gender"]
        [(_, _, enc)] = search(core_platform, "Encounter", f"subject=Patient/{pid}")
        assert enc["class"]["code"] == want["encounter"]["class"]["code"]
        assert enc["period"]["start"] == want["encounter"]["period"]["start"]
        stored_values = {
            (o["code"]["coding"][0]["code"], o["valueQuantity"]["value"])
            for _, _, o in search(core_platform, "Observation", f"subject=Patient/{pid}")
            if "valueQuantity" in o
        }
        for obs in want["observations"]:
            for part in obs.get("component") or [obs]:
                loinc = next(c["code"] for c in part["code"]["coding"] if c["system"] == "http://loinc.org")
                assert (loinc, part["valueQuantity"]["value"]) in stored_values
        stored_imms = {
            (i["vaccineCode"]["coding"][0]["code"], i["occurrenceDateTime"])
            for _, _, i in search(core_platform, "Immunization", f"patient=Patient/{pid}")
        }
        for imm in want["immunizations"]:
            cvx = next((c["code"] for c in imm["vaccineCode"]["coding"] if c["system"].endswith("cvx")), None)
            if cvx:
                assert (cvx, imm["occurrenceDateTime"]) in stored_imms
