"""Federation and subscriptions: outbox cursors, applied versions, received map, id map, delivery queue

Revision ID: 0002_federation
Revises: 0001
"""

from alembic import op
import sqlalchemy as sa


revision = "0002_federation"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "federation_cursor",
        sa.Column("name", sa.String(100), primary_key=True),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.Column("sent", sa.BigInteger(), nullable=False),
        sa.Column("failures", sa.Integer(), nullable=False),
        sa.Column("last_success", sa.BigInteger(), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("last_error_at", sa.BigInteger(), nullable=True),
    )
    op.create_table(
        "federation_applied",
        sa.Column("origin", sa.String(100), primary_key=True),
        sa.Column("rtype", sa.String(64), primary_key=True),
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("version", sa.Integer(), nullable=False),
    )
    op.create_table(
        "federation_received",
        sa.Column("rtype", sa.String(64), primary_key=True),
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("version", sa.Integer(), primary_key=True),
        sa.Column("origin", sa.String(100), nullable=False),
        sa.Column("origin_version", sa.Integer(), nullable=False),
    )
    op.create_table(
        "federation_ids",
        sa.Column("origin", sa.String(100), primary_key=True),
        sa.Column("rtype", sa.String(64), primary_key=True),
        sa.Column("origin_id", sa.String(64), primary_key=True),
        sa.Column("local_id", sa.String(64), nullable=False),
    )
    op.create_table(
        "subscription_delivery",
        sa.Column("seq", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), primary_key=True, autoincrement=True),
        sa.Column("subscription", sa.String(64), nullable=False),
        sa.Column("event", sa.BigInteger(), nullable=False),
        sa.Column("rtype", sa.String(64), nullable=False),
        sa.Column("id", sa.String(64), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("action", sa.String(16), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt", sa.BigInteger(), nullable=False),
        sa.Column("created", sa.BigInteger(), nullable=False),
        sa.Column("delivered_at", sa.BigInteger(), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
    )
    op.create_index("ix_subscription_delivery_due", "subscription_delivery", ["status", "subscription", "seq"])
    op.create_index("ix_subscription_delivery_resource", "subscription_delivery", ["subscription", "rtype", "id"])


def downgrade() -> None:
    op.drop_index("ix_subscription_delivery_resource", "subscription_delivery")
    op.drop_index("ix_subscription_delivery_due", "subscription_delivery")
    for name in ("subscription_delivery", "federation_ids", "federation_received", "federation_applied",
                 "federation_cursor"):
        op.drop_table(name)
