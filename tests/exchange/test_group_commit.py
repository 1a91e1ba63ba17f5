# ruff: noqa: F811  (test parameters named after the imported fixture)
"""Messages committed together (an HL7 batch; messages from several connections) behave exactly as if
each had come alone: they see each other's writes, one refused message takes no other down, resends and
late updates are recognised inside the group."""

from __future__ import annotations

from typing import Any

from changbai.exchange.datatypes import local_system
from changbai.exchange.service import build_intake
from tests.exchange.fixtures import core_platform, other_platform, search, snapshot  # noqa: F401  (fixtures)
from tests.exchange.messages import adt, oru

JLH = local_system("JLH")


def batch(*messages: str) -> bytes:
    return ("BHS|^~\\&|HIS|JLH|CHANGBAI|PROV|20260101||||B1\r" + "".join(messages) + f"BTS|{len(messages)}\r").encode()


def answers(reply: bytes) -> list[tuple[str, str, list[str]]]:
    """(MSA-1, MSA-2, ERR segments) of each ACK in a batch reply."""
    out: list[tuple[str, str, list[str]]] = []
    for segment in reply.decode().split("\r"):
        fields = segment.split("|")
        if fields[0] == "MSA":
            out.append((fields[1], fields[2], []))
        elif fields[0] == "ERR":
            out[-1][2].append(segment)
    return out


def test_messages_committed_together_leave_the_store_as_if_each_had_come_alone(
    core_platform: Any, other_platform: Any
) -> None:
    # a result for a patient nobody registered yet (their record number and resident ID), then the
    # registration of that patient found by the resident ID, a second result for them, and another
    # patient's admission: the later messages depend on what the earlier ones write
    resident = "220102198002151239^^^CHN^NNCHN"
    messages = [
        oru(control_id="G1", mrn=f"NEW7^^^JLH^MR~{resident}"),
        adt("A08", control_id="G2", mrn=f"{resident}~NEW7", family="ZHAO", when="20260103080000+0800"),
        oru(control_id="G3", mrn="NEW7", obx=["OBX|1|NM|2160-0^Creatinine^LN||80|umol/L^^UCUM|||||F"]),
        adt("A01", control_id="G4", mrn="MRN009", visit="V900"),
    ]
    together = answers(build_intake(core_platform).handle(batch(*messages)))
    assert [(code, cid) for code, cid, _ in together] == [("AA", "G1"), ("AA", "G2"), ("AA", "G3"), ("AA", "G4")]

    alone = build_intake(other_platform)
    for message in messages:
        assert "|AA|" in alone.handle(message.encode()).decode()
    assert snapshot(core_platform) == snapshot(other_platform)

    [(pid, version, patient)] = search(core_platform, "Patient", f"identifier={JLH}|NEW7")
    assert patient["name"][0]["family"] == "ZHAO" and version == 2  # registered by G1, updated by G2
    assert len(search(core_platform, "Patient")) == 2
    results = search(core_platform, "Observation", f"subject:Patient.identifier={JLH}|NEW7")
    assert len(results) == 5 and {r["subject"]["reference"] for _, _, r in results} == {f"Patient/{pid}"}


def test_a_message_the_store_refuses_takes_no_other_message_of_its_group_down(core_platform: Any) -> None:
    # the store's validation refuses what the local code LOC1 is mapped to (two spaces inside a code)
    intake = build_intake(
        core_platform,
        translate=lambda system, code, facility: {"system": "urn:x", "code": "a  b"} if code == "LOC1" else None,
    )
    bad = ["OBX|1|NM|2345-7^Glucose^LN||5.6|mmol/L^^UCUM|||||F", "OBX|2|NM|LOC1^Local^L||1|mg|||||F"]
    reply = intake.handle(
        batch(
            oru(control_id="K1", mrn="MRN101"),
            oru(control_id="K2", mrn="MRN102", obx=bad),
            adt(control_id="K3", mrn="MRN103", visit="V103"),
        )
    )
    [first, refused, third] = answers(reply)
    assert first[:2] == ("AA", "K1") and third[:2] == ("AA", "K3")
    assert refused[:2] == ("AE", "K2") and refused[2][0].split("|")[2] == "OBX^5"  # names the segment
    assert len(search(core_platform, "Patient", f"identifier={JLH}|MRN101")) == 1
    assert len(search(core_platform, "Encounter", f"identifier={JLH}|V103")) == 1
    assert search(core_platform, "Patient", f"identifier={JLH}|MRN102") == []  # nothing of K2 is kept
    assert len(search(core_platform, "Observation")) == 4  # K1's four results
    assert [r.control_id for r in intake.store.list("error")] == ["K2"]
    assert sorted(r.control_id for r in intake.store.list("accepted")) == ["K1", "K3"]
    # subscribers and federation read the changes from the outbox: each stored resource once, in one
    # transaction's seq order, and nothing of the refused message's undone writes
    from sqlalchemy import select

    from changbai.store import schema

    with core_platform.repo.db.read() as conn:
        changes = [(r.rtype, r.id) for r in conn.execute(select(schema.outbox).order_by(schema.outbox.c.seq))]
    stored = {
        (rtype, i)
        for rtype in ("Patient", "Encounter", "Observation", "DiagnosticReport")
        for i, _, _ in search(core_platform, rtype)
    }
    assert sorted(changes) == sorted(stored) and len(changes) == 8


