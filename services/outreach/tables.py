"""Outreach's own tables (nobody else reads them)."""

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    Index,
    Integer,
    MetaData,
    PrimaryKeyConstraint,
    String,
    Table,
    Text,
    false,
    text,
)

from shared.db import Money, UTCDateTime
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

# Status: pending_approval, scheduled, sending, sent, suppressed, failed, cancelled, converted.
touches = Table(
    "touches",
    metadata,
    Column("touch_id", String(64), primary_key=True),
    Column("customer_id", String(200), nullable=False),
    Column("plan", String(100), nullable=False),
    Column("channel", String(20)),
    Column("status", String(20), nullable=False),
    Column("due_at", UTCDateTime, nullable=False, index=True),
    Column("idempotency_key", String(300), nullable=False, unique=True),
    Column("cause_event_id", String(200), nullable=False),
    Column("reason", String(500)),
    Column("created_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
    Column("plan_version", Integer),
    Column("purpose", String(20), nullable=False, server_default="marketing"),
    Column("priority", Integer, nullable=False, server_default="50"),
    Column("holdout", Boolean, nullable=False, server_default=false()),
    Column("expires_at", UTCDateTime),
    Column("attribution_seconds", Integer, nullable=False, server_default=str(7 * 86400)),
    Column("context", JSON),
    Column("offer", JSON),
    Column("offer_value", Money),
    Column("locale", String(10)),
    Column("attempts", Integer, nullable=False, server_default="0"),
    Column("lease_until", UTCDateTime),
    Column("lease_owner", String(100)),
    Column("message_id", String(300)),
    Column("sent_at", UTCDateTime),
    Column("converted_at", UTCDateTime),
    Column("converted_order_id", String(200)),
    Column("revenue", Money),
    Column("approved_by", String(200)),
    # The trace of the event that planned the touch, carried by every lifecycle message of it.
    Column("trace_id", String(64)),
    Index("ix_touches_status_due", "status", "due_at"),
    Index("ix_touches_customer_plan", "customer_id", "plan"),
    # A planning batch reads every key of its customers' touches: from the index alone (0004).
    Index("ix_touches_customer_key", "customer_id", "idempotency_key"),
    # An offer budget sums the plan's offers of the period; most touches carry none (0004).
    Index(
        "ix_touches_plan_offer",
        "plan",
        "created_at",
        sqlite_where=text("offer_value IS NOT NULL"),
        postgresql_where=text("offer_value IS NOT NULL"),
    ),
)

# One row per send attempt: preparing → sending → sent | failed | unknown. A 'sending' row whose
# lease expired means the process died after the point of no return was armed.
touch_attempts = Table(
    "touch_attempts",
    metadata,
    Column("attempt_id", String(100), primary_key=True),
    Column("touch_id", String(64), nullable=False, index=True),
    Column("number", Integer, nullable=False),
    Column("channel", String(20), nullable=False),
    Column("state", String(20), nullable=False, index=True),
    Column("lease_until", UTCDateTime, nullable=False),
    Column("started_at", UTCDateTime, nullable=False),
    Column("finished_at", UTCDateTime),
    Column("detail", String(1000)),
)

# Explicit consent decisions seen by outreach (consent events, unsubscribe links).
consents = Table(
    "consents",
    metadata,
    Column("customer_id", String(200), nullable=False),
    Column("channel", String(20), nullable=False),
    Column("purpose", String(20), nullable=False),
    Column("granted", Boolean, nullable=False),
    Column("occurred_at", UTCDateTime, nullable=False),
    Column("source", String(50), nullable=False),
    Column("event_id", String(200)),
    PrimaryKeyConstraint("customer_id", "channel", "purpose"),
)

# Every suppression with its reason (also the holdout's would-have-been touches).
suppressions = Table(
    "suppressions",
    metadata,
    Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True),
    Column("touch_id", String(64), index=True),
    Column("customer_id", String(200), nullable=False, index=True),
    Column("plan", String(100), nullable=False),
    Column("reason", String(500), nullable=False),
    Column("at", UTCDateTime, nullable=False, index=True),
)

operator_tasks = Table(
    "operator_tasks",
    metadata,
    Column("task_id", String(64), primary_key=True),
    Column("customer_id", String(200), nullable=False, index=True),
    Column("touch_id", String(64)),
    Column("kind", String(50), nullable=False),
    Column("status", String(20), nullable=False, index=True),
    Column("summary", Text, nullable=False),
    Column("acknowledge_by", UTCDateTime, nullable=False),
    Column("resolve_by", UTCDateTime, nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("resolved_at", UTCDateTime),
    Column("resolved_by", String(200)),
    Column("resolution", Text),
)

care_plans = Table(
    "care_plans",
    metadata,
    Column("name", String(64), primary_key=True),
    Column("version", Integer, nullable=False),
    Column("definition", JSON, nullable=False),
    Column("origin", String(20), nullable=False),  # default (shipped, refreshed) or operator (edited)
    Column("deleted", Boolean, nullable=False, server_default=false()),
    Column("updated_at", UTCDateTime, nullable=False),
    Column("updated_by", String(200)),
)

care_plan_versions = Table(
    "care_plan_versions",
    metadata,
    Column("name", String(64), nullable=False),
    Column("version", Integer, nullable=False),
    Column("definition", JSON, nullable=False),
    Column("action", String(20), nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("created_by", String(200)),
    PrimaryKeyConstraint("name", "version"),
)

templates = Table(
    "templates",
    metadata,
    Column("name", String(64), primary_key=True),
    Column("version", Integer, nullable=False),
    Column("locales", JSON, nullable=False),
    Column("origin", String(20), nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
    Column("updated_by", String(200)),
)

# Erased customers: only the id and when, so a late event cannot bring their data back.
erasures = Table(
    "erasures",
    metadata,
    Column("customer_id", String(200), primary_key=True),
    Column("version", Integer, nullable=False, server_default=text("0")),
    Column("erased_at", UTCDateTime, nullable=False),
)

processed_events = processed_events_table(metadata)
outbox = outbox_table(metadata)
