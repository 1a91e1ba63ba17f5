"""security: the review of break-the-glass accesses (sec_break_glass_review)

Every emergency access is open for review until a reviewer records its outcome (justified or not), a
comment, who and when: one row per reviewed access, keyed by the access's id.

Revision ID: 0011_break_glass_review
Revises: 0010_audit_patient_index
"""

import sqlalchemy as sa
from alembic import op

revision = "0011_break_glass_review"
down_revision = "0010_audit_patient_index"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "sec_break_glass_review",
        sa.Column("id", sa.BigInteger(), primary_key=True, autoincrement=False),
        sa.Column("outcome", sa.String(16), nullable=False),
        sa.Column("comment", sa.Text(), nullable=False),
        sa.Column("reviewer", sa.String(100), nullable=False),
        sa.Column("reviewed_at", sa.BigInteger(), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("sec_break_glass_review")
