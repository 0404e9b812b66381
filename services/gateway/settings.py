"""Gateway's one Settings class (env prefix ``HUITOU_GATEWAY_``)."""

from pydantic import AliasChoices, Field
from pydantic_settings import SettingsConfigDict

from shared.settings import ServiceSettings, is_placeholder


class GatewaySettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="HUITOU_GATEWAY_", populate_by_name=True, extra="ignore")

    service_name: str = "gateway"
    port: int = 8000
    scoring_url: str = "http://127.0.0.1:8002"
    outreach_url: str = "http://127.0.0.1:8003"
    ingest_url: str = "http://127.0.0.1:8001"
    downstream_timeout_seconds: float = Field(5.0, gt=0, description="per call to another service; then 504")
    slow_downstream_timeout_seconds: float = Field(
        120.0, gt=0, description="per call to a route that works before answering (CLV refit); then 504"
    )
    downstream_retries: int = Field(2, ge=0, description="extra attempts for idempotent calls (GET)")
    admin_key: str | None = Field(
        None,
        validation_alias=AliasChoices("HUITOU_GATEWAY_ADMIN_KEY", "HUITOU_DEV_ADMIN_KEY", "admin_key"),
        description="an admin API key registered at start-up (the first key of a new install)",
    )
    rate_limit_per_second: float = Field(
        20.0, gt=0, description="sustained requests per second allowed to one API key (token bucket refill)"
    )
    rate_limit_burst: int = Field(100, ge=1, description="requests one API key may send at once (bucket size)")
    public_rate_limit_per_second: float = Field(
        2.0, gt=0, description="requests per second per client address on public routes (unsubscribe links)"
    )
    public_rate_limit_burst: int = Field(20, ge=1, description="bucket size per client address on public routes")
    console_enabled: bool = Field(True, description="serve the operator console under /console/")

    def production_problems(self) -> list[str]:
        problems = super().production_problems()
        if is_placeholder(self.admin_key):
            problems.append("set HUITOU_GATEWAY_ADMIN_KEY to a random secret of at least 16 characters")
        return problems
