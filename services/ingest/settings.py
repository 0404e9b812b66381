"""Ingest's one Settings class (env prefix ``HUITOU_INGEST_``)."""

from datetime import timedelta
from typing import Self

from pydantic import AliasChoices, Field, model_validator
from pydantic_settings import SettingsConfigDict

from shared.settings import ServiceSettings, is_placeholder


class IngestSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="HUITOU_INGEST_", populate_by_name=True, extra="ignore")

    service_name: str = "ingest"
    port: int = 8001
    workers: int = Field(
        1, ge=1, le=64, description="ingest processes on this port; on Kubernetes scale replicas instead"
    )
    gc_young_threshold: int = Field(
        20_000,
        ge=100,
        description="allocations between young-generation garbage collections (Python's default is 700)",
    )
    write_key: str | None = Field(
        None,
        validation_alias=AliasChoices("HUITOU_INGEST_WRITE_KEY", "HUITOU_DEV_WRITE_KEY", "write_key"),
        description="a write key registered at start-up for source `write_key_source`",
    )
    write_key_source: str = "default"

    # Segment's documented limits; SDKs already split their batches to fit them.
    max_event_bytes: int = Field(32 * 1024, ge=256, description="Segment's per-event limit")
    max_request_bytes: int = Field(
        500 * 1024, ge=1024, description="Segment's per-batch limit; applies to the body after gzip is undone"
    )

    dedupe_window: timedelta = Field(timedelta(days=7), description="how long an event_id is remembered")
    dedupe_prune_interval: timedelta = Field(timedelta(hours=1), description="how often expired ids are forgotten")
    retry_after_seconds: int = Field(5, ge=1, description="Retry-After on 503 (broker unavailable)")

    # Backpressure: requests hold their body bytes and events from arrival until the broker's
    # ack; beyond these, callers get 429 instead of the process growing without bound.
    max_in_flight_events: int = Field(20_000, ge=1, description="events accepted but not yet acknowledged")
    max_in_flight_bytes: int = Field(64 * 1024 * 1024, ge=1024, description="request bytes held in flight")
    busy_retry_after_seconds: int = Field(1, ge=1, description="Retry-After on 429 (over the in-flight budget)")

    publish_linger_ms: float = Field(
        2.0, ge=0, le=100, description="how long concurrent requests are gathered into shared Kafka batches"
    )
    auth_cache_seconds: float = Field(
        5.0, ge=0, description="how long a checked write key is trusted without asking the database again"
    )
    default_currency: str = Field(
        "CNY", pattern=r"^[A-Z]{3}$", description="currency of Segment orders that name none (Segment assumes USD)"
    )
    anonymous_prefix: str = Field(
        "anon:", min_length=1, max_length=20, description="customer id prefix for Segment anonymousIds"
    )
    accept_body_write_key: bool = Field(
        True, description="accept Segment's `writeKey` body field when no Authorization header is sent"
    )
    cors_allow_origins: list[str] = Field(
        ["*"], description="origins whose browsers may post events (analytics.js); JSON list in the env var"
    )

    @model_validator(mode="after")
    def _budget_fits_a_request(self) -> Self:
        if self.max_in_flight_bytes < self.max_request_bytes:
            raise ValueError("HUITOU_INGEST_MAX_IN_FLIGHT_BYTES must be at least HUITOU_INGEST_MAX_REQUEST_BYTES")
        if self.max_event_bytes > self.max_request_bytes:
            raise ValueError("HUITOU_INGEST_MAX_EVENT_BYTES cannot exceed HUITOU_INGEST_MAX_REQUEST_BYTES")
        return self

    def production_problems(self) -> list[str]:
        problems = super().production_problems()
        if self.write_key is not None and is_placeholder(self.write_key):
            problems.append("HUITOU_INGEST_WRITE_KEY must be a random secret of at least 16 characters")
        return problems
