"""Exchange: inbound message inbox (raw message, outcome, ACK; dead letters) and per-resource message clocks

Revision ID: 0005_exchange_inbox
Revises: 0004_index_groups

Databases made before this revision had these tables created outside Alembic; it skips tables that
already exist.
"""

import sqlalchemy as sa
from alembic import op

revision = "0005_exchange_inbox"
down_revision = "0004_index_groups"
branch_labels = None
depends_on = None

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    existing = set(sa.inspect(op.get_bind()).get_table_names())
    if "exchange_inbox" not in existing:
        op.create_table(
            "exchange_inbox",
            sa.Column("id", BigId, primary_key=True, autoincrement=True),
            sa.Column("channel", sa.String(16), nullable=False),
            sa.Column("sender", sa.String(400), nullable=False),
            sa.Column("control_id", sa.String(200), nullable=False),
            sa.Column("digest", sa.String(64), nullable=False),
            sa.Column("event", sa.String(40), nullable=False),
            sa.Column("version", sa.String(16), nullable=False),
            sa.Column("message_time", sa.BigInteger(), nullable=True),
            sa.Column("received_at", sa.BigInteger(), nullable=False),
            sa.Column("updated_at", sa.BigInteger(), nullable=False),
            sa.Column("peer", sa.String(100), nullable=False),
            sa.Column("status", sa.String(16), nullable=False),
            sa.Column("ack_code", sa.String(2), nullable=False),
            sa.Column("ack", sa.Text(), nullable=False),
            sa.Column("problems", sa.Text(), nullable=False),
            sa.Column("attempts", sa.Integer(), nullable=False),
            sa.Column("raw", sa.LargeBinary(), nullable=False),
        )
        op.create_index(
            "ux_exchange_inbox_key", "exchange_inbox", ["channel", "sender", "control_id", "digest"], unique=True
        )
        op.create_index("ix_exchange_inbox_status", "exchange_inbox", ["status", "received_at"])
    if "exchange_clock" not in existing:
        op.create_table(
            "exchange_clock",
            sa.Column("target", sa.String(700), primary_key=True),
            sa.Column("message_time", sa.BigInteger(), nullable=False),
            sa.Column("inbox_id", sa.BigInteger(), nullable=True),
        )


def downgrade() -> None:
    op.drop_table("exchange_clock")
    op.drop_index("ix_exchange_inbox_status", table_name="exchange_inbox")
    op.drop_index("ux_exchange_inbox_key", table_name="exchange_inbox")
    op.drop_table("exchange_inbox")
