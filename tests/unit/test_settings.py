"""Production mode refuses dev defaults and placeholder secrets; dev mode runs on defaults."""

import pytest

from services.gateway.settings import GatewaySettings
from services.ingest.settings import IngestSettings
from services.outreach.settings import OutreachSettings
from services.scoring.settings import ScoringSettings
from shared.settings import InsecureSettings


def test_dev_defaults_use_sqlite_under_var_and_documented_ports(monkeypatch):
    for name in ("HUITOU_ENV", "HUITOU_SCORING_PORT", "HUITOU_VAR_DIR"):
        monkeypatch.delenv(name, raising=False)
    settings = ScoringSettings()
    assert settings.port == 8002 and settings.env == "dev"
    assert settings.effective_database_url == "sqlite+aiosqlite:///var/scoring.db"
    assert (GatewaySettings().port, IngestSettings().port, OutreachSettings().port) == (8000, 8001, 8003)


def test_ports_and_urls_come_from_the_environment(monkeypatch):
    monkeypatch.setenv("HUITOU_SCORING_PORT", "9102")
    monkeypatch.setenv("HUITOU_KAFKA_BOOTSTRAP_SERVERS", "kafka:9092")
    monkeypatch.setenv("HUITOU_SCORING_DATABASE_URL", "postgresql+asyncpg://u@db/huitou")
    settings = ScoringSettings()
    assert settings.port == 9102 and settings.kafka_bootstrap_servers == "kafka:9092"
    assert settings.effective_database_url == "postgresql+asyncpg://u@db/huitou"
    assert settings.effective_schema == "scoring"


def test_consumer_tuning_comes_from_the_environment(monkeypatch):
    monkeypatch.setenv("HUITOU_KAFKA_SESSION_TIMEOUT_MS", "30000")  # shared by every consumer
    monkeypatch.setenv("HUITOU_OUTREACH_CONSUMER_TRANSACTION_RECORDS", "50")
    monkeypatch.setenv("HUITOU_OUTREACH_CONSUMER_TRANSACTION_SECONDS", "0.05")
    outreach, scoring = OutreachSettings(), ScoringSettings()
    assert outreach.kafka_session_timeout_ms == scoring.kafka_session_timeout_ms == 30000
    assert (outreach.consumer_transaction_records, outreach.consumer_transaction_seconds) == (50, 0.05)
    assert (scoring.consumer_transaction_records, scoring.consumer_transaction_seconds) == (500, 0.2)
    monkeypatch.setenv("HUITOU_KAFKA_SESSION_TIMEOUT_MS", "1000")  # below what brokers accept
    with pytest.raises(ValueError, match="HUITOU_KAFKA_SESSION_TIMEOUT_MS"):
        ScoringSettings()


def test_the_fetch_wait_is_shared_by_every_consumer_and_bounded(monkeypatch):
    assert ScoringSettings().kafka_fetch_max_wait_ms == 100  # the dev broker answers ~1/4 of it late
    monkeypatch.setenv("HUITOU_KAFKA_FETCH_MAX_WAIT_MS", "500")  # a Kafka broker answers at once
    assert OutreachSettings().kafka_fetch_max_wait_ms == ScoringSettings().kafka_fetch_max_wait_ms == 500
    monkeypatch.setenv("HUITOU_KAFKA_FETCH_MAX_WAIT_MS", "0")  # would spin the broker and the consumer
    with pytest.raises(ValueError, match="HUITOU_KAFKA_FETCH_MAX_WAIT_MS"):
        OutreachSettings()


def test_production_refuses_to_start_on_dev_secrets(monkeypatch):
    monkeypatch.setenv("HUITOU_ENV", "production")
    with pytest.raises(InsecureSettings) as refused:
        GatewaySettings()
    message = str(refused.value)
    assert "HUITOU_INTERNAL_TOKEN" in message
    assert "HUITOU_GATEWAY_DATABASE_URL" in message
    assert "HUITOU_GATEWAY_ADMIN_KEY" in message


def test_production_starts_with_real_secrets(monkeypatch):
    monkeypatch.setenv("HUITOU_ENV", "production")
    monkeypatch.setenv("HUITOU_INTERNAL_TOKEN", "a-real-random-token-123456")
    monkeypatch.setenv("HUITOU_GATEWAY_DATABASE_URL", "postgresql+asyncpg://u@db/huitou")
    monkeypatch.setenv("HUITOU_GATEWAY_ADMIN_KEY", "hk_a_real_random_admin_key_123")
    assert GatewaySettings().env == "production"


def test_production_rejects_a_placeholder_write_key(monkeypatch):
    monkeypatch.setenv("HUITOU_ENV", "production")
    monkeypatch.setenv("HUITOU_INTERNAL_TOKEN", "a-real-random-token-123456")
    monkeypatch.setenv("HUITOU_INGEST_DATABASE_URL", "postgresql+asyncpg://u@db/huitou")
    monkeypatch.setenv("HUITOU_INGEST_WRITE_KEY", "changeme")
    with pytest.raises(InsecureSettings, match="HUITOU_INGEST_WRITE_KEY"):
        IngestSettings()


@pytest.mark.parametrize(
    ("settings_class", "field"), [(OutreachSettings, "default_timezone"), (ScoringSettings, "occasion_timezone")]
)
def test_time_zone_settings_name_a_real_zone(settings_class, field):
    with pytest.raises(ValueError, match="unknown time zone 'Mars/Base'; use an IANA name"):
        settings_class(**{field: "Mars/Base"})
