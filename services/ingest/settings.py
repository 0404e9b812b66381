"""Ingest's one Settings class (env prefix ``HUITOU_INGEST_``)."""

from datetime import timedelta

from pydantic import AliasChoices, Field
from pydantic_settings import SettingsConfigDict

from shared.settings import ServiceSettings, is_placeholder


class IngestSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="HUITOU_INGEST_", populate_by_name=True, extra="ignore")

    service_name: str = "ingest"
    port: int = 8001
    write_key: str | None = Field(
        None,
        validation_alias=AliasChoices("HUITOU_INGEST_WRITE_KEY", "HUITOU_DEV_WRITE_KEY", "write_key"),
        description="a write key registered at start-up for source `write_key_source`",
    )
    write_key_source: str = "default"
    max_event_bytes: int = Field(32 * 1024, description="Segment's per-event limit")
    max_request_bytes: int = Field(500 * 1024, description="Segment's per-batch limit")
    dedupe_window: timedelta = Field(timedelta(days=7), description="how long an event_id is remembered")
    retry_after_seconds: int = 5

    def production_problems(self) -> list[str]:
        problems = super().production_problems()
        if self.write_key is not None and is_placeholder(self.write_key):
            problems.append("HUITOU_INGEST_WRITE_KEY must be a random secret of at least 16 characters")
        return problems
