"""Trace context from an event to everything it causes, on a real broker and real databases
(SQLite and PostgreSQL): outbox rows keep their Kafka headers through the relay, a
customer.updated carries its cause's trace, a touch carries the trace of the event that planned
it from scheduling to sending, and log lines name the event, customer and trace being handled."""

from __future__ import annotations

import asyncio
import io
import json
import logging
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.outreach import repository as outreach_repository
from services.outreach.care import plan_update
from services.outreach.planning import apply_planned
from services.outreach.tables import outbox as outreach_outbox
from services.scoring.api import MIGRATIONS as SCORING_MIGRATIONS
from services.scoring.tables import outbox as scoring_outbox
from services.scoring.worker import ScoringHandler
from shared.contracts import CustomerCause, CustomerUpdatedPayload, PurchaseEvent, PurchasePayload, TouchStatus
from shared.db import create_engine, migrate, session_factory, transaction
from shared.kafka import EventProducer, Outgoing
from shared.ledger import OutboxRelay, enqueue
from shared.observability import JsonFormatter, ServiceMetrics
from shared.topics import CUSTOMERS, TOUCHES
from shared.tracing import TRACEPARENT, bound, kafka_headers, new_trace_id, trace_id_from_headers
from tests.integration import test_outreach_dispatch as dispatch_tests
from tests.support import Broker, read_topic

harness = dispatch_tests.harness  # the dispatcher tests' fixture: real SMTP server, real database


@dataclass
class Scoring:
    sessions: async_sessionmaker[AsyncSession]
    producer: EventProducer
    relay: OutboxRelay


@pytest.fixture
async def scoring(broker: Broker, database_url: str) -> AsyncIterator[Scoring]:
    engine = create_engine(database_url, "scoring")
    await migrate(engine, SCORING_MIGRATIONS, "scoring")
    sessions = session_factory(engine)
    producer = EventProducer(broker.bootstrap)
    await producer.start()
    try:
        yield Scoring(sessions, producer, OutboxRelay(sessions, scoring_outbox, producer, ServiceMetrics(), "scoring"))
    finally:
        await producer.stop()
        await engine.dispose()


@pytest.mark.broker
async def test_the_relay_publishes_each_rows_headers_unchanged(scoring: Scoring, broker: Broker) -> None:
    trace_id = new_trace_id()
    traced = (*kafka_headers(trace_id), ("x-binary", b"\x00\xff\xfe"))
    async with scoring.sessions() as session, session.begin():
        await enqueue(session, scoring_outbox, Outgoing(CUSTOMERS, "c-1", b'{"n": 1}', traced))
        await enqueue(session, scoring_outbox, Outgoing(CUSTOMERS, "c-1", b'{"n": 2}'))
    async with scoring.sessions() as session:
        stored = (await session.execute(select(scoring_outbox.c.headers).order_by(scoring_outbox.c.id))).scalars()
        assert [h is None for h in stored] == [False, True]  # no headers, no JSON: SQL NULL

    assert await scoring.relay.relay_once() == 2
    first, second = await read_topic(broker.bootstrap, CUSTOMERS, expect_at_least=2)
    assert (first.value, tuple(first.headers)) == (b'{"n": 1}', traced)
    assert (second.value, tuple(second.headers)) == (b'{"n": 2}', ())


@pytest.mark.broker
async def test_customer_updated_carries_the_trace_of_the_event_that_caused_it(scoring: Scoring, broker: Broker) -> None:
    trace_id = new_trace_id()
    handle = ScoringHandler(scoring.sessions, scoring.relay, ServiceMetrics())
    purchase = PurchaseEvent(
        event_id="e-traced",
        customer_id="c-7",
        occurred_at=datetime(2026, 11, 20, 8, 0, tzinfo=UTC),
        trace_id=trace_id,
        payload=PurchasePayload(order_id="o-1", amount=Decimal("42.00")),
    )
    await handle(purchase, None)
    await handle(purchase.model_copy(update={"event_id": "e-untraced", "customer_id": "c-8", "trace_id": None}), None)
    assert await scoring.relay.relay_once() == 2
    updates = {r.key: r for r in await read_topic(broker.bootstrap, CUSTOMERS, expect_at_least=2)}
    traced, untraced = updates[b"c-7"], updates[b"c-8"]
    assert json.loads(traced.value)["trace_id"] == trace_id
    assert trace_id_from_headers(traced.headers) == trace_id
    assert tuple(untraced.headers) == ()  # no trace, no header: nothing is made up
    [(name, value)] = traced.headers
    assert name == TRACEPARENT and value.decode().split("-")[1] == trace_id