def test_a_resend_and_a_late_update_inside_a_group_are_recognised(core_platform: Any) -> None:
    intake = build_intake(core_platform)
    first = intake.handle(adt(control_id="D1").encode())
    newer = adt("A08", control_id="D2", family="WANG", when="20260105120000+0800")
    older = adt("A08", control_id="D3", family="LI", when="20260104120000+0800", visit="V200")
    reply = intake.handle(batch(adt(control_id="D1"), newer, older))
    [resent, applied, late] = answers(reply)
    assert resent[:2] == ("AA", "D1") and "MSA|AA|D1" in first.decode()
    assert applied[:2] == ("AA", "D2")
    assert late[:2] == ("AA", "D3") and late[2] and late[2][0].split("|")[4] == "I"  # told it was not applied
    [(pid, version, patient)] = search(core_platform, "Patient", f"identifier={JLH}|MRN001")
    assert patient["name"][0]["family"] == "WANG" and version == 2  # D1 once, then D2; D3 is older
    [visit] = [r for _, _, r in search(core_platform, "Encounter", f"identifier={JLH}|V200")]
    assert visit["subject"]["reference"] == f"Patient/{pid}"
    assert len(intake.store.list(limit=10)) == 3


def test_a_message_is_committed_even_when_messages_announced_to_share_its_commit_never_come(
    core_platform: Any,
) -> None:
    intake = build_intake(core_platform)
    intake.store.expect(3)  # three messages being parsed elsewhere, which then fail before the store
    ack = intake.handle(adt(control_id="W1").encode())
    assert "MSA|AA|W1" in ack.decode()
    assert len(search(core_platform, "Patient", f"identifier={JLH}|MRN001")) == 1


def test_two_listeners_on_one_database_write_each_message_once_and_keep_the_newest(core_platform: Any) -> None:
    # two intakes on one database, as two listener processes behind one address: on PostgreSQL their
    # transactions collide (one patient updated by both at once, one new patient created by both at once);
    # a message that collides is written again once the other's transaction is done
    import random
    from concurrent.futures import ThreadPoolExecutor

    intakes = [build_intake(core_platform), build_intake(core_platform)]
    updates = [
        (
            f"MRN{p}",
            k,
            adt(
                "A08",
                control_id=f"U{p}-{k}",
                mrn=f"MRN{p}",
                family=f"F{k}",
                when=f"2026010{k + 1}0800+0800",
                visit=f"V{p}",
            ),
        )
        for p in range(4)
        for k in range(5)
    ]
    results = [
        (f"MRN{p}", 9, oru(control_id=f"R{p}", mrn=f"MRN{p}").replace("|P100|F200", f"|P{p}|F{p}")) for p in range(4)
    ]
    work = updates + results
    random.Random(8).shuffle(work)
    with ThreadPoolExecutor(8) as pool:
        acks = list(pool.map(lambda iw: intakes[iw[0] % 2].handle(iw[1][2].encode()).decode(), enumerate(work)))
    assert all("|AA|" in a for a in acks), [a.split("\r")[1] for a in acks if "|AA|" not in a]
    for p in range(4):
        [(_, _, patient)] = search(core_platform, "Patient", f"identifier={JLH}|MRN{p}")
        assert patient["name"][0]["family"] == "F4"  # the newest update, whatever the order of arrival
        assert len(search(core_platform, "Observation", f"subject:Patient.identifier={JLH}|MRN{p}")) == 4
    assert intakes[0].store.list("error") == [] and len(intakes[0].store.list("accepted", limit=100)) == 24


def test_a_message_that_collides_with_a_concurrent_writer_is_written_again(core_platform: Any) -> None:
    # two listeners register the same new patient at the same moment (results from two laboratories):
    # a step in the write pipeline holds the first transaction until the second has reached the same
    # point, so on PostgreSQL both try to create the patient and one of them collides; it is written
    # again in a new transaction, where it finds the patient. (SQLite's writers take turns: the first
    # waits for nothing and the second follows it.)
    import contextlib
    import threading
    from concurrent.futures import ThreadPoolExecutor

    both = threading.Barrier(2, timeout=0 if core_platform.db.is_sqlite else 10)

    def meet(conn: Any, ctx: Any, op: Any) -> None:
        if op.rtype == "Patient" and op.previous is None:
            with contextlib.suppress(threading.BrokenBarrierError):
                both.wait()

    core_platform.repo.pipeline.add("prepare", "test-meet", meet)
    first, second = build_intake(core_platform), build_intake(core_platform)
    labs = [oru(control_id=f"L{n}", mrn="NEW5").replace("|P100|F200", f"|P{n}|F{n}") for n in (1, 2)]
    with ThreadPoolExecutor(2) as pool:
        acks = list(pool.map(lambda i: (first, second)[i].handle(labs[i].encode()).decode(), range(2)))
    assert all("|AA|" in a for a in acks), acks
    [(pid, _, _)] = search(core_platform, "Patient", f"identifier={JLH}|NEW5")
    results = search(core_platform, "Observation", f"subject:Patient.identifier={JLH}|NEW5")
    assert len(results) == 8 and {r["subject"]["reference"] for _, _, r in results} == {f"Patient/{pid}"}
