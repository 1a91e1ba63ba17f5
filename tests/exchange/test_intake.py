# ruff: noqa: F811  (test parameters named after the imported fixture)
"""HL7 v2 intake against the real store (SQLite file; PostgreSQL when reachable) and real sockets."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from changbai.exchange.datatypes import local_system
from changbai.exchange.mllp import MllpClient, MllpServer, frame
from changbai.exchange.service import build_intake
from tests.exchange.fixtures import core_platform, other_platform, search, snapshot  # noqa: F401  (fixtures)
from tests.exchange.messages import SAMPLES, adt, oru

JLH = local_system("JLH")


def code(ack: bytes) -> str:
    return ack.decode().split("\r")[1].split("|")[1]


def err_segments(ack: bytes) -> list[list[str]]:
    return [s.split("|") for s in ack.decode().split("\r") if s.startswith("ERR")]


def find(p: Any, rtype: str, query: str) -> list[dict[str, Any]]:
    return [r for _, _, r in search(p, rtype, query)]


def count(p: Any, rtype: str, query: str = "") -> int:
    return len(search(p, rtype, query))


def versions(p: Any, rtype: str, query: str) -> list[int]:
    return [v for _, v, _ in search(p, rtype, query)]


def test_every_sample_message_through_a_real_mllp_socket_is_acknowledged_and_stored(
    core_platform: Any, other_platform: Any
) -> None:
    files = sorted((SAMPLES / "messages").glob("*.hl7"))
    assert len(files) == 100

    # a test harness waits for an answer to each: the listener in original mode (CHANGBAI_MLLP_ENHANCED_ACK
    # off), since seven samples ask for enhanced mode and two of them for no acknowledgement at all
    intake = build_intake(core_platform)
    intake.enhanced_ack = False

    async def run() -> list[bytes]:
        server = await MllpServer(intake.handle, "127.0.0.1", 0).start()
        client = await MllpClient("127.0.0.1", server.port).connect()
        acks = [await client.send(f.read_bytes()) for f in files]
        await client.close()
        await server.stop()
        return acks

    acks = asyncio.run(run())
    outcomes = {f.name: code(a) for f, a in zip(files, acks, strict=True)}
    assert set(outcomes.values()) == {"AA"}, {k: v for k, v in outcomes.items() if v != "AA"}
    # every message is in the inbox; the four OUL samples share one sender and control id (1932), so
    # the later three are duplicates of the first and got its ACK
    intake = build_intake(core_platform)
    assert len(intake.store.list(limit=500)) == 100
    assert count(core_platform, "Immunization", "vaccine-code=http://hl7.org/fhir/sid/ndc|49281021588") == 1
    assert count(core_platform, "Patient", "identifier=10006579") == 1  # LAB-ORU-1 and LAB-ORU-2: one patient

    # the same messages arriving together (one batch: groups of 32 committed together, resources in few
    # put_many calls) get the same answers and leave the same store as sent one at a time
    together = build_intake(other_platform).process_many([f.read_bytes() for f in files])
    assert [a.ack.split(b"\r")[1:] for a in together] == [a.split(b"\r")[1:] for a in acks]  # MSH aside
    assert snapshot(other_platform) == snapshot(core_platform)


def test_duplicate_changes_nothing_and_gets_the_same_ack(core_platform: Any) -> None:
    intake = build_intake(core_platform)
    first = intake.handle(adt(control_id="D1").encode())
    second = intake.handle(adt(control_id="D1").encode())
    assert code(first) == "AA" and first == second
    assert versions(core_platform, "Patient", f"identifier={JLH}|MRN001") == [1]
    assert versions(core_platform, "Encounter", f"identifier={JLH}|V100") == [1]


def test_older_update_arriving_late_does_not_overwrite_newer_data(core_platform: Any) -> None:
    intake = build_intake(core_platform)
    newer = adt("A08", control_id="N", family="WANG", when="20260105120000+0800")
    older = adt("A08", control_id="O", family="LI", when="20260104120000+0800", visit="V200")
    assert code(intake.handle(newer.encode())) == "AA"
    ack = intake.handle(older.encode())
    assert code(ack) == "AA"
    [patient] = find(core_platform, "Patient", f"identifier={JLH}|MRN001")
    assert patient["name"][0]["family"] == "WANG"
    assert any(e[4] == "I" for e in err_segments(ack))  # told that it was not applied
    # the rest of the older message is applied, linked to the patient as stored
    [visit] = find(core_platform, "Encounter", "identifier=V200")
    assert visit["subject"]["reference"] == f"Patient/{patient['id']}"


def test_result_for_an_unknown_patient_registers_the_patient_and_files_the_results(core_platform: Any) -> None:
    intake = build_intake(core_platform)
    ack = intake.handle(oru(mrn="NEW999").encode())
    assert code(ack) == "AA"
    [patient] = find(core_platform, "Patient", f"identifier={JLH}|NEW999")
    obs = find(core_platform, "Observation", "code=http://loinc.org|2345-7")
    assert obs[0]["subject"]["reference"] == f"Patient/{patient['id']}"
    # a later registration of that patient updates the same Patient, not a second one
    intake.handle(adt(control_id="REG", mrn="NEW999", family="ZHAO").encode())
    assert count(core_platform, "Patient", f"identifier={JLH}|NEW999") == 1


def test_result_does_not_overwrite_registration_demographics(core_platform: Any) -> None:
    intake = build_intake(core_platform)
    intake.handle(adt(control_id="A", family="ZHANG").encode())
    intake.handle(oru(control_id="B").replace("ZHANG^SAN", "ZHANGG^S").encode())
    [patient] = find(core_platform, "Patient", f"identifier={JLH}|MRN001")
    assert patient["name"][0]["family"] == "ZHANG" and patient.get("telecom")


def test_malformed_segment_gets_ae_with_location_and_becomes_a_dead_letter(core_platform: Any) -> None:
    intake = build_intake(core_platform)
    ack = intake.handle((adt(control_id="BAD") + "P!D|oops\r").encode())
    assert code(ack) == "AE"
    assert err_segments(ack)[0][2] == "P!D^5"
    [row] = intake.store.list("error")
    assert row.control_id == "BAD" and row.raw.endswith(b"P!D|oops\r")
    assert count(core_platform, "Patient") == 0  # nothing of a refused message is stored


def test_wrong_encoding_gets_ae_at_msh_18(core_platform: Any) -> None:
    intake = build_intake(core_platform)
    text = adt(control_id="ENC").replace("|P|2.5.1", "|P|2.5.1|||||CHN|UNICODE UTF-8").replace("ZHANG", "张")
    ack = intake.handle(text.encode("gb18030"))
    assert code(ack) == "AE"
    assert err_segments(ack)[0][2] == "MSH^1^18" and err_segments(ack)[0][3].startswith("102")


def test_unsupported_type_gets_ar(core_platform: Any) -> None:
    intake = build_intake(core_platform)
    ack = intake.handle(b"MSH|^~\\&|A|B|||20260101||QRY^A19|Q1|P|2.5\rQRD|x\r")
    assert code(ack) == "AR"
    assert intake.store.list("rejected")[0].control_id == "Q1"


def test_operator_fixes_and_replays_a_dead_letter(core_platform: Any) -> None:
    intake = build_intake(core_platform)
    bad = adt(control_id="FIX").replace("19800215", "1980-02-15")
    assert code(intake.handle(bad.encode())) == "AE"
    [row] = intake.store.list("error")
    assert row.problems[0]["segment"] == "PID" and row.problems[0]["field"] == 7
    ack = intake.replay(row.id, adt(control_id="FIX").encode())
    assert code(ack) == "AA"
    fixed = intake.store.get(row.id)
    assert fixed.status == "accepted" and fixed.attempts == 2
    assert count(core_platform, "Patient", f"identifier={JLH}|MRN001") == 1


def test_crash_between_commit_and_ack_then_resend_gives_exactly_one_result(core_platform: Any) -> None:
    """The server dies after the outcome is committed and before the ACK leaves; the sender resends to a
    freshly started server on the same database, which answers from the inbox without writing again."""
    from changbai.api.app import create_platform

    message = oru(control_id="CRASH").encode()

    class Crash(Exception):
        pass

    def crashing(raw: bytes, peer: str) -> bytes:
        build_intake(core_platform).handle(raw, peer)
        raise Crash()  # the ACK is never written

    async def first_life() -> None:
        server = await MllpServer(crashing, "127.0.0.1", 0).start()
        client = await MllpClient("127.0.0.1", server.port).connect()
        with pytest.raises(ConnectionError):  # the line goes dead without an ACK
            await client.send(message)
        await client.close()
        await server.stop()

    asyncio.run(first_life())

    restarted = create_platform(core_platform.settings, extensions=[])  # new process state, same database

    async def second_life() -> bytes:
        server = await MllpServer(build_intake(restarted).handle, "127.0.0.1", 0).start()
        client = await MllpClient("127.0.0.1", server.port).connect()
        ack = await client.send(message)
        await client.close()
        await server.stop()
        return ack

    ack = asyncio.run(second_life())
    restarted.db.dispose()
    assert code(ack) == "AA"
    assert versions(core_platform, "Observation", "code=http://loinc.org|2345-7") == [1]
    assert count(core_platform, "DiagnosticReport") == 1


def test_crash_before_commit_then_resend_gives_exactly_one_result(core_platform: Any) -> None:
    intake = build_intake(core_platform)
    message = oru(control_id="EARLY").encode()

    async def run() -> bytes:
        calls = {"n": 0}

        def dies_first_time(raw: bytes, peer: str) -> bytes:
            calls["n"] += 1
            if calls["n"] == 1:
                raise ConnectionResetError("killed before anything was written")
            return intake.handle(raw, peer)

        server = await MllpServer(dies_first_time, "127.0.0.1", 0).start()
        client = await MllpClient("127.0.0.1", server.port).connect()
        with pytest.raises(ConnectionError):
            await client.send(message)
        await client.close()
        client = await MllpClient("127.0.0.1", server.port).connect()
        ack = await client.send(message)
        await client.close()
        await server.stop()
        return ack

    assert code(asyncio.run(run())) == "AA"
    assert versions(core_platform, "Observation", "code=http://loinc.org|2345-7") == [1]


def test_admission_links_the_encounter_to_the_stored_patient_and_an_update_keeps_one_patient(
    core_platform: Any,
) -> None:
    intake = build_intake(core_platform)
    intake.handle(adt("A01", control_id="L1").encode())
    intake.handle(adt("A08", control_id="L2", family="LI", when="20260101093000+0800").encode())
    [(pid, version, patient)] = search(core_platform, "Patient", f"identifier={JLH}|MRN001")
    assert patient["name"][0]["family"] == "LI" and version == 2
    [(_, _, enc)] = search(core_platform, "Encounter", f"identifier={JLH}|V100")
    assert enc["subject"]["reference"] == f"Patient/{pid}"


def test_local_codes_are_translated_by_the_facility_concept_map_stored_in_the_platform(core_platform: Any) -> None:
    local = "https://changbai.example/fhir/CodeSystem/local/JLH"
    core_platform.repo.create(
        {
            "resourceType": "ConceptMap",
            "status": "active",
            "url": "https://changbai.example/fhir/ConceptMap/jlh-lab",
            "group": [
                {
                    "source": local,
                    "target": "http://loinc.org",
                    "element": [
                        {
                            "code": "GLU",
                            "target": [{"code": "2345-7", "display": "Glucose", "equivalence": "equivalent"}],
                        }
                    ],
                }
            ],
        }
    )
    intake = build_intake(core_platform)
    ack = intake.handle(
        oru(
            control_id="CM1",
            obx=[
                "OBX|1|NM|GLU^血糖^99JLH||5.6|mmol/L|||||F",
                "OBX|2|NM|XYZ^其它^99JLH||1|mg|||||F",
            ],
        ).encode()
    )
    assert code(ack) == "AA"
    [(_, _, glucose)] = search(core_platform, "Observation", "code=http://loinc.org|2345-7")
    assert glucose["code"]["coding"][1] == {"system": local, "code": "GLU", "display": "血糖"}
    [(_, _, other)] = search(core_platform, "Observation", f"code={local}|XYZ")
    assert other["valueQuantity"]["value"] == 1  # kept as sent
    [err] = [e for e in err_segments(ack) if e[3].startswith("103")]
    assert err[4] == "W" and "XYZ" in err[8]  # and reported, not refused


def test_resource_the_store_refuses_gets_ae_naming_its_segment_and_nothing_is_stored(core_platform: Any) -> None:
    # a local code mapped to a malformed target (two spaces inside a FHIR code): the store's validation
    # refuses that Observation; the sender is told which OBX, and none of the message is kept
    intake = build_intake(core_platform, translate=lambda system, code, facility: {"system": "urn:x", "code": "a  b"})
    obx = ["OBX|1|NM|2345-7^Glucose^LN||5.6|mmol/L^^UCUM|||||F", "OBX|2|NM|LOC1^Local^L||1|mg|||||F"]
    ack = intake.handle(oru(control_id="BADMAP", mrn="NEW1", obx=obx).encode())
    assert code(ack) == "AE"
    [err] = err_segments(ack)
    assert err[2] == "OBX^5" and "a  b" in err[8]  # the second OBX, fifth segment of the message
    assert count(core_platform, "Patient", f"identifier={JLH}|NEW1") == 0
    assert count(core_platform, "Observation") == 0
    assert intake.store.list("error")[0].control_id == "BADMAP"


def enhanced(text: str, accept: str, application: str) -> bytes:
    """The message asking for enhanced acknowledgement mode (MSH-15 accept, MSH-16 application)."""
    return text.replace("|P|2.5.1\r", f"|P|2.5.1|||{accept}|{application}\r", 1).encode()


def test_enhanced_mode_answers_with_the_commit_acknowledgement_the_sender_asked_for(core_platform: Any) -> None:
    intake = build_intake(core_platform)
    # AL/NE: the accept ACK (CA) once the message is kept; the application ACK stays in the inbox
    assert code(intake.handle(enhanced(adt(control_id="E1"), "AL", "NE"))) == "CA"
    assert count(core_platform, "Patient", f"identifier={JLH}|MRN001") == 1
    assert intake.store.list("accepted")[0].ack_code == "AA"
    # an error is kept too (a dead letter to replay): still CA, no need to resend
    bad = adt(control_id="E2").replace("19800215", "1980-02-15")
    assert code(intake.handle(enhanced(bad, "AL", "NE"))) == "CA"
    # ER/NE: nothing to say about a message that was kept
    assert intake.handle(enhanced(adt(control_id="E3", mrn="MRN003"), "ER", "NE")) == b""
    assert count(core_platform, "Patient", f"identifier={JLH}|MRN003") == 1
    # ... but a refused one gets CR with the reason
    refused = intake.handle(b"MSH|^~\\&|A|B|||20260101||QRY^A19|Q9|P|2.5.1|||ER|NE\rQRD|x\r")
    assert code(refused) == "CR" and err_segments(refused)[0][3].startswith("200")
    # NE/AL: no accept ACK wanted, the application ACK is the answer (AE names the field)
    answer = intake.handle(enhanced(adt(control_id="E4").replace("19800215", "1980-02-15"), "NE", "AL"))
    assert code(answer) == "AE" and err_segments(answer)[0][2].startswith("PID^3^7")


def test_a_message_wanting_no_acknowledgement_gets_none_and_the_connection_goes_on(core_platform: Any) -> None:
    async def run() -> bytes:
        server = await MllpServer(build_intake(core_platform).handle, "127.0.0.1", 0).start()
        client = await MllpClient("127.0.0.1", server.port).connect()
        # NE/NE: nothing comes back; the next message's ACK is the next frame on the connection
        assert client.writer is not None
        client.writer.write(frame(enhanced(adt(control_id="N1"), "NE", "NE")))
        ack = await client.send(oru(control_id="N2"))
        await client.close()
        await server.stop()
        return ack

    ack = asyncio.run(run())
    assert code(ack) == "AA" and "|N2" in ack.decode()
    assert count(core_platform, "Patient", f"identifier={JLH}|MRN001") == 1


def test_a_batch_is_answered_with_a_batch_of_acks_each_message_standing_alone(core_platform: Any) -> None:
    bad = adt(control_id="B2", mrn="MRN002").replace("19800215", "1980-02-15")
    text = (
        "FHS|^~\\&|HIS|JLH|CHANGBAI|PROV|20260101||||F77\r"
        "BHS|^~\\&|HIS|JLH|CHANGBAI|PROV|20260101||||B77\r"
        + adt(control_id="B1")
        + bad
        + oru(control_id="B3", mrn="MRN003")
        + "BTS|4\rFTS|1\r"
    )

    async def run() -> bytes:
        server = await MllpServer(build_intake(core_platform).handle, "127.0.0.1", 0).start()
        client = await MllpClient("127.0.0.1", server.port).connect()
        answer = await client.send(text)
        await client.close()
        await server.stop()
        return answer

    segments = [s.split("|") for s in asyncio.run(run()).decode().split("\r") if s]
    kinds = [s[0] for s in segments]
    assert kinds == ["FHS", "BHS", "MSH", "MSA", "MSH", "MSA", "ERR", "MSH", "MSA", "BTS", "FTS"]
    assert segments[0][2:4] == ["CHANGBAI", "PROV"] and segments[0][11] == "F77"  # answers file F77
    assert segments[1][11] == "B77"
    assert [(s[1], s[2]) for s in segments if s[0] == "MSA"] == [("AA", "B1"), ("AE", "B2"), ("AA", "B3")]
    assert segments[-2][1] == "3" and "declared 4" in segments[-2][2]  # the count the sender declared is wrong
    # one bad message refused nothing else; it waits in the dead letters like any other
    assert count(core_platform, "Patient", f"identifier={JLH}|MRN001") == 1
    assert count(core_platform, "Observation", f"subject:Patient.identifier={JLH}|MRN003") == 4
    assert [r.control_id for r in build_intake(core_platform).store.list("error")] == ["B2"]
