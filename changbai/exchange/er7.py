"""HL7 v2 ER7 ("pipe and hat") parsing, versions 2.3 to 2.8.

Written here rather than taken from PyPI: the small libraries there do not decode MSH-18 character sets,
do not report where a message is broken in the terms an ERR segment needs (segment, sequence, field,
component, table 0357 code), and we need all of that for AE/AR acknowledgements. (Measured on the 100
published samples: `hl7` 0.4.5 about 8x slower per message than this parser; see docs/exchange.md.)

A parsed field is a list of repetitions; a repetition a list of components; a component a list of
subcomponents (unescaped text). Most callers use :meth:`Segment.get` with 1-based positions, as the
standard numbers them (``pid.get(5, 1)`` is PID-5.1, the family name).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import cached_property

from changbai.errors import InvalidInput
from changbai.exchange.maps import charset_codec

BOM = b"\xef\xbb\xbf"
SEGMENT_SPLIT = re.compile(r"\r\n|\r|\n")
SEGMENT_NAME = re.compile(r"^[A-Z][A-Z0-9]{2}$")

Rep = list[list[str]]  # components -> subcomponents


class HL7Error(InvalidInput):
    """A message that cannot be accepted, located the way an ERR segment reports it.

    ``code`` is from HL7 table 0357 (100 segment sequence error, 101 required field missing, 102 data type
    error, 103 table value not found, 200 unsupported message type, 201 unsupported event, 203 unsupported
    version, 207 application internal error). ``reject`` means answer AR (the message as a whole cannot
    be processed: MSH unreadable, unsupported type or version) instead of AE.
    """

    def __init__(
        self,
        message: str,
        *,
        segment: str = "",
        seq: int = 0,
        field_no: int = 0,
        component: int = 0,
        hl7_code: str = "207",
        severity: str = "E",
        reject: bool = False,
    ) -> None:
        where = segment
        if seq:
            where += f"[{seq}]"
        if field_no:
            where += f"-{field_no}"
        if component:
            where += f".{component}"
        super().__init__(f"{where}: {message}" if where else message, expression=where or None)
        self.segment = segment
        self.seq = seq
        self.field_no = field_no
        self.component = component
        self.hl7_code = hl7_code
        self.severity = severity
        self.reject = reject


@dataclass(frozen=True)
class Delimiters:
    field: str = "|"
    component: str = "^"
    repetition: str = "~"
    escape: str = "\\"
    subcomponent: str = "&"
    truncation: str = ""  # v2.7+: '#' as a fifth encoding character

    @property
    def encoding_characters(self) -> str:
        return self.component + self.repetition + self.escape + self.subcomponent + self.truncation


class Segment:
    """One segment: ``name`` and its fields, numbered as the standard does (MSH-1 is the separator)."""

    __slots__ = ("_parsed", "delims", "index", "name", "raw_fields")

    def __init__(self, name: str, raw_fields: list[str], delims: Delimiters, index: int) -> None:
        self.name = name
        self.raw_fields = raw_fields  # raw_fields[n] is field n (escaped text); [0] is the name
        self.delims = delims
        self.index = index  # 1-based position in the message
        self._parsed: dict[int, list[Rep]] = {}

    def raw(self, n: int) -> str:
        return self.raw_fields[n] if n < len(self.raw_fields) else ""

    def reps(self, n: int) -> list[Rep]:
        """Field ``n`` as its repetitions (empty list when the field is empty)."""
        cached = self._parsed.get(n)
        if cached is not None:
            return cached
        text = self.raw(n)
        if self.name == "MSH" and n in (1, 2):
            parsed = [[[text]]] if text else []
        else:
            parsed = parse_field(text, self.delims) if text else []
        self._parsed[n] = parsed
        return parsed

    def get(self, n: int, component: int = 1, sub: int = 1, rep: int = 0) -> str:
        """The text at field ``n``, component, subcomponent of repetition ``rep`` ('' when absent)."""
        reps = self.reps(n)
        if rep >= len(reps):
            return ""
        comps = reps[rep]
        if component > len(comps):
            return ""
        subs = comps[component - 1]
        return subs[sub - 1] if sub <= len(subs) else ""

    def __repr__(self) -> str:
        return f"Segment({self.name}#{self.index})"


@dataclass
class Message:
    segments: list[Segment]
    delims: Delimiters
    charset: str = ""
    text: str = ""
    _by_name: dict[str, list[Segment]] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        for seg in self.segments:
            self._by_name.setdefault(seg.name, []).append(seg)

    @property
    def msh(self) -> Segment:
        return self.segments[0]

    def all(self, name: str) -> list[Segment]:
        return self._by_name.get(name, [])

    def first(self, name: str) -> Segment | None:
        found = self._by_name.get(name)
        return found[0] if found else None

    @cached_property
    def message_type(self) -> str:
        return self.msh.get(9, 1)

    @cached_property
    def trigger(self) -> str:
        return self.msh.get(9, 2)

    @cached_property
    def structure(self) -> str:
        return self.msh.get(9, 3)

    @property
    def event(self) -> str:
        """``TYPE^TRIGGER``, e.g. ``ADT^A01``."""
        return f"{self.message_type}^{self.trigger}"

    @property
    def control_id(self) -> str:
        return self.msh.get(10)

    @property
    def version(self) -> str:
        return self.msh.get(12)

    @property
    def processing_id(self) -> str:
        return self.msh.get(11)

    @property
    def sending_application(self) -> str:
        return self.msh.get(3)

    @property
    def sending_facility(self) -> str:
        return self.msh.get(4) or self.msh.get(4, 2)

    @property
    def sender(self) -> str:
        """Who sent it, for idempotency keys: ``application|facility``."""
        return f"{self.sending_application}|{self.sending_facility}"

    @property
    def timestamp(self) -> str:
        return self.msh.get(7)


# --------------------------------------------------------------------------------------------- parsing
def parse_field(text: str, d: Delimiters) -> list[Rep]:
    reps: list[Rep] = []
    for rep_text in text.split(d.repetition):
        comps: Rep = []
        for comp_text in rep_text.split(d.component):
            comps.append([unescape(s, d) for s in comp_text.split(d.subcomponent)])
        reps.append(comps)
    return reps


_FORMAT_ESCAPES = {".br": "\n", "H": "", "N": "", ".sp": "\n", ".fi": "", ".nf": "", ".in": "", ".ti": ""}


def unescape(text: str, d: Delimiters) -> str:
    """Resolve \\F\\ \\S\\ \\T\\ \\R\\ \\E\\ \\P\\ \\Xhh..\\ and formatting escapes; unknown ones stay as sent."""
    esc = d.escape
    if not esc or esc not in text:
        return text
    out: list[str] = []
    i = 0
    n = len(text)
    while i < n:
        ch = text[i]
        if ch != esc:
            out.append(ch)
            i += 1
            continue
        end = text.find(esc, i + 1)
        if end < 0:
            out.append(text[i:])
            break
        seq = text[i + 1 : end]
        repl = _escape_value(seq, d)
        out.append(repl if repl is not None else text[i : end + 1])
        i = end + 1
    return "".join(out)


def _escape_value(seq: str, d: Delimiters) -> str | None:
    simple = {
        "F": d.field,
        "S": d.component,
        "T": d.subcomponent,
        "R": d.repetition,
        "E": d.escape,
        "P": d.truncation or "#",
    }
    if seq in simple:
        return simple[seq]
    if seq.startswith("X") and len(seq) > 1 and len(seq) % 2 == 1:
        try:
            return bytes.fromhex(seq[1:]).decode("utf-8", errors="replace")
        except ValueError:
            return None
    if seq in _FORMAT_ESCAPES:
        return _FORMAT_ESCAPES[seq]
    if seq[:3] in _FORMAT_ESCAPES:  # .sp<n>, .in<n>, .ti<n>
        return _FORMAT_ESCAPES[seq[:3]]
    if seq[:1] in ("C", "M", "Z"):  # character-set switches and local escapes: no text of their own
        return ""
    return None


def escape(text: str, d: Delimiters = Delimiters()) -> str:
    """Escape delimiter characters in ``text`` for building messages (ACKs echo error text)."""
    e = d.escape
    return (
        text.replace(e, f"{e}E{e}")
        .replace(d.field, f"{e}F{e}")
        .replace(d.component, f"{e}S{e}")
        .replace(d.subcomponent, f"{e}T{e}")
        .replace(d.repetition, f"{e}R{e}")
        .replace("\r", f"{e}X0D{e}")
        .replace("\n", f"{e}.br{e}")
    )


def decode(raw: bytes) -> tuple[str, str]:
    """Bytes as received -> (text, charset named in MSH-18). Tolerates a leading UTF-8 BOM.

    The MSH header is ASCII in every character set HL7 allows here, so MSH-18 is read from the bytes
    before decoding. No MSH-18 means ASCII/8859-1 by the standard; UTF-8 is tried first because that is
    what senders without MSH-18 actually use, and latin-1 cannot fail.
    """
    if raw.startswith(BOM):
        raw = raw[len(BOM) :]
    if not raw.startswith(b"MSH") or len(raw) < 8:
        raise HL7Error(
            "the message does not start with an MSH segment", segment="MSH", seq=1, hl7_code="100", reject=True
        )
    head_end = min((p for p in (raw.find(b"\r"), raw.find(b"\n")) if p >= 0), default=len(raw))
    sep = raw[3:4]
    msh_fields = raw[:head_end].split(sep)
    charset = msh_fields[17].split(raw[4:5])[0].decode("ascii", "replace").strip() if len(msh_fields) > 17 else ""
    codec = charset_codec(charset)
    if codec is None:
        raise HL7Error(
            f"character set '{charset}' is not supported",
            segment="MSH",
            seq=1,
            field_no=18,
            hl7_code="103",
            reject=True,
        )
    if codec == "":
        try:
            return raw.decode("utf-8"), charset
        except UnicodeDecodeError:
            return raw.decode("latin-1"), charset
    try:
        return raw.decode(codec), charset
    except UnicodeDecodeError as exc:
        raise HL7Error(
            f"the bytes are not valid {charset} (MSH-18) at byte {exc.start}",
            segment="MSH",
            seq=1,
            field_no=18,
            hl7_code="102",
        ) from exc


def parse(data: str | bytes) -> Message:
    """Parse one ER7 message (text or raw bytes as received). Raises :class:`HL7Error`."""
    if isinstance(data, bytes):
        text, charset = decode(data)
    else:
        text, charset = data.lstrip("\ufeff"), ""
    text = text.lstrip("\ufeff")
    if not text.startswith("MSH") or len(text) < 8:
        raise HL7Error(
            "the message does not start with an MSH segment", segment="MSH", seq=1, hl7_code="100", reject=True
        )
    fsep = text[3]
    enc_end = text.find(fsep, 4)
    enc = text[4:enc_end] if enc_end > 0 else ""
    if len(enc) < 4 or fsep in enc or len(set(enc + fsep)) != len(enc) + 1 or fsep.isalnum():
        raise HL7Error(
            f"MSH-2 encoding characters '{enc}' are not valid",
            segment="MSH",
            seq=1,
            field_no=2,
            hl7_code="102",
            reject=True,
        )
    delims = Delimiters(fsep, enc[0], enc[1], enc[2], enc[3], enc[4] if len(enc) > 4 else "")
    segments: list[Segment] = []
    for line in SEGMENT_SPLIT.split(text):
        if not line.strip():
            continue
        index = len(segments) + 1
        parts = line.split(fsep)
        name = parts[0].strip()
        if not SEGMENT_NAME.match(name):
            raise HL7Error(f"'{name[:20]}' is not a segment name", segment=name[:3] or "?", seq=index, hl7_code="100")
        if name == "MSH" and index == 1:
            parts = ["MSH", fsep, *parts[1:]]
        segments.append(Segment(name, parts, delims, index))
    msg = Message(segments, delims, charset, text)
    _check_header(msg)
    return msg


def parse_header(data: str | bytes) -> Message | None:
    """Only the MSH of a message whose body is broken, so that the AE can still answer in its terms."""
    if isinstance(data, bytes):
        data = data.removeprefix(BOM).decode("latin-1")
    first = SEGMENT_SPLIT.split(data.lstrip("\ufeff"), 1)[0]
    try:
        return parse(first)
    except HL7Error:
        return None


def _check_header(msg: Message) -> None:
    msh = msg.msh
    for n, what in ((9, "message type"), (10, "message control id"), (12, "version id")):
        if not msh.get(n):
            raise HL7Error(f"{what} is missing", segment="MSH", seq=1, field_no=n, hl7_code="101", reject=True)
    if not msg.version.startswith("2."):
        raise HL7Error(
            f"version '{msg.version}' is not supported", segment="MSH", seq=1, field_no=12, hl7_code="203", reject=True
        )
