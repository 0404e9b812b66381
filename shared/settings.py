"""One settings base; each service subclasses it once with its own env prefix.

Fields every service shares read un-prefixed ``HUITOU_*`` variables (``HUITOU_ENV``,
``HUITOU_KAFKA_BOOTSTRAP_SERVERS``…); a service's own fields read ``HUITOU_<SERVICE>_*``
(``HUITOU_SCORING_PORT``, ``HUITOU_SCORING_DATABASE_URL``…).
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

DEV_INTERNAL_TOKEN = "dev-internal-token-not-for-production"
_PLACEHOLDERS = {"", "changeme", "change-me", "secret", "password", DEV_INTERNAL_TOKEN}


def _shared(name: str) -> AliasChoices:
    return AliasChoices(f"HUITOU_{name}", name.lower())


class InsecureSettings(RuntimeError):
    """Production mode refuses to start on dev defaults or placeholder secrets."""


class ServiceSettings(BaseSettings):
    model_config = SettingsConfigDict(populate_by_name=True, extra="ignore")

    service_name: str = "huitou"
    env: Literal["dev", "production"] = Field("dev", validation_alias=_shared("ENV"))
    kafka_bootstrap_servers: str = Field("127.0.0.1:9092", validation_alias=_shared("KAFKA_BOOTSTRAP_SERVERS"))
    kafka_request_timeout_ms: int = Field(
        5000,
        ge=500,
        validation_alias=_shared("KAFKA_REQUEST_TIMEOUT_MS"),
        description="how long a produce may wait for acks=all before the caller gets 503",
    )
    kafka_session_timeout_ms: int = Field(
        10_000,
        ge=6000,
        le=300_000,
        validation_alias=_shared("KAFKA_SESSION_TIMEOUT_MS"),
        description="how long a silent consumer keeps its partitions before the group hands them to another "
        "replica: shorter takes over sooner after a crash, longer rides out longer pauses",
    )
    kafka_fetch_max_wait_ms: int = Field(
        100,
        ge=10,
        le=10_000,
        validation_alias=_shared("KAFKA_FETCH_MAX_WAIT_MS"),
        description="how long a consumer's fetch may wait at the broker for new records. A Kafka broker "
        "answers a waiting fetch as soon as records arrive, so there this only paces idle polling; the dev "
        "broker (Tansu) answers late, roughly a quarter of this wait after a record lands, so it adds that "
        "much latency to every hop (docs/operations.md)",
    )
    consumer_transaction_records: int = Field(
        500, ge=1, le=5000, description="at most this many records of a poll per consumer transaction"
    )
    consumer_transaction_seconds: float = Field(
        0.2, gt=0, le=10, description="a consumer transaction stops taking records after this long"
    )
    var_dir: Path = Field(Path("var"), validation_alias=_shared("VAR_DIR"))
    internal_token: str = Field(
        DEV_INTERNAL_TOKEN,
        validation_alias=_shared("INTERNAL_TOKEN"),
        description="shared secret on the services' internal APIs (the gateway sends it)",
    )
    log_level: str = Field("INFO", validation_alias=_shared("LOG_LEVEL"))
    gc_freeze: bool = Field(
        True,
        validation_alias=_shared("GC_FREEZE"),
        description="after start-up, exempt what start-up built (modules, clients) from garbage collection",
    )
    gc_young_threshold: int = Field(
        50_000,
        ge=700,
        le=1_000_000,
        validation_alias=_shared("GC_YOUNG_THRESHOLD"),
        description="allocations between collections of the youngest generation (Python's default is 700)",
    )

    host: str = "127.0.0.1"
    port: int = 8000
    database_url: str | None = Field(None, description="SQLAlchemy async URL; default a SQLite file under var_dir")
    database_schema: str | None = Field(
        None, description="PostgreSQL schema for this service's tables; default the service name"
    )
    auto_migrate: bool = Field(True, description="apply Alembic migrations on start-up")
    processed_event_retention: timedelta = Field(
        timedelta(days=30),
        description="how long a consumer remembers applied event ids; must exceed the topics' retention (7 days)",
    )

    @property
    def effective_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite+aiosqlite:///{self.var_dir / (self.service_name + '.db')}"

    @property
    def effective_schema(self) -> str:
        return self.database_schema or self.service_name

    @model_validator(mode="after")
    def _refuse_insecure_production(self) -> ServiceSettings:
        if self.env == "production":
            problems = self.production_problems()
            if problems:
                raise InsecureSettings(f"{self.service_name} refuses to start in production: " + "; ".join(problems))
        return self

    def production_problems(self) -> list[str]:
        """What a production deployment must set; subclasses add their own secrets."""
        prefix = f"HUITOU_{self.service_name.upper()}_"
        problems = []
        if self.internal_token in _PLACEHOLDERS or len(self.internal_token) < 16:
            problems.append("set HUITOU_INTERNAL_TOKEN to a random secret of at least 16 characters")
        if not self.database_url:
            problems.append(f"set {prefix}DATABASE_URL (PostgreSQL) explicitly")
        return problems


def is_placeholder(secret: str | None) -> bool:
    return secret is None or secret in _PLACEHOLDERS or len(secret) < 16
