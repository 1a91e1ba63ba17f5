"""Index rows remember which element a composite parameter's components came from

Revision ID: 0004_index_groups
Revises: 0003_security
"""

import sqlalchemy as sa
from alembic import op

revision = "0004_index_groups"
down_revision = "0003_security"
branch_labels = None
depends_on = None

TABLES = ("idx_string", "idx_token", "idx_reference", "idx_date", "idx_number", "idx_quantity", "idx_uri")


def upgrade() -> None:
    for name in TABLES:
        with op.batch_alter_table(name) as batch:
            batch.add_column(sa.Column("grp", sa.Integer(), nullable=True))


def downgrade() -> None:
    for name in TABLES:
        with op.batch_alter_table(name) as batch:
            batch.drop_column("grp")
