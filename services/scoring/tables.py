"""Scoring's own tables (nobody else reads them)."""

from sqlalchemy import JSON, BigInteger, Boolean, Column, Float, Index, Integer, MetaData, String, Table, Text

from shared.db import Money, UTCDateTime
from shared.ledger import outbox_table, processed_events_table

metadata = MetaData()

_ID = BigInteger().with_variant(Integer, "sqlite")

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
    # --- the rest of the file (0002) ---
    Column("margin", Money, nullable=False),
    Column("engagement", JSON, nullable=False),
    Column("complaints", JSON, nullable=False),
    Column("categories", JSON, nullable=False),
    Column("unmatched_refunds", JSON, nullable=False),
    Column("last_order", JSON),
    Column("share_of_wallet", JSON),
    Column("referral_count", Integer, nullable=False),
    Column("contact_count", Integer, nullable=False),
    Column("tags", JSON, nullable=False),
    Column("tier_override", String(1)),
    Column("tier_override_reason", String(500)),
    Column("last_event_at", UTCDateTime, index=True),
    # --- scores, as of scored_as_of with model snapshot model_id ---
    Column("scored_as_of", UTCDateTime),
    Column("model_id", Integer),
    Column("occasion_count", Integer, nullable=False),
    Column("stage", String(20), index=True),
    Column("rhythm_days", Float),
    Column("value_tier", String(1), index=True),
    Column("computed_tier", String(1)),
    Column("tier_value", Money),
    Column("grade", String(40), index=True),
    Column("rfm", String(3)),
    Column("p_alive", Float),
    Column("p_no_purchase_90d", Float),
    Column("churn_band", String(10), index=True),
    Column("expected_purchases_90d", Float),
    Column("expected_purchases_365d", Float),
    Column("expected_spend", Money),
    Column("clv_365", Money, index=True),
    Column("expected_next_order_at", UTCDateTime),
    Column("loyalty_index", Float),
    Column("satisfaction_level", Integer),
    Column("loyalty_quadrant", String(20)),
    Column("relationship_type", String(20)),
    Column("prospect_grade", String(1)),
    Column("score_details", JSON, nullable=False),
    Column("next_check_at", UTCDateTime, index=True),
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

refunds = Table(
    "refunds",
    metadata,
    Column("customer_id", String(200), primary_key=True),
    Column("event_id", String(200), primary_key=True),
    Column("order_id", String(200), nullable=False),
    Column("refund_id", String(200), nullable=True),
    Column("amount", Money, nullable=False),
    Column("reason", String(500)),
    Column("occurred_at", UTCDateTime, nullable=False),
    Index("ix_refunds_customer_order", "customer_id", "order_id"),
    # A shop's refund id is counted once however often it is resent (NULLs never collide).
    Index("uq_refunds_refund_id", "customer_id", "order_id", "refund_id", unique=True),
)

referrals = Table(
    "referrals",
    metadata,
    Column("referrer_id", String(200), primary_key=True),
    Column("referred_customer_id", String(200), primary_key=True, index=True),
    Column("occurred_at", UTCDateTime, nullable=False),
)

customer_tags = Table(
    "customer_tags",
    metadata,
    Column("customer_id", String(200), primary_key=True),
    Column("tag", String(100), primary_key=True, index=True),
    Column("added_at", UTCDateTime, nullable=False),
)

notes = Table(
    "notes",
    metadata,
    Column("id", _ID, primary_key=True, autoincrement=True),
    Column("customer_id", String(200), nullable=False, index=True),
    Column("text", Text, nullable=False),
    Column("author", String(200)),
    Column("created_at", UTCDateTime, nullable=False),
)

contacts = Table(
    "contacts",
    metadata,
    Column("customer_id", String(200), primary_key=True),
    Column("contact_id", String(64), primary_key=True),
    Column("name", String(200), nullable=False),
    Column("email", String(320)),
    Column("phone", String(40)),
    Column("role", String(100)),
    Column("is_primary", Boolean, nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
)

score_history = Table(
    "score_history",
    metadata,
    Column("id", _ID, primary_key=True, autoincrement=True),
    Column("customer_id", String(200), nullable=False, index=True),
    Column("field", String(40), nullable=False),
    Column("before", JSON),
    Column("after", JSON),
    Column("reason", Text, nullable=False),
    Column("cause_type", String(40), nullable=False),
    Column("cause_event_id", String(200), nullable=False),
    Column("as_of", UTCDateTime, nullable=False),
    Column("recorded_at", UTCDateTime, nullable=False),
)

model_snapshots = Table(
    "model_snapshots",
    metadata,
    Column("id", _ID, primary_key=True, autoincrement=True),
    Column("fitted_at", UTCDateTime, nullable=False),
    Column("as_of", UTCDateTime, nullable=False),
    Column("trigger", String(40), nullable=False),
    Column("time_unit_days", Float, nullable=False),
    Column("n_customers", Integer, nullable=False),
    Column("n_repeaters", Integer, nullable=False),
    Column("log_likelihood", Float, nullable=False),
    Column("statistics", JSON, nullable=False),
    Column("rescore_cursor", String(200)),
    Column("rescored_at", UTCDateTime),
)

clock = Table(
    "clock",
    metadata,
    Column("name", String(40), primary_key=True),
    Column("at", UTCDateTime, nullable=False),
)

leases = Table(
    "leases",
    metadata,
    Column("name", String(40), primary_key=True),
    Column("holder", String(100), nullable=False),
    Column("expires_at", UTCDateTime, nullable=False),
)

processed_events = processed_events_table(metadata)
outbox = outbox_table(metadata)
