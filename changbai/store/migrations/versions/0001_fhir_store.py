"""FHIR store: resources, versions, search indexes, outbox

Revision ID: 0001
Revises: 
Create Date: 2026-11-23 11:51:03.644005
"""

from alembic import op
import sqlalchemy as sa


revision = '0001'
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('idx_date',
    sa.Column('rid', sa.BigInteger(), nullable=False),
    sa.Column('rtype', sa.String(length=64), nullable=False),
    sa.Column('param', sa.String(length=100), nullable=False),
    sa.Column('low', sa.BigInteger(), nullable=False),
    sa.Column('high', sa.BigInteger(), nullable=False)
    )
    with op.batch_alter_table('idx_date', schema=None) as batch_op:
        batch_op.create_index('ix_idx_date_rid', ['rid'], unique=False)
        batch_op.create_index('ix_idx_date_rtype_param_high', ['rtype', 'param', 'high'], unique=False)
        batch_op.create_index('ix_idx_date_rtype_param_low', ['rtype', 'param', 'low'], unique=False)

    op.create_table('idx_number',
    sa.Column('rid', sa.BigInteger(), nullable=False),
    sa.Column('rtype', sa.String(length=64), nullable=False),
    sa.Column('param', sa.String(length=100), nullable=False),
    sa.Column('value', sa.Float(), nullable=False),
    sa.Column('low', sa.Float(), nullable=False),
    sa.Column('high', sa.Float(), nullable=False)
    )
    with op.batch_alter_table('idx_number', schema=None) as batch_op:
        batch_op.create_index('ix_idx_number_rid', ['rid'], unique=False)
        batch_op.create_index('ix_idx_number_rtype_param_value', ['rtype', 'param', 'value'], unique=False)

    op.create_table('idx_quantity',
    sa.Column('rid', sa.BigInteger(), nullable=False),
    sa.Column('rtype', sa.String(length=64), nullable=False),
    sa.Column('param', sa.String(length=100), nullable=False),
    sa.Column('system', sa.String(length=256), nullable=True),
    sa.Column('code', sa.String(length=64), nullable=True),
    sa.Column('unit', sa.String(length=64), nullable=True),
    sa.Column('value', sa.Float(), nullable=False),
    sa.Column('low', sa.Float(), nullable=False),
    sa.Column('high', sa.Float(), nullable=False),
    sa.Column('canonical_code', sa.String(length=64), nullable=True),
    sa.Column('canonical_value', sa.Float(), nullable=True)
    )
    with op.batch_alter_table('idx_quantity', schema=None) as batch_op:
        batch_op.create_index('ix_idx_quantity_rid', ['rid'], unique=False)
        batch_op.create_index('ix_idx_quantity_rtype_param_canonical_code_canonical_value', ['rtype', 'param', 'canonical_code', 'canonical_value'], unique=False)
        batch_op.create_index('ix_idx_quantity_rtype_param_code_value', ['rtype', 'param', 'code', 'value'], unique=False)

    op.create_table('idx_reference',
    sa.Column('rid', sa.BigInteger(), nullable=False),
    sa.Column('rtype', sa.String(length=64), nullable=False),
    sa.Column('param', sa.String(length=100), nullable=False),
    sa.Column('target_type', sa.String(length=64), nullable=True),
    sa.Column('target_id', sa.String(length=64), nullable=True),
    sa.Column('target_version', sa.String(length=64), nullable=True),
    sa.Column('url', sa.String(length=512), nullable=True)
    )
    with op.batch_alter_table('idx_reference', schema=None) as batch_op:
        batch_op.create_index('ix_idx_reference_rid', ['rid'], unique=False)
        batch_op.create_index('ix_idx_reference_rtype_param_target_id_target_type', ['rtype', 'param', 'target_id', 'target_type'], unique=False)
        batch_op.create_index('ix_idx_reference_target_type_target_id', ['target_type', 'target_id'], unique=False)

    op.create_table('idx_string',
    sa.Column('rid', sa.BigInteger(), nullable=False),
    sa.Column('rtype', sa.String(length=64), nullable=False),
    sa.Column('param', sa.String(length=100), nullable=False),
    sa.Column('value', sa.String(length=512), nullable=False),
    sa.Column('exact', sa.String(length=512), nullable=False)
    )
    with op.batch_alter_table('idx_string', schema=None) as batch_op:
        batch_op.create_index('ix_idx_string_rid', ['rid'], unique=False)
        batch_op.create_index('ix_idx_string_rtype_param_value', ['rtype', 'param', 'value'], unique=False)

    op.create_table('idx_token',
    sa.Column('rid', sa.BigInteger(), nullable=False),
    sa.Column('rtype', sa.String(length=64), nullable=False),
    sa.Column('param', sa.String(length=100), nullable=False),
    sa.Column('system', sa.String(length=256), nullable=True),
    sa.Column('code', sa.String(length=256), nullable=True),
    sa.Column('text', sa.String(length=512), nullable=True)
    )
    with op.batch_alter_table('idx_token', schema=None) as batch_op:
        batch_op.create_index('ix_idx_token_rid', ['rid'], unique=False)
        batch_op.create_index('ix_idx_token_rtype_param_code_system', ['rtype', 'param', 'code', 'system'], unique=False)

    op.create_table('idx_uri',
    sa.Column('rid', sa.BigInteger(), nullable=False),
    sa.Column('rtype', sa.String(length=64), nullable=False),
    sa.Column('param', sa.String(length=100), nullable=False),
    sa.Column('uri', sa.String(length=512), nullable=False)
    )
    with op.batch_alter_table('idx_uri', schema=None) as batch_op:
        batch_op.create_index('ix_idx_uri_rid', ['rid'], unique=False)
        batch_op.create_index('ix_idx_uri_rtype_param_uri', ['rtype', 'param', 'uri'], unique=False)

    op.create_table('outbox',
    sa.Column('seq', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('rtype', sa.String(length=64), nullable=False),
    sa.Column('id', sa.String(length=64), nullable=False),
    sa.Column('version', sa.Integer(), nullable=False),
    sa.Column('action', sa.String(length=16), nullable=False),
    sa.Column('created', sa.BigInteger(), nullable=False),
    sa.PrimaryKeyConstraint('seq')
    )
    op.create_table('resource',
    sa.Column('rid', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('rtype', sa.String(length=64), nullable=False),
    sa.Column('id', sa.String(length=64), nullable=False),
    sa.Column('version', sa.Integer(), nullable=False),
    sa.Column('last_updated', sa.BigInteger(), nullable=False),
    sa.Column('deleted', sa.Boolean(), nullable=False),
    sa.PrimaryKeyConstraint('rid')
    )
    with op.batch_alter_table('resource', schema=None) as batch_op:
        batch_op.create_index('ix_resource_type_updated', ['rtype', 'last_updated'], unique=False)
        batch_op.create_index('ux_resource_type_id', ['rtype', 'id'], unique=True)

    op.create_table('resource_version',
    sa.Column('vid', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('rid', sa.BigInteger(), nullable=False),
    sa.Column('rtype', sa.String(length=64), nullable=False),
    sa.Column('id', sa.String(length=64), nullable=False),
    sa.Column('version', sa.Integer(), nullable=False),
    sa.Column('last_updated', sa.BigInteger(), nullable=False),
    sa.Column('method', sa.String(length=8), nullable=False),
    sa.Column('deleted', sa.Boolean(), nullable=False),
    sa.Column('content', sa.Text(), nullable=True),
    sa.ForeignKeyConstraint(['rid'], ['resource.rid'], ),
    sa.PrimaryKeyConstraint('vid')
    )
    with op.batch_alter_table('resource_version', schema=None) as batch_op:
        batch_op.create_index('ix_version_type_updated', ['rtype', 'last_updated'], unique=False)
        batch_op.create_index('ix_version_updated', ['last_updated'], unique=False)
        batch_op.create_index('ux_version_rid_version', ['rid', 'version'], unique=True)



def downgrade() -> None:
    with op.batch_alter_table('resource_version', schema=None) as batch_op:
        batch_op.drop_index('ux_version_rid_version')
        batch_op.drop_index('ix_version_updated')
        batch_op.drop_index('ix_version_type_updated')

    op.drop_table('resource_version')
    with op.batch_alter_table('resource', schema=None) as batch_op:
        batch_op.drop_index('ux_resource_type_id')
        batch_op.drop_index('ix_resource_type_updated')

    op.drop_table('resource')
    op.drop_table('outbox')
    with op.batch_alter_table('idx_uri', schema=None) as batch_op:
        batch_op.drop_index('ix_idx_uri_rtype_param_uri')
        batch_op.drop_index('ix_idx_uri_rid')

    op.drop_table('idx_uri')
    with op.batch_alter_table('idx_token', schema=None) as batch_op:
        batch_op.drop_index('ix_idx_token_rtype_param_code_system')
        batch_op.drop_index('ix_idx_token_rid')

    op.drop_table('idx_token')
    with op.batch_alter_table('idx_string', schema=None) as batch_op:
        batch_op.drop_index('ix_idx_string_rtype_param_value')
        batch_op.drop_index('ix_idx_string_rid')

    op.drop_table('idx_string')
    with op.batch_alter_table('idx_reference', schema=None) as batch_op:
        batch_op.drop_index('ix_idx_reference_target_type_target_id')
        batch_op.drop_index('ix_idx_reference_rtype_param_target_id_target_type')
        batch_op.drop_index('ix_idx_reference_rid')

    op.drop_table('idx_reference')
    with op.batch_alter_table('idx_quantity', schema=None) as batch_op:
        batch_op.drop_index('ix_idx_quantity_rtype_param_code_value')
        batch_op.drop_index('ix_idx_quantity_rtype_param_canonical_code_canonical_value')
        batch_op.drop_index('ix_idx_quantity_rid')

    op.drop_table('idx_quantity')
    with op.batch_alter_table('idx_number', schema=None) as batch_op:
        batch_op.drop_index('ix_idx_number_rtype_param_value')
        batch_op.drop_index('ix_idx_number_rid')

    op.drop_table('idx_number')
    with op.batch_alter_table('idx_date', schema=None) as batch_op:
        batch_op.drop_index('ix_idx_date_rtype_param_low')
        batch_op.drop_index('ix_idx_date_rtype_param_high')
        batch_op.drop_index('ix_idx_date_rid')

    op.drop_table('idx_date')
