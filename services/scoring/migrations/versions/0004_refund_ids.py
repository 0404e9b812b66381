"""refund ids

A shop's refund id, kept with each refund and unique per customer and order, so a refund resent
under a new event id is counted once.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-24 03:00:00.000000
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Nullable: refunds booked before this release, and shops that send no refund id, have none.
    with op.batch_alter_table("refunds", schema=None) as batch_op:
        batch_op.add_column(sa.Column("refund_id", sa.String(length=200), nullable=True))
        batch_op.create_index("uq_refunds_refund_id", ["customer_id", "order_id", "refund_id"], unique=True)


def downgrade() -> None:
    with op.batch_alter_table("refunds", schema=None) as batch_op:
        batch_op.drop_index("uq_refunds_refund_id")
        batch_op.drop_column("refund_id")
