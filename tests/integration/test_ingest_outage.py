"""The broker goes away mid-run: no 2xx for an event that is not in Kafka, and 429 under pressure.

The broker's clients all reach it through a proxy. "Stopped" cuts the proxy (connections reset,
new ones refused); "hung" pauses the broker process (SIGSTOP: nothing is acknowledged). Either
way the in-memory topics survive, so afterwards we can read what Kafka really holds.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI

from shared.kafka import ensure_topics
from tests.integration.test_ingest_support import ProxiedBroker, events_on_topic, ingest_settings, running_ingest
from tests.support import eventually

pytestmark = pytest.mark.broker


@pytest.fixture
async def proxied(tmp_path: Path) -> AsyncIterator[ProxiedBroker]:
    broker = ProxiedBroker(tmp_path / "broker.log")
    await broker.start()
    try:
        await ensure_topics(broker.bootstrap)
        yield broker
    finally:
        await broker.stop()


@pytest.fixture
async def ingest(
    proxied: ProxiedBroker, tmp_path: Path, request: pytest.FixtureRequest
) -> AsyncIterator[tuple[FastAPI, httpx.AsyncClient]]:
    overrides = getattr(request, "param", {})
    settings = ingest_settings(proxied.bootstrap, tmp_path, kafka_request_timeout_ms=800, **overrides)
    async with running_ingest(settings) as running:
        yield running


def purchase(event_id: str) -> dict:
    return {
        "event_id": event_id,
        "type": "purchase",
        "customer_id": f"c-{event_id[-1]}",
        "occurred_at": "2026-11-20T10:00:00+08:00",
        "payload": {"order_id": f"o-{event_id}", "amount": "10.00"},
    }


@dataclass
class Traffic:
    """Clients posting batches without pause, recording what each answer claimed."""

    client: httpx.AsyncClient
    acknowledged: set[str] = field(default_factory=set)
    refused: int = 0  # 503s: the broker did not acknowledge
    retry_after: set[str] = field(default_factory=set)
    other: list[str] = field(default_factory=list)
    stop: asyncio.Event = field(default_factory=asyncio.Event)
    _ids: itertools.count[int] = field(default_factory=itertools.count)

    async def run(self, worker: int) -> None:
        while not self.stop.is_set():
            ids = [f"w{worker}-{next(self._ids)}" for _ in range(3)]
            response = await self.client.post("/v1/events", json=[purchase(i) for i in ids])
            if response.status_code == 202:
                body = response.json()
                assert sorted(body["accepted"]) == sorted(ids), body  # all or nothing
                self.acknowledged.update(body["accepted"])
            elif response.status_code == 503:
                self.refused += 1
                self.retry_after.add(response.headers.get("retry-after", ""))
                assert "nothing from this request was accepted" in response.json()["error"]
                await asyncio.sleep(0.02)
            else:
                self.other.append(f"{response.status_code} {response.text}")

    async def until(self, count: int, what: str) -> None:
        await eventually(self._more_than(count), timeout=30, what=what)

    def _more_than(self, count: int):  # type: ignore[no-untyped-def]
        async def check() -> bool:
            return len(self.acknowledged) > count

        return check


async def test_no_2xx_for_events_that_are_not_in_kafka(ingest, proxied: ProxiedBroker) -> None:
    _app, client = ingest
    traffic = Traffic(client)
    workers = [asyncio.create_task(traffic.run(n)) for n in range(3)]
    try:
        await traffic.until(20, "traffic to flow")

        # 1. The broker is unreachable: connections reset, new ones refused.
        await proxied.proxy.cut()
        refused_before = traffic.refused
        await eventually(_refusals(traffic, refused_before + 5), timeout=30, what="503s while the broker is down")
        await _stays_ready_reporting_the_broker(client)
        acknowledged_while_down = len(traffic.acknowledged)
        await asyncio.sleep(0.5)  # let in-flight publishes that the broker acked before the cut settle
        await proxied.proxy.start()
        await traffic.until(acknowledged_while_down + 20, "traffic to recover after the broker is back")

        # 2. The broker hangs: nothing is acknowledged, every publish times out.
        proxied.pause()
        refused_before = traffic.refused
        await eventually(_refusals(traffic, refused_before + 3), timeout=30, what="503s while the broker hangs")
        await _stays_ready_reporting_the_broker(client)
        proxied.resume()
        await traffic.until(len(traffic.acknowledged) + 20, "traffic to recover after the hang")
    finally:
        traffic.stop.set()
        await asyncio.gather(*workers)

    assert traffic.other == []
    assert traffic.retry_after == {"5"}
    on_topic = {event["event_id"] for event in await events_on_topic(proxied.bootstrap)}
    missing = traffic.acknowledged - on_topic
    assert not missing, f"{len(missing)} events were answered 202 but are not in Kafka: {sorted(missing)[:10]}"


async def _stays_ready_reporting_the_broker(client: httpx.AsyncClient) -> None:
    """During the outage ingest stays in its Service (so callers get the 503 + Retry-After, not
    connection refused) and says why in /readyz, within the probe's time even if the broker hangs."""
    started = asyncio.get_running_loop().time()
    ready = await client.get("/readyz")
    assert asyncio.get_running_loop().time() - started < 5
    assert ready.status_code == 200, ready.text
    assert ready.json()["checks"] == {"database": "ok"}
    assert ready.json()["not_gating"]["broker"].startswith("failing"), ready.json()
    assert (await client.get("/healthz")).status_code == 200


def _refusals(traffic: Traffic, at_least: int):  # type: ignore[no-untyped-def]
    async def check() -> bool:
        return traffic.refused >= at_least

    return check


@pytest.mark.parametrize("ingest", [{"max_in_flight_events": 5}], indirect=True)
async def test_over_the_in_flight_budget_is_429_with_retry_after(ingest, proxied: ProxiedBroker) -> None:
    app, client = ingest
    budget = app.state.budget
    proxied.pause()  # the first request's publish now waits for acks that do not come
    try:
        stuck = asyncio.create_task(client.post("/v1/events", json=[purchase(f"s-{n}") for n in range(5)]))

        async def holding() -> bool:
            return bool(budget.events == 5)

        await eventually(holding, timeout=10, what="the first request to hold its events in flight")
        refused = await client.post("/v1/events", json=purchase("late-1"))
        assert refused.status_code == 429
        assert refused.headers["retry-after"] == "1" and refused.headers["x-ratelimit-reset"] == "1"
        assert "in-flight limit" in refused.json()["error"]
        segment = await client.post("/v1/track", json={"userId": "c", "event": "Tea Tasted", "messageId": "m"})
        assert segment.status_code == 429 and segment.json()["code"] == "rate_limited"
    finally:
        proxied.resume()
    assert (await stuck).status_code in (202, 503)
    assert (budget.events, budget.bytes) == (0, 0)  # every hold was released
    metrics = (await client.get("/metrics")).text
    assert 'huitou_ingest_requests_refused_total{interface="native",reason="busy"} 1.0' in metrics
    retry = await client.post("/v1/events", json=purchase("late-1"))
    assert retry.status_code == 202
