"""The SQL schema of the FHIR store (SQLAlchemy Core), the same on SQLite and PostgreSQL.

- ``resource``: one row per logical resource (type, id) with its current version number.
- ``resource_version``: every version ever written (the history), with the JSON text; its ``vid`` is a
  global sequence that orders the system history and the outbox.
- ``idx_*``: search index rows, one per extracted value, rebuilt for a resource on every write in the same
  transaction. They hold ``rtype`` and ``param`` so one table serves every resource type and parameter.
- ``outbox``: one row per change, written in the same transaction, read by subscribers and federation.

Other modules add their own tables to :data:`metadata` in their own ``tables.py`` and their own Alembic
revisions; none reads another module's tables.
"""

from __future__ import annotations

from functools import cache

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
)

metadata = MetaData()

# SQLite only auto-increments INTEGER PRIMARY KEY; BigInteger maps to it there.
BigId = BigInteger().with_variant(Integer(), "sqlite")

resource = Table(
    "resource",
    metadata,
    Column("rid", BigId, primary_key=True, autoincrement=True),
    Column("rtype", String(64), nullable=False),
    Column("id", String(64), nullable=False),
    Column("version", Integer, nullable=False),
    Column("last_updated", BigInteger, nullable=False),  # epoch ms
    Column("deleted", Boolean, nullable=False, default=False),
    Index("ux_resource_type_id", "rtype", "id", unique=True),
    Index("ix_resource_type_updated", "rtype", "last_updated"),
)

resource_version = Table(
    "resource_version",
    metadata,
    Column("vid", BigId, primary_key=True, autoincrement=True),
    Column("rid", BigInteger, ForeignKey("resource.rid"), nullable=False),
    Column("rtype", String(64), nullable=False),
    Column("id", String(64), nullable=False),
    Column("version", Integer, nullable=False),
    Column("last_updated", BigInteger, nullable=False),
    Column("method", String(8), nullable=False),  # POST PUT PATCH DELETE
    Column("deleted", Boolean, nullable=False, default=False),
    Column("content", Text, nullable=True),  # the resource JSON (null for a delete)
    Index("ux_version_rid_version", "rid", "version", unique=True),
    Index("ix_version_type_updated", "rtype", "last_updated"),
    Index("ix_version_updated", "last_updated"),
)


def _index_table(name: str, *columns: Column, indexes: tuple[tuple[str, ...], ...] = ()) -> Table:
    table = Table(
        name,
        metadata,
        Column("rid", BigInteger, nullable=False),
        Column("rtype", String(64), nullable=False),
        Column("param", String(100), nullable=False),
        *columns,
        # For the components of a composite parameter ("code-value-quantity$1"): which element they came
        # from, so that a composite search matches components of the same element (null otherwise).
        Column("grp", Integer, nullable=True),
        Index(f"ix_{name}_rid", "rid"),
    )
    for cols in indexes:
        Index(f"ix_{name}_{'_'.join(cols)}", *(table.c[c] for c in cols))
    return table


idx_string = _index_table(
    "idx_string",
    Column("value", String(512), nullable=False),  # normalised: case- and accent-folded
    Column("exact", String(512), nullable=False),
    indexes=(("rtype", "param", "value"),),
)

idx_token = _index_table(
    "idx_token",
    Column("system", String(256), nullable=True),
    Column("code", String(256), nullable=True),
    Column("text", String(512), nullable=True),  # normalised display / text, for :text
    indexes=(("rtype", "param", "code", "system", "rid"),),  # rid last: lookups read it from the index
)

idx_reference = _index_table(
    "idx_reference",
    Column("target_type", String(64), nullable=True),
    Column("target_id", String(64), nullable=True),
    Column("target_version", String(64), nullable=True),
    Column("url", String(512), nullable=True),  # absolute / canonical references
    # The rid of the resource (target_type, target_id), set by the store when that resource row exists
    # (resource rows are never removed, so the pair names that rid for good), else NULL: searches that
    # follow references (chains, _has) join on it and probe ``resource`` only for the NULL rows.
    Column("target_rid", BigInteger, nullable=True),
    indexes=(
        ("rtype", "param", "target_id", "target_type", "rid"),
        ("target_type", "target_id"),
        ("rtype", "param", "target_rid", "rid"),
    ),
)

idx_date = _index_table(
    "idx_date",
    Column("low", BigInteger, nullable=False),
    Column("high", BigInteger, nullable=False),
    indexes=(("rtype", "param", "low"), ("rtype", "param", "high")),
)

idx_number = _index_table(
    "idx_number",
    Column("value", Float, nullable=False),
    Column("low", Float, nullable=False),
    Column("high", Float, nullable=False),
    indexes=(("rtype", "param", "value"),),
)

idx_quantity = _index_table(
    "idx_quantity",
    Column("system", String(256), nullable=True),
    Column("code", String(64), nullable=True),
    Column("unit", String(64), nullable=True),
    Column("value", Float, nullable=False),
    Column("low", Float, nullable=False),
    Column("high", Float, nullable=False),
    Column("canonical_code", String(64), nullable=True),  # UCUM base unit, when convertible
    Column("canonical_value", Float, nullable=True),
    indexes=(("rtype", "param", "code", "value"), ("rtype", "param", "canonical_code", "canonical_value")),
)

idx_uri = _index_table(
    "idx_uri",
    Column("uri", String(512), nullable=False),
    indexes=(("rtype", "param", "uri"),),
)

INDEX_TABLES = {
    "string": idx_string,
    "token": idx_token,
    "reference": idx_reference,
    "date": idx_date,
    "number": idx_number,
    "quantity": idx_quantity,
    "uri": idx_uri,
}

outbox = Table(
    "outbox",
    metadata,
    Column("seq", BigId, primary_key=True, autoincrement=True),
    Column("rtype", String(64), nullable=False),
    Column("id", String(64), nullable=False),
    Column("version", Integer, nullable=False),
    Column("action", String(16), nullable=False),  # create update delete
    Column("created", BigInteger, nullable=False),
)


@cache
def insert_columns(table: Table, with_key: bool = False) -> tuple[str, ...]:
    """The columns a row of ``table`` gives when the store inserts it in bulk: all but the generated key
    (unless ``with_key``), in the table's order (index rows: rid, rtype, param, own columns, grp)."""
    return tuple(c.name for c in table.columns if with_key or not c.primary_key)
