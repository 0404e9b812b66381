"""The consumer loop on a real broker and real databases (SQLite and PostgreSQL): duplicates
change nothing, poison goes to the DLQ without stopping the partition, and a crash between the
DB commit and the offset commit replays without double counting."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal

import pytest
from aiokafka import AIOKafkaProducer, ConsumerRecord

from services.scoring import repository
from services.scoring.api import MIGRATIONS
from services.scoring.customer_file import CustomerFile
from services.scoring.tables import outbox
from services.scoring.worker import ScoringHandler
from shared.contracts import AnyEvent, PurchaseEvent, PurchasePayload, to_wire
from shared.db import create_engine, migrate, session_factory
from shared.kafka import ConsumerLoop, EventProducer
from shared.ledger import OutboxRelay
from shared.observability import ServiceMetrics
from shared.service import is_transient
from shared.topics import CUSTOMERS, DLQ, EVENTS
from tests.support import Broker, eventually, read_topic

pytestmark = pytest.mark.broker


@dataclass
class Scoring:
    """Scoring's consumer pieces wired by hand, so a test can stop them at will."""

    broker: Broker
    sessions: object
    producer: EventProducer
    metrics: ServiceMetrics
    relay: OutboxRelay
    tasks: list[asyncio.Task[None]]

    def loop(self, handler=None, **tuning: int) -> ConsumerLoop:
        return ConsumerLoop(
            topics=[EVENTS],
            group_id="huitou-scoring",
            bootstrap_servers=self.broker.bootstrap,
            handler=handler or ScoringHandler(self.sessions, self.relay, self.metrics),
            producer=self.producer,
            metrics=self.metrics,
            service="scoring",
            is_transient=is_transient,
            max_attempts=2,
            **tuning,
        )

    async def file(self, customer_id: str) -> CustomerFile | None:
        async with self.sessions() as session:
            return await repository.load_file(session, customer_id)


@asynccontextmanager
async def open_scoring(broker: Broker, database_url: str) -> AsyncIterator[Scoring]:
    engine = create_engine(database_url, "scoring")
    await migrate(engine, MIGRATIONS, "scoring")
    sessions = session_factory(engine)
    metrics = ServiceMetrics()
    producer = EventProducer(broker.bootstrap, request_timeout_ms=3000)
    await producer.start()
    relay = OutboxRelay(sessions, outbox, producer, metrics, "scoring")
    tasks = [asyncio.create_task(relay.run())]
    try:
        yield Scoring(broker, sessions, producer, metrics, relay, tasks)
    finally:
        relay.stop()
        await asyncio.gather(*tasks, return_exceptions=True)
        await producer.stop()
        await engine.dispose()


@pytest.fixture
async def scoring(broker: Broker, database_url: str) -> AsyncIterator[Scoring]:
    async with open_scoring(broker, database_url) as wired:
        yield wired


def purchase(event_id: str, order_id: str, amount: str, customer_id: str = "c-1") -> PurchaseEvent:
    return PurchaseEvent(
        event_id=event_id,
        customer_id=customer_id,
        occurred_at=datetime(2026, 11, 20, 8, 0, tzinfo=UTC),
        payload=PurchasePayload(order_id=order_id, amount=Decimal(amount)),
    )


async def produce(broker: Broker, *messages: tuple[str, bytes]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=broker.bootstrap, acks="all")
    await producer.start()
    try:
        for key, value in messages:
            await producer.send_and_wait(EVENTS, value, key=key.encode())
    finally:
        await producer.stop()


async def run_until(loop: ConsumerLoop, condition, what: str) -> None:
    task = asyncio.create_task(loop.run())
    try:
        await eventually(condition, timeout=45, what=what)
    finally:
        loop.stop()
        await asyncio.wait_for(task, 15)


async def test_duplicates_change_nothing(scoring: Scoring) -> None:
    first = purchase("e-1", "o-1", "100.00")
    await produce(
        scoring.broker,
        ("c-1", to_wire(first)),
        ("c-1", to_wire(first)),  # the same event delivered twice
        ("c-1", to_wire(purchase("e-2", "o-1", "100.00"))),  # the same order resent under a new id
        ("c-1", to_wire(purchase("e-3", "o-2", "20.50"))),
    )

    async def all_seen():
        file = await scoring.file("c-1")
        return file if file and file.totals.order_count >= 2 else None

    await run_until(scoring.loop(), all_seen, "both orders folded")
    file = await scoring.file("c-1")
    assert file is not None
    assert file.totals.order_count == 2
    assert file.totals.revenue == Decimal("120.50")
    assert file.version == 2
    updates = await read_topic(scoring.broker.bootstrap, CUSTOMERS, expect_at_least=2)
    assert [json.loads(r.value)["payload"]["version"] for r in updates] == [1, 2]
    assert scoring.metrics.duplicates_skipped.labels("scoring")._value.get() == 1
    lag = {
        sample.labels["partition"]: sample.value
        for metric in scoring.metrics.consumer_lag.collect()
        for sample in metric.samples
        if sample.labels["topic"] == EVENTS
    }
    assert len(lag) == 6 and set(lag.values()) == {0.0}, lag  # every partition exported, all caught up


