"""source key hint and updated_at

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-23 23:29:55.979389
"""

import sqlalchemy as sa
from alembic import op

import shared.db

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Both nullable: sources registered before this revision simply have no hint yet.
    with op.batch_alter_table("sources", schema=None) as batch_op:
        batch_op.add_column(sa.Column("key_hint", sa.String(length=16), nullable=True))
        batch_op.add_column(sa.Column("updated_at", shared.db.UTCDateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("sources", schema=None) as batch_op:
        batch_op.drop_column("updated_at")
        batch_op.drop_column("key_hint")
