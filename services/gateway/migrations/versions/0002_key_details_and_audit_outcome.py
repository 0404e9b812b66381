"""key details and audit outcome

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-23 23:30:02.300748
"""

import sqlalchemy as sa
from alembic import op

import shared.db

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("api_keys", schema=None) as batch_op:
        batch_op.add_column(sa.Column("key_prefix", sa.String(length=16), nullable=True))
        batch_op.add_column(sa.Column("description", sa.String(length=300), nullable=True))
        batch_op.add_column(sa.Column("created_by", sa.String(length=100), nullable=True))
        batch_op.add_column(sa.Column("rotated_at", shared.db.UTCDateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column("updated_at", shared.db.UTCDateTime(timezone=True), nullable=True))

    with op.batch_alter_table("audit_log", schema=None) as batch_op:
        batch_op.add_column(sa.Column("status", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("customer_id", sa.String(length=200), nullable=True))
        batch_op.create_index(batch_op.f("ix_audit_log_actor"), ["actor"], unique=False)
        batch_op.create_index(batch_op.f("ix_audit_log_customer_id"), ["customer_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("audit_log", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_audit_log_customer_id"))
        batch_op.drop_index(batch_op.f("ix_audit_log_actor"))
        batch_op.drop_column("customer_id")
        batch_op.drop_column("status")

    with op.batch_alter_table("api_keys", schema=None) as batch_op:
        batch_op.drop_column("updated_at")
        batch_op.drop_column("rotated_at")
        batch_op.drop_column("created_by")
        batch_op.drop_column("description")
        batch_op.drop_column("key_prefix")
