"""Native intake (POST /v1/events) against a real broker: 202 only for what Kafka stored."""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from services.ingest.api import create_app
from services.ingest.settings import IngestSettings
from shared.kafka import ensure_topics
from shared.topics import EVENTS
from tests.support import Broker, read_topic

pytestmark = pytest.mark.broker
WRITE_KEY = "wk_integration_test_key_0123456789"


def basic(key: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{key}:".encode()).decode()}


@pytest.fixture
async def ingest(broker: Broker, tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    settings = IngestSettings(
        kafka_bootstrap_servers=broker.bootstrap,
        database_url=f"sqlite+aiosqlite:///{tmp_path / 'ingest.db'}",
        write_key=WRITE_KEY,
        kafka_request_timeout_ms=1500,
    )
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        runtime = app.state.runtime
        while not runtime.producer.ready:
            await __import__("asyncio").sleep(0.05)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://ingest", headers=basic(WRITE_KEY)) as client:
            yield client


def purchase(event_id: str, customer_id: str = "c-1", amount: str = "10.00") -> dict:
    return {
        "event_id": event_id,
        "type": "purchase",
        "customer_id": customer_id,
        "occurred_at": "2026-11-20T10:00:00+08:00",
        "payload": {"order_id": f"o-{event_id}", "amount": amount},
    }


async def test_accepted_event_is_on_the_topic_keyed_by_customer(ingest, broker) -> None:
    response = await ingest.post("/v1/events", json=purchase("e-1", "c-77"))
    assert response.status_code == 202, response.text
    assert response.json() == {"accepted": ["e-1"], "duplicates": [], "rejected": []}
    (record,) = await read_topic(broker.bootstrap, EVENTS, expect_at_least=1)
    assert record.key == b"c-77"
    stored = json.loads(record.value)
    assert stored["event_id"] == "e-1" and stored["source"] == "default" and stored["received_at"]
    assert stored["payload"]["amount"] == "10.00"


async def test_duplicate_is_answered_2xx_but_not_republished(ingest, broker) -> None:
    assert (await ingest.post("/v1/events", json=purchase("e-1"))).status_code == 202
    again = await ingest.post("/v1/events", json=[purchase("e-1"), purchase("e-2"), purchase("e-2")])
    assert again.status_code == 202
    assert again.json() == {"accepted": ["e-2"], "duplicates": ["e-1", "e-2"], "rejected": []}
    records = await read_topic(broker.bootstrap, EVENTS, expect_at_least=2)
    assert sorted(json.loads(r.value)["event_id"] for r in records) == ["e-1", "e-2"]


async def test_batch_reports_each_rejection_and_keeps_the_good_ones(ingest, broker) -> None:
    bad = purchase("e-bad")
    bad["payload"]["amount"] = "-1"
    response = await ingest.post("/v1/events", json=[purchase("e-ok"), bad, "nonsense"])
    assert response.status_code == 202
    body = response.json()
    assert body["accepted"] == ["e-ok"]
    assert [(r["index"], r["event_id"]) for r in body["rejected"]] == [(1, "e-bad"), (2, None)]
    assert "payload.amount" in body["rejected"][0]["problems"][0]
    assert "JSON object" in body["rejected"][1]["problems"][0]


async def test_all_invalid_is_422_with_reasons(ingest) -> None:
    response = await ingest.post("/v1/events", json={"type": "purchase"})
    assert response.status_code == 422
    problems = response.json()["rejected"][0]["problems"]
    assert any(p.startswith("event_id:") for p in problems) and any(p.startswith("payload:") for p in problems)


@pytest.mark.parametrize(
    ("headers", "status", "hint"),
    [
        ({"Authorization": ""}, 401, "write key"),
        (basic("wk_wrong"), 401, "unknown write key"),
        ({"Authorization": "Basic !!!notbase64"}, 401, "write key"),
    ],
)
async def test_bad_auth_is_401_with_a_hint(ingest, headers, status, hint) -> None:
    response = await ingest.post("/v1/events", json=purchase("e-1"), headers=headers)
    assert response.status_code == status
    assert hint in response.json()["error"]
    assert response.headers["www-authenticate"].startswith("Basic")


async def test_wrong_content_type_bad_json_and_oversize_bodies(ingest) -> None:
    text = await ingest.post("/v1/events", content=b"hello", headers={"Content-Type": "text/plain"})
    assert text.status_code == 415 and "application/json" in text.json()["error"]
    broken = await ingest.post("/v1/events", content=b"{", headers={"Content-Type": "application/json"})
    assert broken.status_code == 400 and "not valid JSON" in broken.json()["error"]
    huge = await ingest.post("/v1/events", json=[purchase(f"e-{i}") for i in range(5000)])
    assert huge.status_code == 413 and "smaller batches" in huge.json()["error"]
    big_event = purchase("e-big")
    big_event["payload"]["items"] = [{"name": "x" * 290} for _ in range(120)]
    too_big = await ingest.post("/v1/events", json=[big_event, purchase("e-small")])
    assert too_big.status_code == 202
    assert too_big.json()["accepted"] == ["e-small"]
    assert "limit is 32768 bytes" in too_big.json()["rejected"][0]["problems"][0]
    assert (await ingest.post("/v1/events", json=[])).status_code == 400


async def test_broker_down_means_503_and_nothing_accepted(ingest, broker) -> None:
    broker.stop()
    response = await ingest.post("/v1/events", json=[purchase("e-1"), purchase("e-2")])
    assert response.status_code == 503
    assert response.headers["retry-after"] == "5"
    assert "nothing from this request was accepted" in response.json()["error"]
    ready = await ingest.get("/readyz")
    assert ready.status_code == 503 and ready.json()["checks"]["broker"].startswith("failing")

    # The broker comes back (empty: the dev broker keeps data in memory); the client's retry
    # must be accepted as new, not answered as a duplicate of something never stored.
    broker.start()
    await ensure_topics(broker.bootstrap)
    for _ in range(50):
        retry = await ingest.post("/v1/events", json=[purchase("e-1"), purchase("e-2")])
        if retry.status_code == 202:
            break
        assert retry.status_code == 503
    assert retry.json()["accepted"] == ["e-1", "e-2"]
    records = await read_topic(broker.bootstrap, EVENTS, expect_at_least=2)
    assert sorted(json.loads(r.value)["event_id"] for r in records) == ["e-1", "e-2"]


async def test_disabled_source_is_403(ingest) -> None:
    from sqlalchemy import update

    from services.ingest.tables import sources

    runtime = ingest._transport.app.state.runtime
    async with runtime.sessions() as session, session.begin():
        await session.execute(update(sources).values(enabled=False))
    response = await ingest.post("/v1/events", json=purchase("e-1"))
    assert response.status_code == 403 and "disabled" in response.json()["error"]
