"""Federation's own tables, on the store's metadata (created by migration 0002_federation).

- ``federation_cursor``: how far a reader of the outbox has got (one row per reader: the upward link,
  the subscription feeder), with its last success, last error and failure count for the operator view.
- ``federation_applied``: at a receiving node, the newest version applied per (origin node, type, id):
  what makes a resend change nothing and an older version never overwrite a newer one.
- ``federation_received``: which local version a replicated change became, with its origin and origin
  version, so that a middle node (the city) forwards it upward under its origin's name.
- ``federation_ids``: the local id a replicated resource got when its id was already taken locally by a
  resource of another origin (ids never collide across nodes).
"""

from __future__ import annotations

from sqlalchemy import BigInteger, Column, Integer, String, Table, Text

from changbai.store.schema import metadata

cursor = Table(
    "federation_cursor",
    metadata,
    Column("name", String(100), primary_key=True),
    Column("seq", BigInteger, nullable=False, default=0),
    Column("sent", BigInteger, nullable=False, default=0),
    Column("failures", Integer, nullable=False, default=0),
    Column("last_success", BigInteger, nullable=True),  # epoch ms
    Column("last_error", Text, nullable=True),
    Column("last_error_at", BigInteger, nullable=True),
)

applied = Table(
    "federation_applied",
    metadata,
    Column("origin", String(100), primary_key=True),
    Column("rtype", String(64), primary_key=True),
    Column("id", String(64), primary_key=True),
    Column("version", Integer, nullable=False),
)

received = Table(
    "federation_received",
    metadata,
    Column("rtype", String(64), primary_key=True),
    Column("id", String(64), primary_key=True),
    Column("version", Integer, primary_key=True),
    Column("origin", String(100), nullable=False),
    Column("origin_version", Integer, nullable=False),
)

ids = Table(
    "federation_ids",
    metadata,
    Column("origin", String(100), primary_key=True),
    Column("rtype", String(64), primary_key=True),
    Column("origin_id", String(64), primary_key=True),
    Column("local_id", String(64), nullable=False),
)
