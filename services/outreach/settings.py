"""Outreach's one Settings class (env prefix ``HUITOU_OUTREACH_``)."""

from datetime import timedelta

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from shared.settings import ServiceSettings


class OutreachSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="HUITOU_OUTREACH_", populate_by_name=True, extra="ignore")

    service_name: str = "outreach"
    port: int = 8003
    consumer_group: str = "huitou-outreach"
    follow_up_delay: timedelta = Field(
        timedelta(days=3),
        description="post-purchase follow-up after this long (ISO-8601 like P3D or seconds); "
        "DOMAIN.md §4 suggests day 3",
    )
