"""Outreach's own tables (nobody else reads them)."""

from sqlalchemy import JSON, Column, Integer, MetaData, String, Table

from shared.db import UTCDateTime
from shared.ledger import outbox_table, processed_events_table

metadata = MetaData()

# Event-carried state: the part of each customer file outreach needs, from huitou.customers.
customers = Table(
    "customers",
    metadata,
    Column("customer_id", String(200), primary_key=True),
    Column("version", Integer, nullable=False),
    Column("snapshot", JSON, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
)

touches = Table(
    "touches",
    metadata,
    Column("touch_id", String(64), primary_key=True),
    Column("customer_id", String(200), nullable=False, index=True),
    Column("plan", String(100), nullable=False),
    Column("channel", String(20)),
    Column("status", String(20), nullable=False, index=True),
    Column("due_at", UTCDateTime, nullable=False, index=True),
    Column("idempotency_key", String(300), nullable=False, unique=True),
    Column("cause_event_id", String(200), nullable=False),
    Column("reason", String(500)),
    Column("created_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
)

processed_events = processed_events_table(metadata)
outbox = outbox_table(metadata)
