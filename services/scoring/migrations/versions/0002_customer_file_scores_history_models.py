"""customer file scores history models

The rest of the customer file (engagement, complaints, categories, tags, contacts, notes), refunds
and referrals as their own order-independent records, every score as a column (to filter and
sort on), the history of score changes, model snapshots, the replay clock and task leases.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-23 23:34:54.783037
"""

import sqlalchemy as sa
from alembic import op

import shared.db

revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Columns added to customer_files get server defaults so files written by 0001 stay valid;
    # their scores are NULL until the next event or the lapse sweep (which picks unscored files).
    op.create_table('clock',
    sa.Column('name', sa.String(length=40), nullable=False),
    sa.Column('at', shared.db.UTCDateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('name')
    )
    op.create_table('contacts',
    sa.Column('customer_id', sa.String(length=200), nullable=False),
    sa.Column('contact_id', sa.String(length=64), nullable=False),
    sa.Column('name', sa.String(length=200), nullable=False),
    sa.Column('email', sa.String(length=320), nullable=True),
    sa.Column('phone', sa.String(length=40), nullable=True),
    sa.Column('role', sa.String(length=100), nullable=True),
    sa.Column('is_primary', sa.Boolean(), nullable=False),
    sa.Column('created_at', shared.db.UTCDateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('customer_id', 'contact_id')
    )
    op.create_table('customer_tags',
    sa.Column('customer_id', sa.String(length=200), nullable=False),
    sa.Column('tag', sa.String(length=100), nullable=False),
    sa.Column('added_at', shared.db.UTCDateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('customer_id', 'tag')
    )
    with op.batch_alter_table('customer_tags', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_customer_tags_tag'), ['tag'], unique=False)

    op.create_table('leases',
    sa.Column('name', sa.String(length=40), nullable=False),
    sa.Column('holder', sa.String(length=100), nullable=False),
    sa.Column('expires_at', shared.db.UTCDateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('name')
    )
    op.create_table('model_snapshots',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('fitted_at', shared.db.UTCDateTime(timezone=True), nullable=False),
    sa.Column('as_of', shared.db.UTCDateTime(timezone=True), nullable=False),
    sa.Column('trigger', sa.String(length=40), nullable=False),
    sa.Column('time_unit_days', sa.Float(), nullable=False),
    sa.Column('n_customers', sa.Integer(), nullable=False),
    sa.Column('n_repeaters', sa.Integer(), nullable=False),
    sa.Column('log_likelihood', sa.Float(), nullable=False),
    sa.Column('statistics', sa.JSON(), nullable=False),
    sa.Column('rescore_cursor', sa.String(length=200), nullable=True),
    sa.Column('rescored_at', shared.db.UTCDateTime(timezone=True), nullable=True),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_table('notes',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('customer_id', sa.String(length=200), nullable=False),
    sa.Column('text', sa.Text(), nullable=False),
    sa.Column('author', sa.String(length=200), nullable=True),
    sa.Column('created_at', shared.db.UTCDateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('notes', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_notes_customer_id'), ['customer_id'], unique=False)

    op.create_table('referrals',
    sa.Column('referrer_id', sa.String(length=200), nullable=False),
    sa.Column('referred_customer_id', sa.String(length=200), nullable=False),
    sa.Column('occurred_at', shared.db.UTCDateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('referrer_id', 'referred_customer_id')
    )
    with op.batch_alter_table('referrals', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_referrals_referred_customer_id'), ['referred_customer_id'], unique=False)

    op.create_table('refunds',
    sa.Column('customer_id', sa.String(length=200), nullable=False),
    sa.Column('event_id', sa.String(length=200), nullable=False),
    sa.Column('order_id', sa.String(length=200), nullable=False),
    sa.Column('amount', shared.db.Money(), nullable=False),
    sa.Column('reason', sa.String(length=500), nullable=True),
    sa.Column('occurred_at', shared.db.UTCDateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('customer_id', 'event_id')
    )
    with op.batch_alter_table('refunds', schema=None) as batch_op:
        batch_op.create_index('ix_refunds_customer_order', ['customer_id', 'order_id'], unique=False)

    op.create_table('score_history',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('customer_id', sa.String(length=200), nullable=False),
    sa.Column('field', sa.String(length=40), nullable=False),
    sa.Column('before', sa.JSON(), nullable=True),
    sa.Column('after', sa.JSON(), nullable=True),
    sa.Column('reason', sa.Text(), nullable=False),
    sa.Column('cause_type', sa.String(length=40), nullable=False),
    sa.Column('cause_event_id', sa.String(length=200), nullable=False),
    sa.Column('as_of', shared.db.UTCDateTime(timezone=True), nullable=False),
    sa.Column('recorded_at', shared.db.UTCDateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('score_history', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_score_history_customer_id'), ['customer_id'], unique=False)

    with op.batch_alter_table('customer_files', schema=None) as batch_op:
        batch_op.add_column(sa.Column('margin', shared.db.Money(), nullable=False, server_default=sa.text("'0'")))
        batch_op.add_column(sa.Column('engagement', sa.JSON(), nullable=False, server_default=sa.text("'{}'")))
        batch_op.add_column(sa.Column('complaints', sa.JSON(), nullable=False, server_default=sa.text("'{}'")))
        batch_op.add_column(sa.Column('categories', sa.JSON(), nullable=False, server_default=sa.text("'{}'")))
        batch_op.add_column(sa.Column('unmatched_refunds', sa.JSON(), nullable=False, server_default=sa.text("'{}'")))
        batch_op.add_column(sa.Column('last_order', sa.JSON(), nullable=True))
        batch_op.add_column(sa.Column('share_of_wallet', sa.JSON(), nullable=True))
        batch_op.add_column(sa.Column('referral_count', sa.Integer(), nullable=False, server_default=sa.text("'0'")))
        batch_op.add_column(sa.Column('contact_count', sa.Integer(), nullable=False, server_default=sa.text("'0'")))
        batch_op.add_column(sa.Column('tags', sa.JSON(), nullable=False, server_default=sa.text("'[]'")))
        batch_op.add_column(sa.Column('tier_override', sa.String(length=1), nullable=True))
        batch_op.add_column(sa.Column('tier_override_reason', sa.String(length=500), nullable=True))
        batch_op.add_column(sa.Column('last_event_at', shared.db.UTCDateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column('scored_as_of', shared.db.UTCDateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column('model_id', sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column('occasion_count', sa.Integer(), nullable=False, server_default=sa.text("'0'")))
        batch_op.add_column(sa.Column('stage', sa.String(length=20), nullable=True))
        batch_op.add_column(sa.Column('rhythm_days', sa.Float(), nullable=True))
        batch_op.add_column(sa.Column('value_tier', sa.String(length=1), nullable=True))
        batch_op.add_column(sa.Column('computed_tier', sa.String(length=1), nullable=True))
        batch_op.add_column(sa.Column('tier_value', shared.db.Money(), nullable=True))
        batch_op.add_column(sa.Column('grade', sa.String(length=40), nullable=True))
        batch_op.add_column(sa.Column('rfm', sa.String(length=3), nullable=True))
        batch_op.add_column(sa.Column('p_alive', sa.Float(), nullable=True))
        batch_op.add_column(sa.Column('p_no_purchase_90d', sa.Float(), nullable=True))
        batch_op.add_column(sa.Column('churn_band', sa.String(length=10), nullable=True))
        batch_op.add_column(sa.Column('expected_purchases_90d', sa.Float(), nullable=True))
        batch_op.add_column(sa.Column('expected_purchases_365d', sa.Float(), nullable=True))
        batch_op.add_column(sa.Column('expected_spend', shared.db.Money(), nullable=True))
        batch_op.add_column(sa.Column('clv_365', shared.db.Money(), nullable=True))
        batch_op.add_column(sa.Column('expected_next_order_at', shared.db.UTCDateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column('loyalty_index', sa.Float(), nullable=True))
        batch_op.add_column(sa.Column('satisfaction_level', sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column('loyalty_quadrant', sa.String(length=20), nullable=True))
        batch_op.add_column(sa.Column('relationship_type', sa.String(length=20), nullable=True))
        batch_op.add_column(sa.Column('prospect_grade', sa.String(length=1), nullable=True))
        batch_op.add_column(sa.Column('score_details', sa.JSON(), nullable=False, server_default=sa.text("'{}'")))
        batch_op.add_column(sa.Column('next_check_at', shared.db.UTCDateTime(timezone=True), nullable=True))
        batch_op.create_index(batch_op.f('ix_customer_files_churn_band'), ['churn_band'], unique=False)
        batch_op.create_index(batch_op.f('ix_customer_files_clv_365'), ['clv_365'], unique=False)
        batch_op.create_index(batch_op.f('ix_customer_files_grade'), ['grade'], unique=False)
        batch_op.create_index(batch_op.f('ix_customer_files_last_event_at'), ['last_event_at'], unique=False)
        batch_op.create_index(batch_op.f('ix_customer_files_next_check_at'), ['next_check_at'], unique=False)
        batch_op.create_index(batch_op.f('ix_customer_files_stage'), ['stage'], unique=False)
        batch_op.create_index(batch_op.f('ix_customer_files_value_tier'), ['value_tier'], unique=False)

    # ### end Alembic commands ###


def downgrade() -> None:
    # ### commands auto generated by Alembic - please adjust! ###
    with op.batch_alter_table('customer_files', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_customer_files_value_tier'))
        batch_op.drop_index(batch_op.f('ix_customer_files_stage'))
        batch_op.drop_index(batch_op.f('ix_customer_files_next_check_at'))
        batch_op.drop_index(batch_op.f('ix_customer_files_last_event_at'))
        batch_op.drop_index(batch_op.f('ix_customer_files_grade'))
        batch_op.drop_index(batch_op.f('ix_customer_files_clv_365'))
        batch_op.drop_index(batch_op.f('ix_customer_files_churn_band'))
        batch_op.drop_column('next_check_at')
        batch_op.drop_column('score_details')
        batch_op.drop_column('prospect_grade')
        batch_op.drop_column('relationship_type')
        batch_op.drop_column('loyalty_quadrant')
        batch_op.drop_column('satisfaction_level')
        batch_op.drop_column('loyalty_index')
        batch_op.drop_column('expected_next_order_at')
        batch_op.drop_column('clv_365')
        batch_op.drop_column('expected_spend')
        batch_op.drop_column('expected_purchases_365d')
        batch_op.drop_column('expected_purchases_90d')
        batch_op.drop_column('churn_band')
        batch_op.drop_column('p_no_purchase_90d')
        batch_op.drop_column('p_alive')
        batch_op.drop_column('rfm')
        batch_op.drop_column('grade')
        batch_op.drop_column('tier_value')
        batch_op.drop_column('computed_tier')
        batch_op.drop_column('value_tier')
        batch_op.drop_column('rhythm_days')
        batch_op.drop_column('stage')
        batch_op.drop_column('occasion_count')
        batch_op.drop_column('model_id')
        batch_op.drop_column('scored_as_of')
        batch_op.drop_column('last_event_at')
        batch_op.drop_column('tier_override_reason')
        batch_op.drop_column('tier_override')
        batch_op.drop_column('tags')
        batch_op.drop_column('contact_count')
        batch_op.drop_column('referral_count')
        batch_op.drop_column('share_of_wallet')
        batch_op.drop_column('last_order')
        batch_op.drop_column('unmatched_refunds')
        batch_op.drop_column('categories')
        batch_op.drop_column('complaints')
        batch_op.drop_column('engagement')
        batch_op.drop_column('margin')

    with op.batch_alter_table('score_history', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_score_history_customer_id'))

    op.drop_table('score_history')
    with op.batch_alter_table('refunds', schema=None) as batch_op:
        batch_op.drop_index('ix_refunds_customer_order')

    op.drop_table('refunds')
    with op.batch_alter_table('referrals', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_referrals_referred_customer_id'))

    op.drop_table('referrals')
    with op.batch_alter_table('notes', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_notes_customer_id'))

    op.drop_table('notes')
    op.drop_table('model_snapshots')
    op.drop_table('leases')
    with op.batch_alter_table('customer_tags', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_customer_tags_tag'))

    op.drop_table('customer_tags')
    op.drop_table('contacts')
    op.drop_table('clock')
    # ### end Alembic commands ###
