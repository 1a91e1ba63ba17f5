"""The exchange module's own tables, on the store's metadata (same database, its own names).

- ``exchange_inbox``: every inbound message, raw as received, with its outcome (accepted / error /
  rejected), the ACK it got and the problems found. One row per (sender, control id, digest of
  the bytes): that is the idempotency key, so a resend finds the row and gets the same ACK, while a
  different message that reuses a control id (some senders restart their counters) is still
  processed. Failed rows are the dead-letter store an operator lists, fixes and replays.
- ``exchange_clock``: per written resource (its request url), the time of the newest message applied to
  it, so that an older message arriving late does not overwrite newer data.
"""

from __future__ import annotations

from sqlalchemy import BigInteger, Column, Index, Integer, LargeBinary, String, Table, Text

from changbai.store.schema import BigId, metadata

inbox = Table(
    "exchange_inbox",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("channel", String(16), nullable=False),  # hl7v2 | cda | csv
    Column("sender", String(400), nullable=False),
    Column("control_id", String(200), nullable=False),
    Column("digest", String(64), nullable=False),  # sha-256 of the message as received
    Column("event", String(40), nullable=False, default=""),
    Column("version", String(16), nullable=False, default=""),
    Column("message_time", BigInteger, nullable=True),  # epoch ms of EVN-2 / MSH-7
    Column("received_at", BigInteger, nullable=False),
    Column("updated_at", BigInteger, nullable=False),
    Column("peer", String(100), nullable=False, default=""),
    Column("status", String(16), nullable=False),  # accepted | error | rejected | replayed
    Column("ack_code", String(2), nullable=False, default=""),
    Column("ack", Text, nullable=False, default=""),
    Column("problems", Text, nullable=False, default="[]"),  # JSON list of {where, code, severity, text}
    Column("attempts", Integer, nullable=False, default=1),
    Column("raw", LargeBinary, nullable=False),
    Index("ux_exchange_inbox_key", "channel", "sender", "control_id", "digest", unique=True),
    Index("ix_exchange_inbox_status", "status", "received_at"),
)

clock = Table(
    "exchange_clock",
    metadata,
    Column("target", String(700), primary_key=True),
    Column("message_time", BigInteger, nullable=False),
    Column("inbox_id", BigInteger, nullable=True),
)

TABLES = (inbox, clock)
