"""security: an index of which audit rows name which resident (sec_audit_patient)

"Who read my record" (``AuditEvent?patient=``) matched the space-separated ``patients`` text of every row of
the trail with LIKE, a scan of the whole trail: seconds once a province is loaded (one row per write).
Each row's residents now go to ``sec_audit_patient`` (patient, seq) as the row is appended; this revision
fills it for the rows already there.

Revision ID: 0010_audit_patient_index
Revises: 0009_web_session
"""

import sqlalchemy as sa
from alembic import op

revision = "0010_audit_patient_index"
down_revision = "0009_web_session"
branch_labels = None
depends_on = None

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
BATCH = 20000


def upgrade() -> None:
    op.create_table(
        "sec_audit_patient",
        sa.Column("patient", sa.String(64), primary_key=True),
        sa.Column("seq", BigId, primary_key=True),
    )
    conn = op.get_bind()
    audit = sa.table("sec_audit", sa.column("seq"), sa.column("patients"))
    named = sa.table("sec_audit_patient", sa.column("patient"), sa.column("seq"))
    last = 0
    while True:
        rows = conn.execute(
            sa.select(audit.c.seq, audit.c.patients)
            .where(audit.c.seq > last, audit.c.patients != "")
            .order_by(audit.c.seq)
            .limit(BATCH)
        ).all()
        if not rows:
            break
        pairs = [{"patient": pid, "seq": seq} for seq, patients in rows for pid in set(patients.split())]
        if pairs:
            conn.execute(sa.insert(named), pairs)
        last = rows[-1][0]


def downgrade() -> None:
    op.drop_table("sec_audit_patient")
