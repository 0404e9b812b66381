"""outbox headers, touch trace

Outbox rows keep the Kafka headers of their message, and a touch keeps the trace id of the event
that planned it, so every lifecycle message of the touch — scheduled now, sent days later —
carries that trace in its ``traceparent`` header.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-01 09:00:00.000000
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Both nullable: rows written by the previous release (still running during a rollout), and
    # touches planned by the calendar rather than by an event, have no trace.
    with op.batch_alter_table("outbox", schema=None) as batch_op:
        batch_op.add_column(sa.Column("headers", sa.JSON(), nullable=True))

    with op.batch_alter_table("touches", schema=None) as batch_op:
        batch_op.add_column(sa.Column("trace_id", sa.String(length=64), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("touches", schema=None) as batch_op:
        batch_op.drop_column("trace_id")

    with op.batch_alter_table("outbox", schema=None) as batch_op:
        batch_op.drop_column("headers")
