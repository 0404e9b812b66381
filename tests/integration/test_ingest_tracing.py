"""W3C trace context at intake, against a real broker: the caller's ``traceparent`` (or a fresh
trace per request) lands in each event's ``trace_id`` and in a ``traceparent`` header on its record."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner

from shared.cli import app as cli
from shared.topics import EVENTS
from shared.tracing import is_trace_id, trace_id_from_headers
from tests.integration.test_ingest_support import ingest_settings, running_ingest
from tests.support import Broker, read_topic

pytestmark = pytest.mark.broker
TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
OWN_TRACE = "0af7651916cd43dd8448eb211c80319c"
TRACEPARENT = {"traceparent": f"00-{TRACE}-00f067aa0ba902b7-01"}


@pytest.fixture
async def ingest(broker: Broker, tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    async with running_ingest(ingest_settings(broker.bootstrap, tmp_path)) as (_app, client):
        yield client


def purchase(event_id: str, **extra: Any) -> dict[str, Any]:
    return {
        "event_id": event_id,
        "type": "purchase",
        "customer_id": f"c-{event_id}",
        "occurred_at": "2026-11-20T10:00:00+08:00",
        "payload": {"order_id": f"o-{event_id}", "amount": "10.00"},
        **extra,
    }


async def traces_on_topic(bootstrap: str, expect: int) -> dict[str, tuple[str | None, str | None]]:
    """event_id → (trace id of the record's traceparent header, the envelope's trace_id)."""
    records = await read_topic(bootstrap, EVENTS, expect_at_least=expect)
    found = {}
    for record in records:
        event = json.loads(record.value)
        found[event["event_id"]] = (trace_id_from_headers(list(record.headers)), event["trace_id"])
    assert len(found) == expect, found
    return found


async def test_the_callers_traceparent_goes_to_envelope_and_record_header(ingest, broker) -> None:
    own = purchase("e-own", trace_id=OWN_TRACE)
    response = await ingest.post("/v1/events", json=[purchase("e-1"), purchase("e-2"), own], headers=TRACEPARENT)
    assert response.status_code == 202, response.text
    traces = await traces_on_topic(broker.bootstrap, 3)
    assert traces["e-1"] == traces["e-2"] == (TRACE, TRACE)
    assert traces["e-own"] == (OWN_TRACE, OWN_TRACE)  # an event's own trace wins


async def test_without_a_traceparent_each_request_starts_its_own_trace(ingest, broker) -> None:
    assert (await ingest.post("/v1/events", json=[purchase("a-1"), purchase("a-2")])).status_code == 202
    assert (await ingest.post("/v1/events", json=purchase("b-1"))).status_code == 202
    traces = await traces_on_topic(broker.bootstrap, 3)
    first, second = traces["a-1"][0], traces["b-1"][0]
    assert is_trace_id(first) and is_trace_id(second) and first != second
    assert traces["a-1"] == traces["a-2"] == (first, first) and traces["b-1"] == (second, second)


@pytest.mark.parametrize(
    "value",
    [
        "garbage",
        f"00-{TRACE}-00f067aa0ba902b7",  # no flags
        f"00-{'0' * 32}-00f067aa0ba902b7-01",  # the all-zero trace id is invalid
        f"00-{TRACE}-{'0' * 16}-01",  # so is the all-zero parent id
        f"00-{TRACE.upper()}-00F067AA0BA902B7-01x",
    ],
)
async def test_an_invalid_traceparent_restarts_the_trace_instead_of_refusing(ingest, broker, value: str) -> None:
    response = await ingest.post("/v1/events", json=purchase("e-1"), headers={"traceparent": value})
    assert response.status_code == 202, response.text
    header_trace, envelope_trace = (await traces_on_topic(broker.bootstrap, 1))["e-1"]
    assert is_trace_id(header_trace) and header_trace == envelope_trace and header_trace not in (TRACE, "0" * 32)


async def test_segment_batch_and_single_calls_carry_the_trace(ingest, broker) -> None:
    identify = {"type": "identify", "userId": "u-1", "anonymousId": "anon-1", "messageId": "m-1", "traits": {}}
    track = {"type": "track", "userId": "u-2", "event": "Tea Tasted", "messageId": "m-2"}
    batch = await ingest.post("/v1/batch", json={"batch": [identify, track]}, headers=TRACEPARENT)
    assert batch.status_code == 200, batch.text
    single = await ingest.post("/v1/track", json={**track, "messageId": "m-3"}, headers=TRACEPARENT)
    assert single.status_code == 200, single.text
    traces = await traces_on_topic(broker.bootstrap, 4)  # the identify also publishes its alias
    assert set(traces) == {"m-1", "m-1#alias", "m-2", "m-3"}
    assert set(traces.values()) == {(TRACE, TRACE)}


async def test_cloudevents_take_the_http_traceparent_unless_the_event_has_its_own(ingest, broker) -> None:
    def cloudevent(event_id: str, **extensions: str) -> dict[str, Any]:
        return {
            "specversion": "1.0",
            "id": event_id,
            "source": "/pos/shanghai",
            "type": "purchase",
            "subject": "c-1",
            "time": "2026-11-20T10:00:00+08:00",
            "data": {"order_id": f"o-{event_id}", "amount": "10.00"},
            **extensions,
        }

    events = [cloudevent("ce-1"), cloudevent("ce-own", traceparent=f"00-{OWN_TRACE}-b7ad6b7169203331-01")]
    response = await ingest.post(
        "/v1/cloudevents",
        content=json.dumps(events),
        headers={"Content-Type": "application/cloudevents-batch+json", **TRACEPARENT},
    )
    assert response.status_code == 202, response.text
    traces = await traces_on_topic(broker.bootstrap, 2)
    assert traces == {"ce-1": (TRACE, TRACE), "ce-own": (OWN_TRACE, OWN_TRACE)}


async def test_a_backfill_run_is_one_trace(broker: Broker, tmp_path: Path) -> None:
    orders = tmp_path / "orders.csv"
    orders.write_text(
        "order_id,customer_id,amount,occurred_at\nSO-1,m-1,59.00,2024-02-10T20:30:00+08:00\n"
        "SO-2,m-2,12.00,2024-02-11T09:00:00+08:00\n"
    )
    result = await asyncio.to_thread(
        CliRunner().invoke,
        cli,
        ["import", str(orders), "--no-progress"],
        env={"HUITOU_KAFKA_BOOTSTRAP_SERVERS": broker.bootstrap},
    )
    assert result.exit_code == 0, result.output
    traces = await traces_on_topic(broker.bootstrap, 2)
    ((header_trace, envelope_trace),) = set(traces.values())
    assert is_trace_id(header_trace) and header_trace == envelope_trace
    assert f"trace id of this run (events without one of their own): {header_trace}" in result.output
