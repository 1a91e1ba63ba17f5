"""The master index's own tables, in the platform database beside the FHIR store (identity owns them).

- ``empi_record``: one row per source Patient: its comparison row (JSON) and the person it belongs to.
- ``empi_block``: blocking key -> Patient, the candidate index (rebuilt for a Patient on every write).
- ``empi_event``: the history of every link decision (automatic or by a person), never updated.
- ``empi_review``: possible matches waiting for a person, and their outcome.
- ``empi_distinct``: "not a duplicate" decisions; such a pair is never linked automatically again.

They live on the store's MetaData (like every module's tables) and are created by the store's
migrations (revision 0006_identity).
"""

from __future__ import annotations

from sqlalchemy import BigInteger, Column, Float, Index, Integer, String, Table, Text

from changbai.store.schema import metadata

record = Table(
    "empi_record",
    metadata,
    Column("patient", String(64), primary_key=True),
    Column("person", String(64), nullable=False),
    Column("row", Text, nullable=False),
    Column("updated", BigInteger, nullable=False),
    Index("ix_empi_record_person", "person"),
)

block = Table(
    "empi_block",
    metadata,
    Column("block", String(300), primary_key=True),
    Column("patient", String(64), primary_key=True),
    Index("ix_empi_block_patient", "patient"),
)

event = Table(
    "empi_event",
    metadata,
    Column("seq", Integer, primary_key=True, autoincrement=True),
    Column("at", BigInteger, nullable=False),
    Column("patient", String(64), nullable=False),
    Column("person", String(64), nullable=True),
    Column("previous_person", String(64), nullable=True),
    Column("action", String(32), nullable=False),  # new-person | auto-link | review | link | unlink | ...
    Column("other", String(64), nullable=True),  # the record it was linked with, when one
    Column("probability", Float, nullable=True),
    Column("actor", String(200), nullable=True),
    Column("detail", Text, nullable=True),
    Index("ix_empi_event_patient", "patient", "seq"),
)

review = Table(
    "empi_review",
    metadata,
    Column("patient", String(64), primary_key=True),
    Column("candidate", String(64), primary_key=True),
    Column("probability", Float, nullable=False),
    Column("levels", Text, nullable=False),
    Column("status", String(16), nullable=False),  # open | linked | distinct
    Column("created", BigInteger, nullable=False),
    Index("ix_empi_review_status", "status", "created"),
)

distinct = Table(
    "empi_distinct",
    metadata,
    Column("a", String(64), primary_key=True),
    Column("b", String(64), primary_key=True),
    Column("at", BigInteger, nullable=False),
    Column("actor", String(200), nullable=True),
)

TABLES = (record, block, event, review, distinct)
