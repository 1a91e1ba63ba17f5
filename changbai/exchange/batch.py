"""HL7 v2 batches: ``[FHS] {[BHS] {MSH ...} [BTS]} [FTS]`` in one MLLP frame or one upload.

Senders that work in runs (a laboratory's overnight results, a billing system's charges) wrap many
ordinary messages in a batch envelope. Each message inside is processed exactly as if it had come alone
(its own inbox row, outcome and application ACK: one refused message refuses nothing else; the messages
of a batch are committed together, see ``inbox``), and the
answer is a batch of those acknowledgements in the same envelope: FHS/BHS with sender and receiver
swapped, FHS-12/BHS-12 naming the control ids of the file and batch answered, BTS-1 the number of ACKs,
and BTS-2 saying so when the count the sender declared in its BTS-1 differs from what arrived.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field

BOM = b"\xef\xbb\xbf"
_SEGMENTS = re.compile(rb"\r\n|\r|\n")
ENVELOPE = (b"FHS", b"BHS", b"BTS", b"FTS")


@dataclass
class Header:
    """An FHS or BHS as received: its separator and fields (FHS-n / BHS-n is ``fields[n - 1]``)."""

    sep: str
    fields: list[str]

    @classmethod
    def read(cls, segment: bytes) -> Header:
        text = segment.decode("latin-1")  # envelope fields are identifiers; bytes are kept as they came
        sep = text[3] if len(text) > 3 else "|"
        return cls(sep, text.split(sep))

    def get(self, n: int) -> str:
        return self.fields[n - 1] if 0 < n <= len(self.fields) else ""


@dataclass
class Part:
    """One batch of the file: its header, messages (bytes as sent) and the count its BTS-1 declared."""

    header: Header | None = None
    messages: list[bytes] = field(default_factory=list)
    declared: int | None = None


@dataclass
class File:
    header: Header | None = None  # FHS
    parts: list[Part] = field(default_factory=list)


def is_batch(raw: bytes) -> bool:
    return raw.removeprefix(BOM).lstrip(b"\r\n \t")[:3] in (b"FHS", b"BHS")


def split(raw: bytes) -> File:
    """The envelope and its messages, each message's bytes as sent (so each keeps its MSH-18). A segment
    outside any message is kept as a message of its own, which the intake then refuses and records."""
    out = File()
    part: Part | None = None
    current: list[bytes] | None = None
    for segment in _SEGMENTS.split(raw.removeprefix(BOM)):
        if not segment.strip():
            continue
        kind = segment[:3]
        if (kind in ENVELOPE or kind == b"MSH") and current is not None and part is not None:
            part.messages.append(b"\r".join(current) + b"\r")
            current = None
        if kind == b"FHS":
            out.header = Header.read(segment)
        elif kind == b"BHS":
            part = Part(Header.read(segment))
            out.parts.append(part)
        elif kind == b"BTS":
            if part is None:
                part = Part()
                out.parts.append(part)
            count = Header.read(segment).get(2).strip()
            part.declared = int(count) if count.isdigit() else None
            part = None  # what follows belongs to the next batch
        elif kind != b"FTS":
            if part is None:
                part = Part()
                out.parts.append(part)
            if kind == b"MSH" or current is None:
                current = [segment]
            else:
                current.append(segment)
    if current is not None and part is not None:
        part.messages.append(b"\r".join(current) + b"\r")
    return out


def _header(name: str, theirs: Header | None, control_id: str) -> tuple[str, bytes]:
    """Our FHS/BHS answering ``theirs``: sender and receiver swapped, -12 referring to their -11."""
    h = theirs or Header("|", [])
    stamp = time.strftime("%Y%m%d%H%M%S", time.localtime()) + time.strftime("%z")
    values = [name, h.get(2) or "^~\\&", h.get(5) or "CHANGBAI", h.get(6), h.get(3), h.get(4), stamp]
    values += ["", "", "", control_id, h.get(11)]
    return h.sep, h.sep.join(values).encode("latin-1") + b"\r"


def answer(file: File, acknowledge: Callable[[list[bytes]], list[bytes]]) -> bytes:
    """Process the messages of each batch with ``acknowledge`` (their raw bytes -> their ACKs, each empty
    when none is wanted) and build the batch of acknowledgements."""
    out: list[bytes] = []
    stamp = f"{int(time.time() * 1000)}"
    if file.header is not None:
        out.append(_header("FHS", file.header, f"F{stamp}")[1])
    parts = file.parts or [Part()]
    for n, part in enumerate(parts, start=1):
        sep, header = _header("BHS", part.header, f"B{stamp}-{n}")
        out.append(header)
        acks = [ack for ack in acknowledge(part.messages) if ack] if part.messages else []
        out.extend(acks)
        trailer = ["BTS", str(len(acks))]
        if part.declared is not None and part.declared != len(part.messages):
            trailer.append(f"the batch declared {part.declared} messages; {len(part.messages)} arrived")
        out.append(sep.join(trailer).encode("latin-1") + b"\r")
    if file.header is not None:
        out.append(f"FTS{file.header.sep}{len(parts)}".encode("latin-1") + b"\r")
    return b"".join(out)
