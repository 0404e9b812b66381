"""Scoring's own tables (nobody else reads them)."""

from sqlalchemy import JSON, Column, Integer, MetaData, String, Table

from shared.db import Money, UTCDateTime
from shared.ledger import outbox_table, processed_events_table

metadata = MetaData()

customer_files = Table(
    "customer_files",
    metadata,
    Column("customer_id", String(200), primary_key=True),
    Column("version", Integer, nullable=False),
    Column("profile", JSON, nullable=False),
    Column("consents", JSON, nullable=False),
    Column("interactions", JSON, nullable=False),
    Column("order_count", Integer, nullable=False),
    Column("revenue", Money, nullable=False),
    Column("refunded", Money, nullable=False),
    Column("first_purchase_at", UTCDateTime),
    Column("last_purchase_at", UTCDateTime, index=True),
    Column("created_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
)

orders = Table(
    "orders",
    metadata,
    Column("customer_id", String(200), primary_key=True),
    Column("order_id", String(200), primary_key=True),
    Column("event_id", String(200), nullable=False),
    Column("amount", Money, nullable=False),
    Column("refunded", Money, nullable=False),
    Column("currency", String(3), nullable=False),
    Column("margin", Money),
    Column("items", JSON, nullable=False),
    Column("occurred_at", UTCDateTime, nullable=False),
)

processed_events = processed_events_table(metadata)
outbox = outbox_table(metadata)
