"""Planner statistics of how the index tables' key columns depend on each other (PostgreSQL)

PostgreSQL estimates ``rtype = 'Condition' AND param = 'code' AND code = 'I10' AND system = '…icd-10'`` as
the product of the four columns' selectivities, as if they were independent, when the code nearly fixes
the others: 9 rows for 3,718 at 1M resources. Searches combine such lookups (``_has`` with a family name,
``:below`` sorted by date), and on estimates that low the planner joins them by nested loops that probe
thousands of times, or compares every pair. Functional-dependency statistics on these columns correct the
products (16,606 estimated for the 3,718: the right order, so the right join). SQLite's planner works
from its index statistics alone and needs nothing here.

Revision ID: 0013_index_statistics
Revises: 0012_reference_target_rid
"""

from alembic import op

revision = "0013_index_statistics"
down_revision = "0012_reference_target_rid"
branch_labels = None
depends_on = None

#: (table, columns) whose values depend on each other
STATISTICS = (
    ("idx_token", ("rtype", "param", "code", "system")),
    ("idx_string", ("rtype", "param")),
    ("idx_reference", ("rtype", "param", "target_type")),
)


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    for table, columns in STATISTICS:
        op.execute(
            f"CREATE STATISTICS IF NOT EXISTS {table}_dependencies (dependencies) ON {', '.join(columns)} FROM {table}"
        )
        op.execute(f"ANALYZE {table}")


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    for table, _ in STATISTICS:
        op.execute(f"DROP STATISTICS IF EXISTS {table}_dependencies")
