"""Outreach's one Settings class (env prefix ``HUITOU_OUTREACH_``).

Every threshold of the contact policy and the dispatcher is a knob here, with the default the
embedded stack runs on. docs/outreach.md lists them with their reasons.
"""

from datetime import time, timedelta
from pathlib import Path

from pydantic import Field, model_validator
from pydantic_settings import SettingsConfigDict

from shared.contracts import TimeZoneName
from shared.settings import ServiceSettings, is_placeholder

DEV_UNSUBSCRIBE_SECRET = "dev-unsubscribe-secret-not-for-production"
DEV_WEBHOOK_SECRET = "dev-webhook-secret-not-for-production"
_HERE = Path(__file__).parent


class OutreachSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="HUITOU_OUTREACH_", populate_by_name=True, extra="ignore")

    service_name: str = "outreach"
    port: int = 8003
    consumer_group: str = "huitou-outreach"

    # --- care plans -------------------------------------------------------------------------
    care_plans_file: Path = Field(_HERE / "care_plans.yaml", description="shipped default care plans")
    templates_file: Path = Field(_HERE / "templates.yaml", description="shipped default templates (zh-CN, en)")
    holidays_file: Path = Field(_HERE / "holidays.yaml", description="festival calendar used by holiday plans")
    follow_up_delay: timedelta = Field(
        timedelta(days=3),
        description="post-purchase follow-up after this long (ISO-8601 like P3D or seconds); "
        "DOMAIN.md §4 suggests day 3. Overrides the shipped plan's delay.",
    )
    plan_refresh_seconds: float = Field(
        5.0, gt=0, description="how often a replica re-reads care plans and templates edited elsewhere"
    )
    default_timezone: TimeZoneName = Field("Asia/Shanghai", description="for customers whose file has no time zone")
    default_locale: str = Field("zh-CN", description="for customers whose file has no (supported) locale")

    # --- calendar planner --------------------------------------------------------------------
    calendar_horizon: timedelta = Field(
        timedelta(days=2), description="the calendar planner schedules moments due within this horizon"
    )
    calendar_scan_interval: timedelta = Field(
        timedelta(hours=1), description="how often the calendar planner scans every stored customer file"
    )
    calendar_scan_batch: int = Field(500, ge=1, description="customers per planner transaction")

    # --- contact policy ----------------------------------------------------------------------
    holdout_share: float = Field(
        0.05, ge=0, le=0.5, description="share of customers in the global holdout (no marketing touches)"
    )
    holdout_salt: str = Field(
        "huitou-holdout-v1", min_length=1, description="changing it reshuffles the holdout: only for a new study"
    )
    marketing_default_consent: bool = Field(
        False, description="may marketing go to a channel the customer never decided on (opt-in by default)"
    )
    transactional_default_consent: bool = Field(
        True, description="may transactional messages go to a channel the customer never decided on"
    )
    cap_marketing_per_day: int = Field(1, ge=0, description="marketing touches per customer per local calendar day")
    cap_marketing_per_week: int = Field(
        3, ge=0, description="marketing touches per customer per local calendar week (Monday–Sunday)"
    )
    quiet_hours_start: time = Field(time(21, 0), description="quiet hours start, customer's local time")
    quiet_hours_end: time = Field(time(8, 0), description="quiet hours end, customer's local time")
    arbitration_window: timedelta = Field(
        timedelta(hours=1),
        description="touches due within this long of each other collide: the higher priority goes first",
    )
    default_expires_after: timedelta = Field(
        timedelta(days=7), description="a touch deferred past due + this is suppressed (plans may override)"
    )
    default_attribution_window: timedelta = Field(
        timedelta(days=7), description="a purchase this long after a touch converts it (plans may override)"
    )

    # --- dispatcher --------------------------------------------------------------------------
    dispatch_enabled: bool = Field(True, description="run the dispatcher in this process")
    dispatch_interval_seconds: float = Field(1.0, gt=0, description="idle poll interval of the dispatcher")
    census_interval_seconds: float = Field(
        15.0, gt=0, description="how often the touches-by-status gauges are recounted (every replica counts)"
    )
    dispatch_batch: int = Field(100, ge=1, description="touches claimed per dispatcher round")
    dispatch_concurrency: int = Field(8, ge=1, description="customers served in parallel per round")
    dispatch_lease: timedelta = Field(
        timedelta(seconds=60),
        description="a claimed or in-flight touch whose lease expired is recovered by another round",
    )
    max_attempts: int = Field(6, ge=1, description="send attempts before a touch is failed for good")
    retry_base: timedelta = Field(timedelta(seconds=30), description="first retry delay (then doubled, with jitter)")
    retry_cap: timedelta = Field(timedelta(hours=1), description="longest retry delay")

    # --- channels ----------------------------------------------------------------------------
    smtp_host: str = Field("127.0.0.1", description="SMTP relay (the dev sink by default)")
    smtp_port: int = Field(1025, ge=1, le=65535)
    smtp_username: str | None = None
    smtp_password: str | None = None
    smtp_starttls: bool = Field(False, description="upgrade the connection with STARTTLS")
    smtp_timeout_seconds: float = Field(10.0, gt=0)
    mail_from: str = Field("Huitou <care@huitou.local>", description="From header of care email")
    message_id_domain: str = Field("huitou.local", description="right side of the deterministic Message-ID")
    sms_webhook_url: str | None = Field(None, description="SMS provider endpoint (HMAC-signed POST)")
    push_webhook_url: str | None = Field(None, description="push provider endpoint (HMAC-signed POST)")
    webhook_url: str | None = Field(None, description="generic webhook endpoint (HMAC-signed POST)")
    webhook_secret: str = Field(DEV_WEBHOOK_SECRET, description="HMAC-SHA256 key for X-Huitou-Signature")
    webhook_timeout_seconds: float = Field(10.0, gt=0)

    # --- unsubscribe -------------------------------------------------------------------------
    unsubscribe_secret: str = Field(DEV_UNSUBSCRIBE_SECRET, description="HMAC key of unsubscribe tokens")
    public_base_url: str = Field(
        "http://127.0.0.1:8003",
        description="where customers reach /public/v1/unsubscribe (the gateway's public URL in production)",
    )

    @model_validator(mode="after")
    def _coherent(self) -> "OutreachSettings":
        if self.retry_cap < self.retry_base:
            raise ValueError("retry_cap must be at least retry_base")
        return self

    def production_problems(self) -> list[str]:
        problems = super().production_problems()
        if is_placeholder(self.unsubscribe_secret) or self.unsubscribe_secret == DEV_UNSUBSCRIBE_SECRET:
            problems.append("set HUITOU_OUTREACH_UNSUBSCRIBE_SECRET to a random secret of at least 16 characters")
        if is_placeholder(self.webhook_secret) or self.webhook_secret == DEV_WEBHOOK_SECRET:
            problems.append("set HUITOU_OUTREACH_WEBHOOK_SECRET to a random secret of at least 16 characters")
        return problems
