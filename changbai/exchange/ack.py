"""HL7 v2 acknowledgements (original mode): MSA with AA / AE / AR, and ERR segments saying where.

The ACK is in the version of the message it answers, with its encoding characters and character set, and
carries the original control id in MSA-2. ERR is written the v2.5+ way (ERR-2 location
segment^sequence^field^component, ERR-3 code from table 0357, ERR-4 severity, ERR-8 user message) and,
for v2.3/2.4 senders, the older way (ERR-1 segment^sequence^field^code&text&HL70357).
"""

from __future__ import annotations

import time
from collections.abc import Iterable

from changbai.exchange.er7 import Delimiters, HL7Error, Message, escape
from changbai.exchange.maps import charset_codec, v2_map

MAX_ERR = 20


def _now() -> str:
    return time.strftime("%Y%m%d%H%M%S", time.localtime()) + time.strftime("%z")


def build_ack(
    msg: Message | None,
    code: str,
    errors: Iterable[HL7Error] = (),
    *,
    text: str = "",
    fallback_control_id: str = "",
    timestamp: str | None = None,
) -> str:
    """An ACK for ``msg`` (None when even the MSH could not be read) with acknowledgement ``code``."""
    d = msg.delims if msg is not None else Delimiters()
    f, cs = d.field, d.component
    version = msg.version if msg is not None and msg.version else "2.5"
    control_id = msg.control_id if msg is not None else fallback_control_id
    trigger = msg.trigger if msg is not None else ""
    charset = msg.charset if msg is not None else ""
    header = msg.msh if msg is not None else None

    def h(n: int) -> str:
        return header.raw(n) if header is not None else ""

    msh = [
        "MSH",
        d.encoding_characters,
        h(5) or "CHANGBAI",
        h(6),
        h(3),
        h(4),
        timestamp or _now(),
        "",
        f"ACK{cs}{trigger}{cs}ACK" if trigger else "ACK",
        f"ACK{control_id}"[:20] if control_id else f"ACK{int(time.time() * 1000)}",
        h(11) or "P",
        version,
    ]
    if charset:
        msh += ["", "", "", "", "", charset]
    old_style = version.startswith(("2.3", "2.4", "2.2", "2.1"))
    errors = list(errors)
    msa = ["MSA", code, escape(control_id, d)]
    if text or (old_style and errors):
        msa.append(escape(text or errors[0].message, d))
    segments = [f.join(msh), f.join(msa)]
    for err in errors[:MAX_ERR]:
        segments.append(_err(err, d, old_style))
    return "\r".join(segments) + "\r"


def _err(err: HL7Error, d: Delimiters, old_style: bool) -> str:
    f, cs, sc = d.field, d.component, d.subcomponent
    location = [err.segment, str(err.seq or ""), str(err.field_no or ""), str(err.component or "")]
    desc = v2_map("0357", err.hl7_code) or "Application internal error"
    if old_style:
        eld = cs.join([*location[:3], sc.join([err.hl7_code, desc, "HL70357"])])
        return f.join(["ERR", eld])
    while location and not location[-1]:
        location.pop()
    return f.join(
        [
            "ERR",
            "",
            cs.join(location),
            cs.join([err.hl7_code, desc, "HL70357"]),
            err.severity,
            "",
            "",
            "",
            escape(err.message, d),
        ]
    )


def encode(ack: str, msg: Message | None) -> bytes:
    """ACK text -> bytes in the character set of the message it answers (UTF-8 when none was named)."""
    codec = charset_codec(msg.charset) if msg is not None and msg.charset else ""
    return ack.encode(codec or "utf-8", errors="replace")
