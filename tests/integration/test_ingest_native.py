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
    # Ingest stays ready (in its Service) so that callers get this 503 + Retry-After rather than
    # connection refused; /readyz still says the broker is failing.
    ready = await ingest.get("/readyz")
    assert ready.status_code == 200, ready.text
    assert ready.json()["checks"] == {"database": "ok"}
    assert ready.json()["not_gating"]["broker"].startswith("failing")
    assert (await ingest.get("/healthz")).status_code == 200

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


INTERNAL = {"X-Huitou-Internal-Token": "dev-internal-token-not-for-production"}


async def test_sources_api_creates_rotates_disables_and_enables_keys(ingest) -> None:
    assert (await ingest.get("/internal/v1/sources")).status_code == 401
    created = await ingest.post("/internal/v1/sources", json={"name": "pos-shanghai"}, headers=INTERNAL)
    assert created.status_code == 201, created.text
    key = created.json()["write_key"]
    assert created.json()["key_hint"] == key[:10] + "…" and created.json()["enabled"] is True
    listed = (await ingest.get("/internal/v1/sources", headers=INTERNAL)).json()
    assert [s["name"] for s in listed] == ["default", "pos-shanghai"] and all("write_key" not in s for s in listed)
    again = await ingest.post("/internal/v1/sources", json={"name": "pos-shanghai"}, headers=INTERNAL)
    assert again.status_code == 409 and "rotate" in again.json()["error"]

    as_pos = {"Authorization": f"Bearer {key}"}
    accepted = await ingest.post("/v1/events", json=purchase("e-pos-1"), headers=as_pos)
    assert accepted.status_code == 202

    rotated = await ingest.post("/internal/v1/sources/pos-shanghai/rotate", headers=INTERNAL)
    new_key = rotated.json()["write_key"]
    assert rotated.status_code == 200 and new_key != key
    assert (await ingest.post("/v1/events", json=purchase("e-pos-2"), headers=as_pos)).status_code == 401
    as_pos = basic(new_key)
    assert (await ingest.post("/v1/events", json=purchase("e-pos-2"), headers=as_pos)).status_code == 202

    disabled = await ingest.post("/internal/v1/sources/pos-shanghai/disable", headers=INTERNAL)
    assert disabled.status_code == 200 and disabled.json()["enabled"] is False
    refused = await ingest.post("/v1/events", json=purchase("e-pos-3"), headers=as_pos)
    assert refused.status_code == 403 and "pos-shanghai" in refused.json()["error"]
    assert (await ingest.post("/internal/v1/sources/pos-shanghai/enable", headers=INTERNAL)).json()["enabled"] is True
    assert (await ingest.post("/v1/events", json=purchase("e-pos-3"), headers=as_pos)).status_code == 202

    unknown = await ingest.post("/internal/v1/sources/nope/disable", headers=INTERNAL)
    assert unknown.status_code == 404 and "POST /internal/v1/sources" in unknown.json()["error"]
    bad_name = await ingest.post("/internal/v1/sources", json={"name": "has space"}, headers=INTERNAL)
    assert bad_name.status_code == 422 and bad_name.json()["problems"]
    records = await read_topic(broker_of(ingest), EVENTS, expect_at_least=3)
    assert {json.loads(r.value)["source"] for r in records} == {"pos-shanghai"}


def broker_of(client: httpx.AsyncClient) -> str:
    return client._transport.app.state.settings.kafka_bootstrap_servers


async def test_gzip_body_and_json_that_is_not_json(ingest, broker) -> None:
    import gzip

    packed = gzip.compress(json.dumps([purchase("e-gz-1"), purchase("e-gz-2")]).encode())
    response = await ingest.post(
        "/v1/events", content=packed, headers={"Content-Type": "application/json", "Content-Encoding": "gzip"}
    )
    assert response.status_code == 202 and response.json()["accepted"] == ["e-gz-1", "e-gz-2"]
    nan = await ingest.post("/v1/events", content=b'{"amount": NaN}', headers={"Content-Type": "application/json"})
    assert nan.status_code == 400 and "not valid JSON" in nan.json()["error"]
    deep = await ingest.post("/v1/events", content=b"[" * 100_000, headers={"Content-Type": "application/json"})
    assert deep.status_code == 400 and "not valid JSON" in deep.json()["error"]
    empty = await ingest.post("/v1/events", content=b"", headers={"Content-Type": "application/json"})
    assert empty.status_code == 400 and "empty" in empty.json()["error"]


async def test_alias_is_an_intake_type_and_metrics_count_outcomes(ingest, broker) -> None:
    alias = {
        "event_id": "e-alias",
        "type": "alias",
        "customer_id": "c-1",
        "occurred_at": "2026-11-20T10:00:00+08:00",
        "payload": {"previous_ids": ["anon:v-1"]},
    }
    response = await ingest.post("/v1/events", json=[alias, purchase("e-2"), {"type": "nope"}])
    assert response.status_code == 202 and response.json()["accepted"] == ["e-alias", "e-2"]
    metrics = (await ingest.get("/metrics")).text
    assert 'huitou_ingest_events_total{interface="native",outcome="accepted"} 2.0' in metrics
    assert 'huitou_ingest_events_total{interface="native",outcome="rejected"} 1.0' in metrics
    document = (await ingest.get("/openapi.json")).json()
    assert {"/v1/events", "/v1/batch", "/v1/track", "/v1/cloudevents", "/internal/v1/sources"} <= set(document["paths"])
