"""Security: accounts, grants, assertion ids, break-the-glass, treatment, hash-chained audit trail

Revision ID: 0003_security
Revises: 0002_federation
"""

from alembic import op

revision = "0003_security"
down_revision = "0002_federation"
branch_labels = None
depends_on = None

TABLES = ("sec_account", "sec_grant", "sec_jti", "sec_break_glass", "sec_treatment", "sec_audit")


def upgrade() -> None:
    from changbai.security import tables
    from changbai.store.schema import metadata

    bind = op.get_bind()
    metadata.create_all(bind, tables=[metadata.tables[name] for name in TABLES], checkfirst=True)
    del tables


def downgrade() -> None:
    for name in reversed(TABLES):
        op.drop_table(name)
