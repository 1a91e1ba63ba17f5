"""MLLP framing and the listener over real loopback sockets (in-memory intake)."""

from __future__ import annotations

import asyncio

from changbai.exchange.intake import Intake, MemoryStore
from changbai.exchange.mllp import END, VT, FrameReader, MllpClient, MllpServer, frame
from tests.exchange.messages import adt, oru


def test_frames_split_over_reads_and_packed_together_are_recovered() -> None:
    r = FrameReader()
    data = frame(b"one") + b"junk" + frame(b"two") + frame(b"three")
    got = []
    for i in range(0, len(data), 3):  # three bytes at a time
        got += r.feed(data[i : i + 3])
    assert got == [b"one", b"two", b"three"]
    assert r.pending == 0 and r.discarded == 4


def test_a_frame_without_its_end_stays_pending() -> None:
    r = FrameReader()
    assert r.feed(VT + b"MSH|half") == []
    assert r.pending > 0
    assert r.feed(b" more" + END) == [b"MSH|half more"]


def ack_code(ack: bytes) -> str:
    return ack.decode().split("\r")[1].split("|")[1]


async def _server(store: MemoryStore) -> MllpServer:
    return await MllpServer(Intake(store).handle, "127.0.0.1", 0).start()


def test_messages_over_a_socket_are_acknowledged_in_order() -> None:
    async def run() -> list[bytes]:
        store = MemoryStore()
        server = await _server(store)
        client = await MllpClient("127.0.0.1", server.port).connect()
        acks = [await client.send(adt(control_id="A")), await client.send(oru(control_id="B"))]
        await client.close()
        await server.stop()
        assert len(store.sink.bundles) == 2
        return acks

    acks = asyncio.run(run())
    assert [ack_code(a) for a in acks] == ["AA", "AA"]
    assert b"MSA|AA|A" in acks[0] and b"MSA|AA|B" in acks[1]


def test_connection_dropped_mid_message_loses_nothing_accepted_and_the_resend_is_processed() -> None:
    async def run() -> tuple[MemoryStore, MllpServer, bytes]:
        store = MemoryStore()
        server = await _server(store)
        _, writer = await asyncio.open_connection("127.0.0.1", server.port)
        whole = frame(adt(control_id="DROP"))
        writer.write(whole[: len(whole) // 2])  # half a message, then the line goes down
        await writer.drain()
        writer.close()
        await writer.wait_closed()
        for _ in range(100):
            if server.dropped_partial:
                break
            await asyncio.sleep(0.01)
        client = await MllpClient("127.0.0.1", server.port).connect()
        ack = await client.send(adt(control_id="DROP"))  # the sender resends: it never got an ACK
        await client.close()
        await server.stop()
        return store, server, ack

    store, server, ack = asyncio.run(run())
    assert server.dropped_partial == 1
    assert ack_code(ack) == "AA"
    assert len(store.sink.bundles) == 1


def test_a_duplicate_gets_the_same_ack_and_changes_nothing() -> None:
    async def run() -> tuple[MemoryStore, bytes, bytes]:
        store = MemoryStore()
        server = await _server(store)
        client = await MllpClient("127.0.0.1", server.port).connect()
        first = await client.send(adt(control_id="DUP"))
        second = await client.send(adt(control_id="DUP"))
        await client.close()
        await server.stop()
        return store, first, second

    store, first, second = asyncio.run(run())
    assert first == second
    assert len(store.sink.bundles) == 1


def test_garbage_in_a_frame_gets_ar_and_is_kept_as_a_dead_letter() -> None:
    async def run() -> tuple[MemoryStore, bytes]:
        store = MemoryStore()
        server = await _server(store)
        client = await MllpClient("127.0.0.1", server.port).connect()
        ack = await client.send(b"this is not HL7")
        await client.close()
        await server.stop()
        return store, ack

    store, ack = asyncio.run(run())
    assert ack_code(ack) == "AR"
    [row] = store.list("rejected")
    assert row.raw == b"this is not HL7"