@pytest.mark.broker
async def test_a_touch_carries_its_trace_from_scheduling_to_sending(
    harness: dispatch_tests.Harness, broker: Broker
) -> None:
    trace_id = new_trace_id()
    customer = dispatch_tests.not_held_out("traced", harness.settings)
    touch_id = await purchase_with_trace(harness, customer, trace_id)
    assert (await harness.touch(touch_id))["trace_id"] == trace_id
    dispatcher = harness.dispatcher()
    assert await dispatcher.dispatch_once() == 1
    assert (await harness.touch(touch_id))["status"] == "sent"

    producer = EventProducer(broker.bootstrap)
    await producer.start()
    try:
        relay = OutboxRelay(harness.sessions, outreach_outbox, producer, ServiceMetrics(), "outreach")
        assert await relay.relay_once() == 2
    finally:
        await producer.stop()
    records = await read_topic(broker.bootstrap, TOUCHES, expect_at_least=2)
    by_status = {json.loads(r.value)["payload"]["status"]: r for r in records}
    assert set(by_status) == {"scheduled", "sent"}
    for record in by_status.values():
        assert trace_id_from_headers(record.headers) == trace_id
        assert json.loads(record.value)["trace_id"] == trace_id
    spans = {dict(r.headers)[TRACEPARENT].split(b"-")[2] for r in records}
    assert len(spans) == 2  # one trace, a span per hop


async def purchase_with_trace(harness: dispatch_tests.Harness, customer_id: str, trace_id: str) -> str:
    """What outreach does with a purchase's customer.updated, as the dispatcher tests' harness does
    it, plus the trace of that purchase: a follow-up touch, due now."""
    snapshot = dispatch_tests.consenting()
    book = (await harness.catalog.current()).book
    payload = CustomerUpdatedPayload(
        version=1,
        cause=CustomerCause(
            event_id=f"ev-{customer_id}",
            type="purchase",
            occurred_at=harness.clock.now - timedelta(days=3),
            order_id="o-1",
            amount=Decimal("88.80"),
        ),
        snapshot=snapshot,
    )
    plans = plan_update(customer_id, payload, book, now=harness.clock.now)
    [planned] = [p for p in plans if p.plan == "post_purchase_follow_up"]
    async with transaction(harness.sessions) as session:
        await outreach_repository.remember_customer(session, customer_id, 1, snapshot, harness.clock.now)
        for message in await apply_planned(
            session,
            planned,
            cause_event_id=payload.cause.event_id,
            book=book,
            settings=harness.settings,
            now=harness.clock.now,
            snapshot=snapshot,
            trace_id=trace_id,
        ):
            await enqueue(session, outreach_outbox, message)
    return outreach_repository.touch_id_for(planned.idempotency_key)


async def test_a_touch_lifecycle_message_built_from_the_row_carries_its_trace(
    harness: dispatch_tests.Harness,
) -> None:
    """Operator actions (approve, cancel) and conversions build their message from the stored row."""
    trace_id = new_trace_id()
    touch_id = await purchase_with_trace(harness, dispatch_tests.not_held_out("row", harness.settings), trace_id)
    row = await harness.touch(touch_id)
    cancelled = outreach_repository.touch_lifecycle(row, TouchStatus.CANCELLED, harness.clock.now, reason="test")
    assert trace_id_from_headers(cancelled.headers) == trace_id
    untraced = outreach_repository.touch_lifecycle({**row, "trace_id": None}, TouchStatus.CANCELLED, harness.clock.now)
    assert untraced.headers == ()


# --- logs -------------------------------------------------------------------------------------


@pytest.fixture
def log_lines() -> Iterator[tuple[logging.Logger, io.StringIO]]:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter("scoring"))
    logger = logging.getLogger("huitou.test.tracing")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    try:
        yield logger, stream
    finally:
        logger.removeHandler(handler)


def parsed(stream: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_log_lines_name_the_event_customer_and_trace_being_handled(
    log_lines: tuple[logging.Logger, io.StringIO],
) -> None:
    logger, stream = log_lines
    trace_id = new_trace_id()
    with bound(event_id="e-1", customer_id="c-1", trace_id=trace_id):
        logger.info("folding %s", "e-1")
        with bound(touch_id="t-1", customer_id="c-2"):
            logger.warning("planned", extra={"plan": "birthday"})
    logger.info("idle")
    folding, planned, idle = parsed(stream)
    assert folding["msg"] == "folding e-1" and folding["service"] == "scoring" and folding["level"] == "info"
    assert (folding["event_id"], folding["customer_id"], folding["trace_id"]) == ("e-1", "c-1", trace_id)
    assert (planned["touch_id"], planned["customer_id"], planned["event_id"]) == ("t-1", "c-2", "e-1")
    assert planned["plan"] == "birthday"
    assert not {"event_id", "customer_id", "trace_id", "touch_id"} & set(idle)


async def test_concurrent_handlers_each_log_their_own_ids(log_lines: tuple[logging.Logger, io.StringIO]) -> None:
    logger, stream = log_lines

    async def handle(event_id: str, pause: float) -> None:
        with bound(event_id=event_id, customer_id=f"cust-{event_id}"):
            await asyncio.sleep(pause)  # the other task runs (and binds its ids) meanwhile
            logger.info("done")

    await asyncio.gather(handle("a", 0.05), handle("b", 0.0))
    assert sorted((line["event_id"], line["customer_id"]) for line in parsed(stream)) == [
        ("a", "cust-a"),
        ("b", "cust-b"),
    ]