async def test_the_consumer_fetches_with_the_configured_wait(scoring: Scoring) -> None:
    """The wait reaches aiokafka's fetcher: on the dev broker it is what a hop's latency follows."""
    await produce(scoring.broker, ("c-1", to_wire(purchase("e-1", "o-1", "5.00"))))
    loop = scoring.loop(fetch_max_wait_ms=40)
    fetch_waits: list[int] = []

    async def folded():
        if loop.consumer is not None and loop.consumer._fetcher is not None:
            fetch_waits.append(loop.consumer._fetcher._fetch_max_wait_ms)
        return await scoring.file("c-1")

    await run_until(loop, folded, "the purchase folded")
    assert fetch_waits and set(fetch_waits) == {40}


async def test_poison_goes_to_the_dlq_and_the_partition_keeps_moving(scoring: Scoring) -> None:
    await produce(
        scoring.broker,
        ("c-1", b"{this is not json"),
        ("c-1", json.dumps({"event_id": "x", "type": "purchase", "customer_id": "c-1"}).encode()),
        ("c-1", to_wire(purchase("e-9", "o-9", "9.99"))),
    )

    async def good_one_done():
        return await scoring.file("c-1")

    await run_until(scoring.loop(), good_one_done, "the good event after the poison")
    dead = await read_topic(scoring.broker.bootstrap, DLQ, expect_at_least=2)
    assert len(dead) == 2
    bodies = [json.loads(r.value) for r in dead]
    assert all(b["topic"] == EVENTS and b["service"] == "scoring" for b in bodies)
    assert bodies[0]["value"] == "{this is not json" and "unparseable" in bodies[0]["error"]
    assert "occurred_at" in bodies[1]["error"] and "payload" in bodies[1]["error"]
    assert [r.key for r in dead] == [b"c-1", b"c-1"]
    file = await scoring.file("c-1")
    assert file is not None and file.totals.revenue == Decimal("9.99")


async def test_a_handler_that_keeps_failing_sends_the_event_to_the_dlq(scoring: Scoring) -> None:
    real = ScoringHandler(scoring.sessions, scoring.relay, scoring.metrics)

    async def broken_for_one(event: AnyEvent, record: ConsumerRecord) -> None:
        if event.event_id == "bad":
            raise ValueError("a bug in a rule")
        await real(event, record)

    await produce(
        scoring.broker, ("c-1", to_wire(purchase("bad", "o-1", "1"))), ("c-1", to_wire(purchase("ok", "o-2", "2")))
    )
    await run_until(scoring.loop(broken_for_one), lambda: scoring.file("c-1"), "the event after the failing one")
    dead = await read_topic(scoring.broker.bootstrap, DLQ, expect_at_least=1)
    assert len(dead) == 1 and "a bug in a rule" in json.loads(dead[0].value)["error"]
    file = await scoring.file("c-1")
    assert file is not None and file.totals.order_count == 1


async def test_crash_between_db_commit_and_offset_commit_replays_without_double_counting(scoring: Scoring) -> None:
    await produce(scoring.broker, ("c-1", to_wire(purchase("e-1", "o-1", "42.00"))))
    real = ScoringHandler(scoring.sessions, scoring.relay, scoring.metrics)
    crashed = asyncio.Event()

    async def crash_after_commit(event: AnyEvent, record: ConsumerRecord) -> None:
        await real(event, record)  # the DB transaction has committed here…
        crashed.set()
        raise asyncio.CancelledError  # …and the worker dies before the offset commit

    first = scoring.loop(crash_after_commit)
    task = asyncio.create_task(first.run())
    await asyncio.wait_for(crashed.wait(), 45)
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(task, 15)
    file = await scoring.file("c-1")
    assert file is not None and file.totals.order_count == 1

    # A new worker in the same group re-reads the uncommitted event and must skip it.
    async def replayed():
        return scoring.metrics.duplicates_skipped.labels("scoring")._value.get() >= 1

    await run_until(scoring.loop(), replayed, "the replayed event to be recognised")
    file = await scoring.file("c-1")
    assert file is not None
    assert file.totals.order_count == 1 and file.totals.revenue == Decimal("42.00") and file.version == 1
    updates = await read_topic(scoring.broker.bootstrap, CUSTOMERS, expect_at_least=1)
    assert len(updates) == 1
