"""CloudEvents 1.0 over HTTP on ingest: structured, batched and binary modes, against a real broker."""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from tests.integration.test_ingest_support import events_on_topic, ingest_settings, running_ingest
from tests.support import Broker

pytestmark = pytest.mark.broker
STRUCTURED = {"Content-Type": "application/cloudevents+json"}


@pytest.fixture
async def ingest(broker: Broker, tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    async with running_ingest(ingest_settings(broker.bootstrap, tmp_path)) as (_app, client):
        yield client


def cloudevent(event_id: str, **overrides: object) -> dict:
    event: dict = {
        "specversion": "1.0",
        "id": event_id,
        "source": "urn:pos:shanghai-3",
        "type": "com.example.pos.purchase",
        "subject": "c-8",
        "time": "2026-11-20T10:00:00+08:00",
        "datacontenttype": "application/json",
        "data": {"order_id": f"o-{event_id}", "amount": "45.00"},
    }
    event.update(overrides)
    return event


async def test_structured_mode(ingest: httpx.AsyncClient, broker: Broker) -> None:
    traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    body = cloudevent("ce-1", historical=True, traceparent=traceparent)
    response = await ingest.post("/v1/cloudevents", content=json.dumps(body), headers=STRUCTURED)
    assert response.status_code == 202, response.text
    assert response.json() == {"accepted": ["ce-1"], "duplicates": [], "rejected": []}
    (event,) = await events_on_topic(broker.bootstrap, expect_at_least=1)
    assert event["key"] == "c-8" and event["type"] == "purchase" and event["historical"] is True
    assert event["trace_id"] == "4bf92f3577b34da6a3ce929d0e0e4736" and event["source"] == "default"
    assert event["payload"]["amount"] == "45.00"


async def test_batch_mode_judges_each_event(ingest: httpx.AsyncClient, broker: Broker) -> None:
    data = base64.b64encode(json.dumps({"kind": "visit"}).encode()).decode()
    batch = [
        cloudevent("ce-1"),
        cloudevent("ce-2", type="com.example.pos.checkout"),
        cloudevent("ce-3", type="interaction", data=None, data_base64=data),
        cloudevent("ce-4", time=None),
        cloudevent("ce-5", data={"order_id": "o", "amount": "-1"}),
    ]
    response = await ingest.post(
        "/v1/cloudevents", content=json.dumps(batch), headers={"Content-Type": "application/cloudevents-batch+json"}
    )
    assert response.status_code == 202, response.text
    body = response.json()
    assert body["accepted"] == ["ce-1", "ce-3"]
    problems = {r["event_id"]: " ".join(r["problems"]) for r in body["rejected"]}
    assert "type: must be one of identify, purchase" in problems["ce-2"]
    assert "time: required" in problems["ce-4"]
    assert "data.amount" in problems["ce-5"]
    ids = sorted(e["event_id"] for e in await events_on_topic(broker.bootstrap, expect_at_least=2))
    assert ids == ["ce-1", "ce-3"]


async def test_binary_mode(ingest: httpx.AsyncClient, broker: Broker) -> None:
    headers = {
        "ce-specversion": "1.0",
        "ce-id": "ce-bin-1",
        "ce-source": "/pos/7",
        "ce-type": "refund",
        "ce-time": "2026-11-21T09:30:00Z",
        "ce-customerid": "c-%E5%9B%9E%E5%A4%B4",  # percent-encoded, as the HTTP binding requires
        "Content-Type": "application/json",
    }
    response = await ingest.post("/v1/cloudevents", json={"order_id": "o-1", "amount": "5.00"}, headers=headers)
    assert response.status_code == 202, response.text
    (event,) = await events_on_topic(broker.bootstrap, expect_at_least=1)
    assert event["type"] == "refund" and event["customer_id"] == "c-回头"
    missing = await ingest.post("/v1/cloudevents", json={"order_id": "o-1", "amount": "5.00"})
    assert missing.status_code == 422
    assert "ce-specversion" in missing.json()["rejected"][0]["problems"][0]


async def test_refusals_explain_themselves(ingest: httpx.AsyncClient) -> None:
    wrong_version = await ingest.post(
        "/v1/cloudevents", content=json.dumps(cloudevent("x", specversion="0.3")), headers=STRUCTURED
    )
    assert wrong_version.status_code == 422
    assert "only 1.0" in wrong_version.json()["rejected"][0]["problems"][0]
    xml = await ingest.post("/v1/cloudevents", content=b"<event/>", headers={"Content-Type": "application/xml"})
    assert xml.status_code == 415 and "cloudevents+json" in xml.json()["error"]
    not_a_list = await ingest.post(
        "/v1/cloudevents", content=b"{}", headers={"Content-Type": "application/cloudevents-batch+json"}
    )
    assert not_a_list.status_code == 400 and "non-empty JSON array" in not_a_list.json()["error"]
    unauthenticated = await ingest.post(
        "/v1/cloudevents", content=json.dumps(cloudevent("y")), headers={**STRUCTURED, "Authorization": ""}
    )
    assert unauthenticated.status_code == 401
