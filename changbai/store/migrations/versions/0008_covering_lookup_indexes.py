"""Token and reference lookups read their rids from the index alone

A search condition is ``rid IN (SELECT rid FROM idx_token WHERE rtype = .. AND param = .. AND code = ..)``.
With ``rid`` as the last key column of the lookup index the database answers it from the index (an
index-only scan on PostgreSQL, a covering index on SQLite) instead of visiting the table once per row,
which is what a count over thousands of matches (``Observation?code=..&_summary=count``) spent its time
on. The new indexes replace the old ones, whose columns they start with, so writes keep one index each.

Revision ID: 0008_covering_lookup_indexes
Revises: 0007_string_prefix_index
"""

from alembic import op

revision = "0008_covering_lookup_indexes"
down_revision = "0007_string_prefix_index"
branch_labels = None
depends_on = None

#: (table, old index columns); the new index adds ``rid``
LOOKUPS = (
    ("idx_token", ("rtype", "param", "code", "system")),
    ("idx_reference", ("rtype", "param", "target_id", "target_type")),
)


def upgrade() -> None:
    for table, columns in LOOKUPS:
        old = f"ix_{table}_{'_'.join(columns)}"
        op.create_index(f"{old}_rid", table, [*columns, "rid"])
        op.drop_index(old, table_name=table)
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP INDEX IF EXISTS ix_idx_string_prefix")
        op.execute("CREATE INDEX ix_idx_string_prefix ON idx_string (rtype, param, value varchar_pattern_ops, rid)")


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP INDEX IF EXISTS ix_idx_string_prefix")
        op.execute("CREATE INDEX ix_idx_string_prefix ON idx_string (rtype, param, value varchar_pattern_ops)")
    for table, columns in LOOKUPS:
        old = f"ix_{table}_{'_'.join(columns)}"
        op.create_index(old, table, list(columns))
        op.drop_index(f"{old}_rid", table_name=table)
