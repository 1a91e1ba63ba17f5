"""References keep their target's rid (idx_reference.target_rid)

Chains and ``_has`` followed every reference through a probe of ``resource`` by (type, id); with the
target's rid in the reference row they join the index tables on integers (see store/targets.py). The
column is filled here for the rows already stored (NULL where the target has no resource row), and kept
by the write path from now on. The index serves both directions: the references of given types and
parameter to given targets (chains; ``_has`` starting from its candidates) and back.

Revision ID: 0012_reference_target_rid
Revises: 0011_break_glass_review
"""

import sqlalchemy as sa
from alembic import op

revision = "0012_reference_target_rid"
down_revision = "0011_break_glass_review"
branch_labels = None
depends_on = None

INDEX = "ix_idx_reference_rtype_param_target_rid_rid"


def upgrade() -> None:
    op.add_column("idx_reference", sa.Column("target_rid", sa.BigInteger(), nullable=True))
    bind = op.get_bind()
    if bind.dialect.name == "postgresql":
        # one hash join over both tables rather than a probe of resource per reference row
        op.execute(
            "UPDATE idx_reference AS c SET target_rid = r.rid FROM resource AS r"
            " WHERE r.rtype = c.target_type AND r.id = c.target_id"
        )
    else:
        op.execute(
            "UPDATE idx_reference SET target_rid = (SELECT r.rid FROM resource AS r"
            " WHERE r.rtype = idx_reference.target_type AND r.id = idx_reference.target_id)"
            " WHERE target_id IS NOT NULL AND target_type IS NOT NULL"
        )
    op.create_index(INDEX, "idx_reference", ["rtype", "param", "target_rid", "rid"])
    # the planner's statistics of the table, which now has a column and an index it knows nothing of
    # (only where statistics were kept before: a small SQLite store plans well without them)
    if bind.dialect.name == "postgresql":
        op.execute("ANALYZE idx_reference")
    elif bind.execute(sa.text("SELECT 1 FROM sqlite_master WHERE name = 'sqlite_stat1'")).first():
        op.execute("ANALYZE idx_reference")


def downgrade() -> None:
    op.drop_index(INDEX, table_name="idx_reference")
    with op.batch_alter_table("idx_reference") as batch:
        batch.drop_column("target_rid")
