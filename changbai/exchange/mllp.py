"""MLLP (Minimal Lower Layer Protocol) framing and an asyncio listener.

A frame is <VT> message <FS><CR>. The reader tolerates partial reads (a frame split over many TCP
segments, or many frames in one), bytes between frames (discarded and logged), and a peer that drops the
connection mid-frame (the partial message is discarded: the sender never got an ACK, so it resends).
Each message is handed to a handler that returns the ACK bytes; the handler runs in a worker thread and
the ACK is written only after it returns, i.e. after the outcome is durable.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from changbai import logs

VT, FS, CR = b"\x0b", b"\x1c", b"\r"
END = FS + CR
MAX_MESSAGE = 16 * 1024 * 1024

log = logs.get(__name__)

Handler = Callable[[bytes, str], bytes]


def frame(message: bytes | str) -> bytes:
    data = message.encode("utf-8") if isinstance(message, str) else message
    return VT + data + END


class FrameReader:
    """Incremental MLLP deframer: feed bytes, get complete messages."""

    def __init__(self, max_size: int = MAX_MESSAGE) -> None:
        self.buffer = bytearray()
        self.max_size = max_size
        self.discarded = 0

    def feed(self, data: bytes) -> list[bytes]:
        self.buffer += data
        out: list[bytes] = []
        while True:
            start = self.buffer.find(VT)
            if start < 0:
                self.discarded += len(self.buffer)
                self.buffer.clear()
                break
            if start > 0:
                self.discarded += start
                del self.buffer[:start]
            end = self.buffer.find(END, 1)
            if end < 0:
                if len(self.buffer) > self.max_size:
                    raise ValueError(f"MLLP frame larger than {self.max_size} bytes")
                break
            out.append(bytes(self.buffer[1:end]))
            del self.buffer[: end + 2]
        return out

    @property
    def pending(self) -> int:
        """Bytes of an unfinished frame (lost if the connection drops now)."""
        return len(self.buffer)


async def read_message(reader: asyncio.StreamReader, deframer: FrameReader) -> bytes | None:
    """The next message from ``reader``, or None at end of stream."""
    while True:
        data = await reader.read(65536)
        if not data:
            return None
        messages = deframer.feed(data)
        if messages:
            return messages[0] if len(messages) == 1 else _stash(deframer, messages)


def _stash(deframer: FrameReader, messages: list[bytes]) -> bytes:
    # Re-queue all but the first, framed again, ahead of whatever is still buffered.
    rest = b"".join(frame(m) for m in messages[1:])
    deframer.buffer[:0] = rest
    return messages[0]


class MllpServer:
    """An asyncio MLLP listener. ``handler(raw, peer) -> ack`` is called in a worker thread of its own pool.

    Up to ``max_workers`` messages (one per connection at a time, as senders wait for each ACK) are
    handled at once; the store commits the messages waiting together in one transaction, so the more
    connections are busy, the more messages share each commit."""

    def __init__(self, handler: Handler, host: str = "127.0.0.1", port: int = 2575, max_workers: int = 32) -> None:
        self.handler = handler
        self.host = host
        self.port = port
        self.server: asyncio.base_events.Server | None = None
        self.semaphore = asyncio.Semaphore(max_workers)
        self.pool = ThreadPoolExecutor(max_workers, thread_name_prefix="mllp")
        self.dropped_partial = 0
        self.connections: set[asyncio.Task[None]] = set()

    async def start(self) -> MllpServer:
        self.server = await asyncio.start_server(self._connection, self.host, self.port, limit=MAX_MESSAGE)
        sock = self.server.sockets[0]
        self.port = sock.getsockname()[1]
        logs.event(log, "mllp listening", host=self.host, port=self.port)
        return self

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
            for task in list(self.connections):
                task.cancel()
            with contextlib.suppress(Exception):
                await self.server.wait_closed()
        self.pool.shutdown(wait=False)

    async def serve_forever(self) -> None:
        await self.start()
        assert self.server is not None
        async with self.server:
            await self.server.serve_forever()

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self.connections.add(task)
        peer = "{}:{}".format(*(writer.get_extra_info("peername") or ("?", "?"))[:2])
        deframer = FrameReader()
        try:
            while True:
                try:
                    data = await reader.read(65536)
                except (ConnectionError, asyncio.IncompleteReadError):
                    break
                if not data:
                    break
                try:
                    messages = deframer.feed(data)
                except ValueError as exc:
                    logs.event(log, "mllp frame refused", peer=peer, error=str(exc))
                    break
                for raw in messages:
                    async with self.semaphore:
                        ack = await asyncio.get_running_loop().run_in_executor(self.pool, self.handler, raw, peer)
                    if ack:  # enhanced mode may ask for no acknowledgement at all (MSH-15/16 = NE)
                        writer.write(frame(ack))
                        await writer.drain()
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            if deframer.pending:
                self.dropped_partial += 1
                logs.event(log, "mllp connection dropped mid-message", peer=peer, bytes=deframer.pending)
            writer.close()
            with contextlib.suppress(Exception, asyncio.CancelledError):
                await writer.wait_closed()
            if task is not None:
                self.connections.discard(task)


class MllpClient:
    """A small blocking-style asyncio client: send a message, wait for its ACK (tests, benchmarks, replay)."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None
        self.deframer = FrameReader()

    async def connect(self) -> MllpClient:
        self.reader, self.writer = await asyncio.open_connection(self.host, self.port, limit=MAX_MESSAGE)
        return self

    async def send(self, message: bytes | str) -> bytes:
        assert self.reader is not None and self.writer is not None
        self.writer.write(frame(message))
        await self.writer.drain()
        ack = await read_message(self.reader, self.deframer)
        if ack is None:
            raise ConnectionError("the server closed the connection before acknowledging")
        return ack

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            with contextlib.suppress(Exception):
                await self.writer.wait_closed()
