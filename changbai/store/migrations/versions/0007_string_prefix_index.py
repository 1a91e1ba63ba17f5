"""String search by prefix uses an index on PostgreSQL

``name=li`` is ``value LIKE 'li%'``. PostgreSQL turns a LIKE prefix into an index range only on an index
that orders by bytes (the C collation or a ``*_pattern_ops`` operator class), so with any other database
collation the plain ``(rtype, param, value)`` index cannot serve it and a family-name search scanned
every name of the type. SQLite gets the range from the search compiler instead (its LIKE never uses an
index); nothing changes there.

Revision ID: 0007_string_prefix_index
Revises: 0006_identity
"""

from alembic import op

revision = "0007_string_prefix_index"
down_revision = "0006_identity"
branch_labels = None
depends_on = None


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(
            "CREATE INDEX IF NOT EXISTS ix_idx_string_prefix ON idx_string (rtype, param, value varchar_pattern_ops)"
        )


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP INDEX IF EXISTS ix_idx_string_prefix")
