"""Scoring's one Settings class (env prefix ``HUITOU_SCORING_``)."""

from pydantic_settings import SettingsConfigDict

from shared.settings import ServiceSettings


class ScoringSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="HUITOU_SCORING_", populate_by_name=True, extra="ignore")

    service_name: str = "scoring"
    port: int = 8002
    consumer_group: str = "huitou-scoring"
