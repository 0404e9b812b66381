"""Gateway's own tables: API keys (hashed) and the audit log."""

from sqlalchemy import JSON, Boolean, Column, Integer, MetaData, String, Table

from shared.db import UTCDateTime

metadata = MetaData()

api_keys = Table(
    "api_keys",
    metadata,
    Column("name", String(100), primary_key=True),
    Column("key_hash", String(64), nullable=False, unique=True),
    Column("role", String(20), nullable=False),
    Column("enabled", Boolean, nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    # Added in 0002: enough to recognise a key without its secret, and its history.
    Column("key_prefix", String(16)),
    Column("description", String(300)),
    Column("created_by", String(100)),
    Column("rotated_at", UTCDateTime),
    Column("updated_at", UTCDateTime),
)

audit_log = Table(
    "audit_log",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("at", UTCDateTime, nullable=False, index=True),
    Column("actor", String(100), nullable=False, index=True),
    Column("action", String(100), nullable=False),
    Column("target", String(300), nullable=False),
    Column("before", JSON),
    Column("after", JSON),
    # Added in 0002: the outcome, and the customer a write concerned (for export and erasure).
    Column("status", Integer),
    Column("customer_id", String(200), index=True),
)
