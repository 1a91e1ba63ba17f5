"""identity: master index tables

Revision ID: 0006_identity
Revises: 0005_exchange_inbox
Create Date: 2026-11-23 13:11:07.103132
"""

from alembic import op
import sqlalchemy as sa


revision = '0006_identity'
down_revision = '0005_exchange_inbox'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('empi_block',
    sa.Column('block', sa.String(length=300), nullable=False),
    sa.Column('patient', sa.String(length=64), nullable=False),
    sa.PrimaryKeyConstraint('block', 'patient')
    )
    with op.batch_alter_table('empi_block', schema=None) as batch_op:
        batch_op.create_index('ix_empi_block_patient', ['patient'], unique=False)

    op.create_table('empi_distinct',
    sa.Column('a', sa.String(length=64), nullable=False),
    sa.Column('b', sa.String(length=64), nullable=False),
    sa.Column('at', sa.BigInteger(), nullable=False),
    sa.Column('actor', sa.String(length=200), nullable=True),
    sa.PrimaryKeyConstraint('a', 'b')
    )
    op.create_table('empi_event',
    sa.Column('seq', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('at', sa.BigInteger(), nullable=False),
    sa.Column('patient', sa.String(length=64), nullable=False),
    sa.Column('person', sa.String(length=64), nullable=True),
    sa.Column('previous_person', sa.String(length=64), nullable=True),
    sa.Column('action', sa.String(length=32), nullable=False),
    sa.Column('other', sa.String(length=64), nullable=True),
    sa.Column('probability', sa.Float(), nullable=True),
    sa.Column('actor', sa.String(length=200), nullable=True),
    sa.Column('detail', sa.Text(), nullable=True),
    sa.PrimaryKeyConstraint('seq')
    )
    with op.batch_alter_table('empi_event', schema=None) as batch_op:
        batch_op.create_index('ix_empi_event_patient', ['patient', 'seq'], unique=False)

    op.create_table('empi_record',
    sa.Column('patient', sa.String(length=64), nullable=False),
    sa.Column('person', sa.String(length=64), nullable=False),
    sa.Column('row', sa.Text(), nullable=False),
    sa.Column('updated', sa.BigInteger(), nullable=False),
    sa.PrimaryKeyConstraint('patient')
    )
    with op.batch_alter_table('empi_record', schema=None) as batch_op:
        batch_op.create_index('ix_empi_record_person', ['person'], unique=False)

    op.create_table('empi_review',
    sa.Column('patient', sa.String(length=64), nullable=False),
    sa.Column('candidate', sa.String(length=64), nullable=False),
    sa.Column('probability', sa.Float(), nullable=False),
    sa.Column('levels', sa.Text(), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('created', sa.BigInteger(), nullable=False),
    sa.PrimaryKeyConstraint('patient', 'candidate')
    )
    with op.batch_alter_table('empi_review', schema=None) as batch_op:
        batch_op.create_index('ix_empi_review_status', ['status', 'created'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('empi_review', schema=None) as batch_op:
        batch_op.drop_index('ix_empi_review_status')

    op.drop_table('empi_review')
    with op.batch_alter_table('empi_record', schema=None) as batch_op:
        batch_op.drop_index('ix_empi_record_person')

    op.drop_table('empi_record')
    with op.batch_alter_table('empi_event', schema=None) as batch_op:
        batch_op.drop_index('ix_empi_event_patient')

    op.drop_table('empi_event')
    op.drop_table('empi_distinct')
    with op.batch_alter_table('empi_block', schema=None) as batch_op:
        batch_op.drop_index('ix_empi_block_patient')

    op.drop_table('empi_block')
