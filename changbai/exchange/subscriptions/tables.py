"""The subscription delivery queue, on the store's metadata (created by migration 0002_federation).

One row per notification owed to one Subscription: fed from the outbox, retried with backoff, marked
``delivered`` or, after the give-up window, ``dead`` (the dead-letter list an operator replays).
"""

from __future__ import annotations

from sqlalchemy import BigInteger, Column, Index, Integer, String, Table, Text

from changbai.store.schema import BigId, metadata

delivery = Table(
    "subscription_delivery",
    metadata,
    Column("seq", BigId, primary_key=True, autoincrement=True),
    Column("subscription", String(64), nullable=False),
    Column("event", BigInteger, nullable=False),  # the outbox seq: the event number receivers dedupe on
    Column("rtype", String(64), nullable=False),
    Column("id", String(64), nullable=False),
    Column("version", Integer, nullable=False),
    Column("action", String(16), nullable=False),
    Column("status", String(16), nullable=False),  # pending | delivered | dead
    Column("attempts", Integer, nullable=False, default=0),
    Column("next_attempt", BigInteger, nullable=False),  # epoch ms
    Column("created", BigInteger, nullable=False),
    Column("delivered_at", BigInteger, nullable=True),
    Column("last_error", Text, nullable=True),
    Index("ix_subscription_delivery_due", "status", "subscription", "seq"),
    Index("ix_subscription_delivery_resource", "subscription", "rtype", "id"),
)
