"""web: console sessions kept in the database (a restart no longer signs everyone out)

Revision ID: 0009_web_session
Revises: 0008_covering_lookup_indexes
"""

import sqlalchemy as sa
from alembic import op

revision = "0009_web_session"
down_revision = "0008_covering_lookup_indexes"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "web_session",
        sa.Column("digest", sa.String(64), primary_key=True),
        sa.Column("username", sa.String(200), nullable=False),
        sa.Column("role", sa.String(64), nullable=False),
        sa.Column("created", sa.BigInteger(), nullable=False),
        sa.Column("last_used", sa.BigInteger(), nullable=False),
        sa.Column("expires", sa.BigInteger(), nullable=False),
        sa.Column("sealed", sa.LargeBinary(), nullable=False),
    )
    op.create_index("ix_web_session_expires", "web_session", ["expires"])
    op.create_index("ix_web_session_username", "web_session", ["username"])


def downgrade() -> None:
    op.drop_index("ix_web_session_username", table_name="web_session")
    op.drop_index("ix_web_session_expires", table_name="web_session")
    op.drop_table("web_session")
