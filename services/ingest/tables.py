"""Ingest's own tables: event sources with their hashed write keys, and the dedupe window."""

from sqlalchemy import Boolean, Column, MetaData, String, Table

from shared.db import UTCDateTime

metadata = MetaData()

sources = Table(
    "sources",
    metadata,
    Column("name", String(100), primary_key=True),
    Column("key_hash", String(64), nullable=False, unique=True),
    Column("enabled", Boolean, nullable=False, default=True),
    Column("created_at", UTCDateTime, nullable=False),
    # The first characters of the key, so an operator can tell which key a shop holds without
    # the key itself ever being stored.
    Column("key_hint", String(16), nullable=True),
    Column("updated_at", UTCDateTime, nullable=True),
)

seen_events = Table(
    "seen_events",
    metadata,
    Column("event_id", String(200), primary_key=True),
    Column("accepted_at", UTCDateTime, nullable=False, index=True),
)
