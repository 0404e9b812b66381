"""Batched transactions in the consumer loop, on a real broker and real databases (SQLite and
PostgreSQL): a run of a poll's records, across its partitions, is applied in one transaction, and every failure
keeps the guarantees of one-event-per-transaction — a poison event is isolated while the rest
of its batch is applied in order, a transient database failure mid-batch loses and doubles
nothing, and a crash between the database commit and the offset commit replays as a no-op."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from decimal import Decimal

import pytest
from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from aiokafka.partitioner import DefaultPartitioner
from sqlalchemy import func, select, text
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.ext.asyncio import AsyncSession

from services.scoring.tables import processed_events
from services.scoring.worker import Apply, ScoringHandler, _Batch
from shared.contracts import AnyEvent, to_wire
from shared.kafka import BatchHandler, ConsumerLoop
from shared.service import is_transient
from shared.topics import CUSTOMERS, DLQ, EVENTS
from tests.integration.test_consumer_loop import Scoring, open_scoring, produce, purchase, run_until
from tests.support import Broker, read_topic

pytestmark = pytest.mark.broker


class Recording:
    """The real scoring handler, recording which events each transaction began, with a fault
    injected before chosen events (``fail``) or after a chosen commit (``after_commit``)."""

    def __init__(self, real: ScoringHandler, fail: dict[str, Exception] | None = None) -> None:
        self.real = real
        self.fail = dict(fail or {})
        self.transactions: list[list[str]] = []
        self.upcoming: list[list[str]] = []
        self.committed: list[list[str]] = []
        self.crash_after_commit = False

    async def __call__(self, event: AnyEvent, record: ConsumerRecord[bytes, bytes] | None = None) -> None:
        async with self.transaction() as apply:
            await apply(event, record)

    @asynccontextmanager
    async def transaction(self, upcoming: Sequence[AnyEvent] = ()) -> AsyncIterator[Apply]:
        begun: list[str] = []
        self.transactions.append(begun)
        self.upcoming.append([e.event_id for e in upcoming])
        async with self.real.transaction(upcoming) as apply:

            async def faulty(event: AnyEvent, record: ConsumerRecord[bytes, bytes] | None = None) -> None:
                begun.append(event.event_id)
                if event.event_id in self.fail:
                    raise self.fail[event.event_id]
                await apply(event, record)

            yield faulty
        self.committed.append(begun)
        if self.crash_after_commit:
            raise asyncio.CancelledError  # the worker dies after the commit, before the offsets


class DropsConnection(ScoringHandler):
    """Scoring whose database connection fails under it once, in the middle of a batch: on
    PostgreSQL the server really terminates the session; SQLite has no server to do that, so the
    error aiosqlite raises for a locked database is raised in its place."""

    def __init__(self, *args: object, at_event: str, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.at_event = at_event
        self.dropped = 0

    async def _apply(self, session: AsyncSession, event: AnyEvent, batch: _Batch) -> None:
        if event.event_id == self.at_event and not self.dropped:
            self.dropped += 1
            if (await session.connection()).dialect.name == "postgresql":
                await session.execute(text("SELECT pg_terminate_backend(pg_backend_pid())"))
            raise OperationalError("INSERT", {}, sqlite3.OperationalError("database is locked"))
        await super()._apply(session, event, batch)


@pytest.fixture
async def scoring(broker: Broker, database_url: str) -> AsyncIterator[Scoring]:
    async with open_scoring(broker, database_url) as wired:
        yield wired


def batched_loop(scoring: Scoring, handler: BatchHandler) -> ConsumerLoop:
    return ConsumerLoop(
        topics=[EVENTS],
        group_id="huitou-scoring",
        bootstrap_servers=scoring.broker.bootstrap,
        handler=handler,
        producer=scoring.producer,
        metrics=scoring.metrics,
        service="scoring",
        is_transient=is_transient,
        max_attempts=2,
        backoff_cap_seconds=0.5,
        # Generous budgets, so each fetched partition batch is one transaction unless a fault splits it.
        transaction_seconds=30,
    )


def orders(count: int, customer_id: str = "c-1", prefix: str = "e") -> list[tuple[str, bytes]]:
    return [
        (customer_id, to_wire(purchase(f"{prefix}-{i:02d}", f"o-{prefix}-{i:02d}", f"{i + 1}.00", customer_id)))
        for i in range(count)
    ]


async def processed_count(scoring: Scoring) -> int:
    async with scoring.sessions() as session:  # type: ignore[attr-defined]
        return int(await session.scalar(select(func.count()).select_from(processed_events)) or 0)


def causes(updates: list[ConsumerRecord[bytes, bytes]], customer_id: str) -> list[tuple[int, str]]:
    bodies = [json.loads(r.value) for r in updates if r.key == customer_id.encode()]
    return [(b["payload"]["version"], b["payload"]["cause"]["event_id"]) for b in bodies]


async def test_one_transaction_applies_a_run_of_a_partitions_records(scoring: Scoring) -> None:
    await produce(scoring.broker, *orders(20))
    handler = Recording(ScoringHandler(scoring.sessions, scoring.relay, scoring.metrics))
    loop = batched_loop(scoring, handler)

    async def all_applied():
        file = await scoring.file("c-1")
        return file if file and file.totals.order_count == 20 else None

    await run_until(loop, all_applied, "twenty orders")
    assert [e for t in handler.committed for e in t] == [f"e-{i:02d}" for i in range(20)]
    assert len(handler.committed) < 20, "every event had a transaction of its own: nothing was batched"
    # Each transaction was told its events up front (what a handler prefetches by).
    assert all(told[: len(done)] == done for told, done in zip(handler.upcoming, handler.committed, strict=True))
    updates = await read_topic(scoring.broker.bootstrap, CUSTOMERS, expect_at_least=20)
    assert causes(updates, "c-1") == [(i + 1, f"e-{i:02d}") for i in range(20)]


CUSTOMERS_ON_FOUR_PARTITIONS = ("c-1", "c-2", "c-3", "c-6")


def partition_of(customer_id: str) -> int:
    """Where the producer puts a customer's events (aiokafka's default partitioner, 6 partitions)."""
    return int(DefaultPartitioner()(customer_id.encode(), list(range(6)), list(range(6))))


async def committed_offsets(scoring: Scoring) -> dict[int, int | None]:
    consumer = AIOKafkaConsumer(bootstrap_servers=scoring.broker.bootstrap, group_id="huitou-scoring")
    await consumer.start()
    try:
        return {p: await consumer.committed(TopicPartition(EVENTS, p)) for p in range(6)}
    finally:
        await consumer.stop()


async def test_one_transaction_spans_the_partitions_of_a_poll(scoring: Scoring) -> None:
    """A transaction per partition paid its fixed cost up to six times a poll; one per poll keeps
    each partition's order and commits every partition's offset after it."""
    assert len({partition_of(c) for c in CUSTOMERS_ON_FOUR_PARTITIONS}) == 4
    await produce(scoring.broker, *[m for c in CUSTOMERS_ON_FOUR_PARTITIONS for m in orders(5, c, prefix=c)])
    handler = Recording(ScoringHandler(scoring.sessions, scoring.relay, scoring.metrics))

    async def all_applied():
        files = [await scoring.file(c) for c in CUSTOMERS_ON_FOUR_PARTITIONS]
        return all(f and f.totals.order_count == 5 for f in files) or None

    await run_until(batched_loop(scoring, handler), all_applied, "every customer's five orders")
    spans = [{partition_of(e.rsplit("-", 1)[0]) for e in t} for t in handler.committed]
    assert max(len(partitions) for partitions in spans) >= 2, spans
    applied = [e for t in handler.committed for e in t]
    for customer in CUSTOMERS_ON_FOUR_PARTITIONS:
        assert [e for e in applied if e.startswith(customer + "-")] == [f"{customer}-{i:02d}" for i in range(5)]
    assert len(applied) == 20
    offsets = await committed_offsets(scoring)
    assert {p: offsets[p] for p in {partition_of(c) for c in CUSTOMERS_ON_FOUR_PARTITIONS}} == {
        partition_of(c): 5 for c in CUSTOMERS_ON_FOUR_PARTITIONS
    }
    updates = await read_topic(scoring.broker.bootstrap, CUSTOMERS, expect_at_least=20)
    for customer in CUSTOMERS_ON_FOUR_PARTITIONS:
        assert causes(updates, customer) == [(i + 1, f"{customer}-{i:02d}") for i in range(5)]


async def test_a_transient_failure_across_partitions_rewinds_each_partition_and_loses_nothing(
    scoring: Scoring,
) -> None:
    await produce(scoring.broker, *[m for c in CUSTOMERS_ON_FOUR_PARTITIONS for m in orders(5, c, prefix=c)])
    # Whatever order the poll brings the partitions in, the failure comes after some of its events.
    handler = DropsConnection(scoring.sessions, scoring.relay, scoring.metrics, at_event="c-3-04")

    async def all_applied():
        files = [await scoring.file(c) for c in CUSTOMERS_ON_FOUR_PARTITIONS]
        return all(f and f.totals.order_count == 5 for f in files) or None

    await run_until(batched_loop(scoring, handler), all_applied, "every order after the failure")
    assert handler.dropped == 1
    for customer in CUSTOMERS_ON_FOUR_PARTITIONS:
        file = await scoring.file(customer)
        assert file is not None and file.version == 5
        assert file.totals.revenue == sum(Decimal(i + 1) for i in range(5))
    updates = await read_topic(scoring.broker.bootstrap, CUSTOMERS, expect_at_least=20)
    for customer in CUSTOMERS_ON_FOUR_PARTITIONS:
        assert causes(updates, customer) == [(i + 1, f"{customer}-{i:02d}") for i in range(5)]
    assert scoring.metrics.duplicates_skipped.labels("scoring")._value.get() == 0
    assert await processed_count(scoring) == 20
    offsets = await committed_offsets(scoring)
    assert all(offsets[partition_of(c)] == 5 for c in CUSTOMERS_ON_FOUR_PARTITIONS)


async def test_a_partition_lost_part_way_through_a_poll_does_not_hold_back_the_others_commit(
    scoring: Scoring,
) -> None:
    """aiokafka refuses a whole commit naming a partition no longer assigned: the loop commits
    the partitions it still owns and stops the poll (the lost one's new owner replays it)."""
    await produce(scoring.broker, *orders(2, "c-1"), *orders(1, "c-2"))
    kept, lost = TopicPartition(EVENTS, partition_of("c-1")), TopicPartition(EVENTS, partition_of("c-2"))
    loop = batched_loop(scoring, ScoringHandler(scoring.sessions, scoring.relay, scoring.metrics))
    consumer = AIOKafkaConsumer(
        bootstrap_servers=scoring.broker.bootstrap, group_id="huitou-scoring", enable_auto_commit=False
    )
    await consumer.start()
    try:
        consumer.assign([kept])  # ``lost`` went to another member in a rebalance
        assert not await loop._commit(consumer, {kept: 1, lost: 1})  # committed, and the poll stops
        offsets = await committed_offsets(scoring)
        assert (offsets[kept.partition], offsets[lost.partition]) == (1, None)
        assert await loop._commit(consumer, {kept: 2})
    finally:
        await consumer.stop()
    assert (await committed_offsets(scoring))[kept.partition] == 2


async def test_poison_in_the_middle_of_a_batch_is_isolated_and_the_rest_applied_in_order(scoring: Scoring) -> None:
    messages = orders(10)
    messages.insert(7, ("c-1", b"{not json"))  # unparseable: straight to the DLQ, the run goes on
    messages += orders(3, customer_id="c-2", prefix="f")  # another customer, maybe another partition
    await produce(scoring.broker, *messages)
    handler = Recording(
        ScoringHandler(scoring.sessions, scoring.relay, scoring.metrics), fail={"e-04": ValueError("a bug in a rule")}
    )

    async def both_done():
        first, second = await scoring.file("c-1"), await scoring.file("c-2")
        done = first and second and first.totals.order_count == 9 and second.totals.order_count == 3
        return done and len(await read_topic(scoring.broker.bootstrap, DLQ, timeout=1)) == 2

    await run_until(batched_loop(scoring, handler), both_done, "every good event and two DLQ entries")

    good = [f"e-{i:02d}" for i in range(10) if i != 4]
    first = await scoring.file("c-1")
    assert first is not None and first.totals.revenue == sum(Decimal(i + 1) for i in range(10) if i != 4)
    assert first.version == 9
    updates = await read_topic(scoring.broker.bootstrap, CUSTOMERS, expect_at_least=12)
    assert causes(updates, "c-1") == [(n + 1, e) for n, e in enumerate(good)]
    assert [version for version, _ in causes(updates, "c-2")] == [1, 2, 3]

    dead = [json.loads(r.value) for r in await read_topic(scoring.broker.bootstrap, DLQ, expect_at_least=2)]
    assert sorted(b["offset"] for b in dead) == [4, 7]
    failed = next(b for b in dead if b["offset"] == 4)
    assert json.loads(failed["value"])["event_id"] == "e-04" and "a bug in a rule" in failed["error"]
    assert "unparseable" in next(b for b in dead if b["offset"] == 7)["error"]

    # The bad event was retried on its own, max_attempts times, and never committed.
    assert sum(t == ["e-04"] for t in handler.transactions) == 2
    assert all("e-04" not in t for t in handler.committed)
    assert sorted(e for t in handler.committed for e in t) == sorted([*good, "f-00", "f-01", "f-02"])
    assert await processed_count(scoring) == 12


async def test_transient_database_failure_mid_batch_loses_nothing_and_applies_nothing_twice(
    scoring: Scoring,
) -> None:
    await produce(scoring.broker, *orders(10))
    handler = DropsConnection(scoring.sessions, scoring.relay, scoring.metrics, at_event="e-05")

    async def all_applied():
        file = await scoring.file("c-1")
        return file if file and file.totals.order_count == 10 else None

    await run_until(batched_loop(scoring, handler), all_applied, "every order after the failure")
    assert handler.dropped == 1
    file = await scoring.file("c-1")
    assert file is not None
    assert file.version == 10 and file.totals.revenue == sum(Decimal(i + 1) for i in range(10))
    updates = await read_topic(scoring.broker.bootstrap, CUSTOMERS, expect_at_least=10)
    assert causes(updates, "c-1") == [(i + 1, f"e-{i:02d}") for i in range(10)]
    # The five events applied before the failure rolled back with it: none counts as seen before.
    assert scoring.metrics.duplicates_skipped.labels("scoring")._value.get() == 0
    assert await processed_count(scoring) == 10
    assert await read_topic(scoring.broker.bootstrap, DLQ, timeout=1) == []


async def test_the_dropped_connection_is_a_transient_failure(scoring: Scoring) -> None:
    """The fault injected above is one the loop retries (not one it isolates and dead-letters)."""
    handler = DropsConnection(scoring.sessions, scoring.relay, scoring.metrics, at_event="e-00")
    with pytest.raises(DBAPIError) as raised:
        await handler(purchase("e-00", "o-1", "1.00"))
    assert is_transient(raised.value)
    assert await processed_count(scoring) == 0


async def test_crash_after_the_batch_commit_before_the_offset_commit_replays_as_a_no_op(scoring: Scoring) -> None:
    await produce(scoring.broker, *orders(8))
    crashing = Recording(ScoringHandler(scoring.sessions, scoring.relay, scoring.metrics))
    crashing.crash_after_commit = True
    first = batched_loop(scoring, crashing)
    task = asyncio.create_task(first.run())
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(task, 45)
    assert len(crashing.committed) == 1
    in_the_crashed_batch = len(crashing.committed[0])
    assert in_the_crashed_batch > 1, "the crash should hit a batch, not a single event"
    assert await processed_count(scoring) == in_the_crashed_batch

    # A new worker in the same group re-reads the uncommitted batch and must skip all of it.
    replaying = Recording(ScoringHandler(scoring.sessions, scoring.relay, scoring.metrics))

    async def replayed():
        return sum(len(t) for t in replaying.committed) >= 8

    await run_until(batched_loop(scoring, replaying), replayed, "the whole partition to be re-read")
    assert replaying.committed[0][:in_the_crashed_batch] == crashing.committed[0]
    assert scoring.metrics.duplicates_skipped.labels("scoring")._value.get() == in_the_crashed_batch
    file = await scoring.file("c-1")
    assert file is not None and file.version == 8
    assert file.totals.revenue == sum(Decimal(i + 1) for i in range(8))
    updates = await read_topic(scoring.broker.bootstrap, CUSTOMERS, expect_at_least=8)
    assert causes(updates, "c-1") == [(i + 1, f"e-{i:02d}") for i in range(8)]
