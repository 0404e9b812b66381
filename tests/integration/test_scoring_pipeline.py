"""Scoring through the real pipeline — a real broker, SQLite and PostgreSQL:

* CDNOW transactions posted to huitou.events as historical purchase events give, after a refit
  as of the end of the calibration period, the published BG/NBD parameters and the same fit as
  the maths module on the same transactions; per-customer predictions match it too.
* Out-of-order delivery gives the same customer files as in-order delivery.
* Replaying a partition (a new consumer group from the earliest offset, or the same events
  produced again) and killing the worker mid-batch leave every customer file identical.

The CDNOW test uses lifetimes' CDNOW_sample (the 2,357-customer 1/10th sample of CDNOW_master on
which FHL 2005 fitted the published parameters; 6,919 orders) to stay within CI time (about a
minute per database on two shared cores). bench/bench_scoring.py fits the full CDNOW_master
(69,659 orders, 23,570 customers) from the orders table and measures throughput on part of it.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from importlib.util import find_spec
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from aiokafka import ConsumerRecord
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from services.scoring import clv, repository
from services.scoring.api import MIGRATIONS
from services.scoring.clock import Clock
from services.scoring.engine import ModelStore
from services.scoring.maintenance import Maintenance
from services.scoring.settings import ScoringSettings
from services.scoring.tables import (
    contacts,
    customer_files,
    customer_tags,
    orders,
    outbox,
    processed_events,
    referrals,
    refunds,
    score_history,
)
from services.scoring.worker import ScoringHandler
from shared.contracts import (
    AnyEvent,
    ConsentEvent,
    ConsentPayload,
    IdentifyEvent,
    IdentifyPayload,
    InteractionEvent,
    InteractionKind,
    InteractionPayload,
    LineItem,
    PurchaseEvent,
    PurchasePayload,
    Purpose,
    RefundEvent,
    RefundPayload,
    Traits,
    to_wire,
)
from shared.db import create_engine, migrate, session_factory
from shared.kafka import ConsumerLoop, EventProducer, Outgoing
from shared.ledger import OutboxRelay
from shared.observability import ServiceMetrics
from shared.service import is_transient
from shared.topics import EVENTS
from tests.conftest import _fresh_pg_database
from tests.support import Broker, eventually

pytestmark = pytest.mark.broker

CDNOW = Path(find_spec("lifetimes").origin).parent / "datasets"  # found without importing lifetimes
CALIBRATION_END = datetime(1997, 9, 30, tzinfo=UTC)
PUBLISHED = (0.243, 4.414, 0.793, 2.426)
IGNORED_COLUMNS = {"created_at", "updated_at"}
Event = IdentifyEvent | PurchaseEvent | RefundEvent | InteractionEvent | ConsentEvent


# --- harness (also used by the other scoring integration tests) -----------------------------------


@dataclass
class Stack:
    """Scoring's pieces wired by hand on one database: handler, relay, maintenance."""

    engine: AsyncEngine
    sessions: async_sessionmaker[AsyncSession]
    settings: ScoringSettings
    metrics: ServiceMetrics
    models: ModelStore
    clock: Clock
    relay: OutboxRelay
    producer: EventProducer
    maintenance: Maintenance
    handler: ScoringHandler
    tasks: list[asyncio.Task[Any]] = field(default_factory=list)

    async def feed(self, events: list[Event]) -> None:
        """Apply events straight through the handler, in the given order (no broker)."""
        for event in events:
            await self.handler(event)

    async def count(self, table: Any) -> int:
        async with self.sessions() as session:
            return int(await session.scalar(select(func.count()).select_from(table)) or 0)


async def open_stack(
    database_url: str,
    producer: EventProducer,
    *,
    with_clock: Clock | None = None,
    run_relay: bool = True,
    **overrides: Any,
) -> Stack:
    settings = ScoringSettings(**{"clock": "replay", "min_customers_for_fit": 20, **overrides})
    engine = create_engine(database_url, "scoring")
    await migrate(engine, MIGRATIONS, "scoring")
    sessions = session_factory(engine)
    metrics = ServiceMetrics()
    clock = with_clock or Clock(settings.clock)
    models = ModelStore(sessions, poll_seconds=0)
    relay = OutboxRelay(sessions, outbox, producer, metrics, "scoring", idle_poll_seconds=0.2)
    handler = ScoringHandler(sessions, relay, metrics, settings=settings, models=models, clock=clock)
    maintenance = Maintenance(sessions, relay, models, settings, clock)
    stack = Stack(engine, sessions, settings, metrics, models, clock, relay, producer, maintenance, handler)
    if run_relay:
        stack.tasks.append(asyncio.create_task(relay.run()))
    return stack


async def close_stack(stack: Stack) -> None:
    stack.relay.stop()
    await asyncio.gather(*stack.tasks, return_exceptions=True)
    await stack.engine.dispose()


async def second_database(database_url: str, tmp_path: Path, request: pytest.FixtureRequest, name: str) -> str:
    """Another empty database on the same backend as ``database_url``."""
    if database_url.startswith("sqlite"):
        return f"sqlite+aiosqlite:///{tmp_path / (name + '.db')}"
    return await _fresh_pg_database(request.getfixturevalue("pg_base_url"))


@pytest.fixture
async def producer(broker: Broker) -> AsyncIterator[EventProducer]:
    running = EventProducer(broker.bootstrap, request_timeout_ms=10000)
    await running.start()
    try:
        yield running
    finally:
        await running.stop()


async def publish(producer: EventProducer, events: list[Event]) -> None:
    """Post events onto huitou.events with acks=all, keyed by customer, in the given order."""
    for start in range(0, len(events), 500):
        chunk = events[start : start + 500]
        await producer.publish_many([Outgoing(EVENTS, e.customer_id, to_wire(e)) for e in chunk])


Handler = Callable[[AnyEvent, ConsumerRecord[bytes, bytes]], Awaitable[None]]


def consumer(broker: Broker, stack: Stack, group: str, handler: Handler | None = None) -> ConsumerLoop:
    return ConsumerLoop(
        topics=[EVENTS],
        group_id=group,
        bootstrap_servers=broker.bootstrap,
        handler=handler or stack.handler,
        producer=stack.producer,
        metrics=stack.metrics,
        service="scoring",
        is_transient=is_transient,
        max_attempts=2,
    )


async def consume_until(
    loop: ConsumerLoop, done: Callable[[], Awaitable[Any]], what: str, timeout: float = 240
) -> None:
    task = asyncio.create_task(loop.run())
    try:
        await eventually(done, timeout=timeout, what=what)
    finally:
        loop.stop()
        await asyncio.wait_for(task, 30)


def processed_at_least(stack: Stack, n: int) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        return await stack.count(processed_events) >= n

    return check


STATE_TABLES = {
    "customer_files": (customer_files, ("customer_id",)),
    "orders": (orders, ("customer_id", "order_id")),
    "refunds": (refunds, ("customer_id", "event_id")),
    "referrals": (referrals, ("referrer_id", "referred_customer_id")),
    "customer_tags": (customer_tags, ("customer_id", "tag")),
    "contacts": (contacts, ("customer_id", "contact_id")),
}


async def file_state(stack: Stack) -> dict[str, list[dict[str, Any]]]:
    """Every customer-file row, in key order, without the bookkeeping timestamps."""
    state = {}
    async with stack.sessions() as session:
        for name, (table, key) in STATE_TABLES.items():
            rows = await session.execute(select(table).order_by(*(table.c[k] for k in key)))
            state[name] = [{k: v for k, v in row.items() if k not in IGNORED_COLUMNS} for row in rows.mappings().all()]
    return state


def assert_same_files(left: dict[str, list[dict[str, Any]]], right: dict[str, list[dict[str, Any]]]) -> None:
    for name in STATE_TABLES:
        assert len(left[name]) == len(right[name]), f"{name}: {len(left[name])} vs {len(right[name])} rows"
        for a, b in zip(left[name], right[name], strict=True):
            differing = {k: (a[k], b[k]) for k in a if a[k] != b[k]}
            assert not differing, f"{name} {[a[k] for k in STATE_TABLES[name][1]]} differs: {differing}"


# --- data ------------------------------------------------------------------------------------------


def cdnow_events(name: str = "CDNOW_sample.txt") -> tuple[list[Event], pd.DataFrame]:
    """CDNOW transactions as historical purchase events (each line one order at midnight UTC)."""
    frame = pd.read_csv(CDNOW / name, sep=r"\s+", header=None)
    frame = frame.iloc[:, [0, -3, -1]] if frame.shape[1] == 4 else frame.iloc[:, [1, 2, 4]]
    frame.columns = ["customer", "date", "amount"]
    events: list[Event] = []
    for index, (customer, day, amount) in enumerate(frame.itertuples(index=False)):
        at = datetime.strptime(str(day), "%Y%m%d").replace(tzinfo=UTC)
        events.append(
            PurchaseEvent(
                event_id=f"cdnow-{index}",
                customer_id=f"cdnow-{customer}",
                occurred_at=at,
                historical=True,
                payload=PurchasePayload(order_id=f"cdnow-order-{index}", amount=Decimal(str(amount)), currency="USD"),
            )
        )
    return events, frame


def scenario(customers: int, seed: int, start: datetime = datetime(2025, 1, 6, 9, tzinfo=UTC)) -> list[Event]:
    """A year of mixed traffic for ``customers`` customers, in event-time order: purchases (some
    resent), refunds (some before their order), profile changes (one at a tied instant), consents,
    visits, feedback, complaints and their resolutions, referrals, and prospects who only browse."""
    rng = random.Random(seed)
    events: list[Event] = []
    serial = 0

    def eid() -> str:
        nonlocal serial
        serial += 1
        return f"s{seed}-e{serial}"

    for c in range(customers):
        cid = f"s{seed}-c{c}"
        at = start + timedelta(hours=rng.randint(0, 24 * 60))
        events.append(
            IdentifyEvent(
                event_id=eid(),
                customer_id=cid,
                occurred_at=at,
                payload=IdentifyPayload(traits=Traits(name=f"Customer {c}", email=f"c{c}@example.cn", locale="zh-CN")),
            )
        )
        events.append(
            IdentifyEvent(  # same instant, different value: the file must not depend on which comes first
                event_id=eid(),
                customer_id=cid,
                occurred_at=at,
                payload=IdentifyPayload(traits=Traits(phone=f"+86138{c:08d}", email=f"alt{c}@example.cn")),
            )
        )
        events.append(
            ConsentEvent(
                event_id=eid(),
                customer_id=cid,
                occurred_at=at + timedelta(minutes=1),
                payload=ConsentPayload(channel="all", purpose=Purpose.MARKETING, granted=rng.random() > 0.2),
            )
        )
        if c % 7 == 6:  # a prospect: browses, never buys
            for _ in range(rng.randint(1, 4)):
                events.append(
                    InteractionEvent(
                        event_id=eid(),
                        customer_id=cid,
                        occurred_at=at + timedelta(days=rng.randint(1, 200)),
                        payload=InteractionPayload(kind=InteractionKind.PRODUCT_VIEWED),
                    )
                )
            continue
        gap = rng.choice([7, 14, 30, 60])
        t = at + timedelta(days=1)
        for k in range(rng.randint(1, 12)):
            order_id = f"{cid}-o{k}"
            purchase = PurchaseEvent(
                event_id=eid(),
                customer_id=cid,
                occurred_at=t,
                payload=PurchasePayload(
                    order_id=order_id,
                    amount=Decimal(rng.randint(500, 40000)) / 100,
                    margin=Decimal(rng.randint(100, 5000)) / 100 if rng.random() < 0.5 else None,
                    share_of_wallet=round(rng.random(), 2) if rng.random() < 0.2 else None,
                    items=[LineItem(name=f"item-{rng.randint(1, 5)}", category=rng.choice(["tea", "ware", "snack"]))],
                ),
            )
            events.append(purchase)
            if rng.random() < 0.1:  # the shop resends the same order under a new event id
                events.append(purchase.model_copy(update={"event_id": eid()}))
            if rng.random() < 0.15:
                events.append(
                    RefundEvent(
                        event_id=eid(),
                        customer_id=cid,
                        occurred_at=t + timedelta(days=2),
                        payload=RefundPayload(order_id=order_id, amount=Decimal(rng.randint(1, 400)) / 100),
                    )
                )
            if rng.random() < 0.3:
                events.append(
                    InteractionEvent(
                        event_id=eid(),
                        customer_id=cid,
                        occurred_at=t + timedelta(days=3),
                        payload=InteractionPayload(kind=InteractionKind.FEEDBACK, rating=rng.randint(1, 5)),
                    )
                )
            if rng.random() < 0.08:
                complaint = f"{cid}-k{k}"
                events.append(
                    InteractionEvent(
                        event_id=eid(),
                        customer_id=cid,
                        occurred_at=t + timedelta(days=4),
                        payload=InteractionPayload(
                            kind=InteractionKind.COMPLAINT, complaint_id=complaint, text="the tea arrived late"
                        ),
                    )
                )
                if rng.random() < 0.7:
                    events.append(
                        InteractionEvent(
                            event_id=eid(),
                            customer_id=cid,
                            occurred_at=t + timedelta(days=5),
                            payload=InteractionPayload(kind=InteractionKind.COMPLAINT_RESOLVED, complaint_id=complaint),
                        )
                    )
            if rng.random() < 0.1:
                events.append(
                    InteractionEvent(
                        event_id=eid(),
                        customer_id=cid,
                        occurred_at=t + timedelta(days=1),
                        payload=InteractionPayload(
                            kind=InteractionKind.REFERRAL, referred_customer_id=f"s{seed}-c{rng.randrange(customers)}"
                        ),
                    )
                )
            t += timedelta(days=max(1, int(rng.expovariate(1 / gap))), hours=rng.randint(0, 12))
        for _ in range(rng.randint(0, 3)):
            events.append(
                InteractionEvent(
                    event_id=eid(),
                    customer_id=cid,
                    occurred_at=at + timedelta(days=rng.randint(0, 300)),
                    payload=InteractionPayload(kind=rng.choice([InteractionKind.VISIT, InteractionKind.EMAIL_OPEN])),
                )
            )
    events.sort(key=lambda e: (e.occurred_at, e.event_id))
    return events


# --- CDNOW through the pipeline ----------------------------------------------------------------------


async def test_cdnow_through_the_pipeline_gives_the_published_fit(
    broker: Broker, database_url: str, producer: EventProducer
) -> None:
    events, frame = cdnow_events()
    stack = await open_stack(database_url, producer)
    try:
        await publish(producer, events)
        await consume_until(
            consumer(broker, stack, "huitou-scoring"), processed_at_least(stack, len(events)), "every CDNOW order"
        )
        assert await stack.count(orders) == len(events)
        model = await stack.maintenance.refit(as_of=CALIBRATION_END)

        # the maths module on the same transactions, without the pipeline
        days = pd.to_datetime(frame["date"].astype(str)).to_numpy()
        summary = clv.summarize(
            frame["customer"].to_numpy(), days, frame["amount"].to_numpy(), as_of=date(1997, 9, 30), unit_days=7.0
        )
        direct = clv.fit_bgnbd(summary.frequency, summary.recency, summary.T)
        spend = clv.fit_gamma_gamma(
            summary.frequency[summary.monetary_value > 0], summary.monetary_value[summary.monetary_value > 0]
        )
        bg = model.bgnbd
        assert model.n_customers == len(summary) == 2357
        assert [round(v, 3) for v in (bg.r, bg.alpha, bg.a, bg.b)] == list(PUBLISHED)
        assert np.allclose((bg.r, bg.alpha, bg.a, bg.b), direct.params, rtol=1e-3)
        assert bg.log_likelihood == pytest.approx(direct.log_likelihood, rel=1e-6)
        assert model.gamma_gamma is not None
        assert np.allclose((model.gamma_gamma.p, model.gamma_gamma.q, model.gamma_gamma.v), spend.params, rtol=1e-3)

        # per-customer predictions after re-scoring, against the maths module at each file's as-of
        await stack.maintenance.rescore_pending()
        async with stack.sessions() as session:
            for customer in ("cdnow-4", "cdnow-18", "cdnow-23570", "cdnow-1"):
                file = await repository.load_file(session, customer)
                lines = await repository.order_lines(session, customer)
                if file is None:
                    continue
                assert file.scores is not None and file.scores.model_id == model.id
                rfm = clv.summarize_customer(
                    [(o.occurred_at, float(o.net)) for o in lines], file.scores.as_of.date(), unit_days=7.0
                )
                assert rfm is not None
                expected = clv.p_alive(direct, rfm.frequency, rfm.recency, rfm.T)
                assert file.scores.p_alive == pytest.approx(expected, abs=1e-3)
                assert file.scores.expected_purchases_90d == pytest.approx(
                    clv.expected_purchases(direct, 90 / 7, rfm.frequency, rfm.recency, rfm.T), abs=1e-3
                )
    finally:
        await close_stack(stack)


# --- order independence and effectively-once --------------------------------------------------------


async def seeded_stack(database_url: str, producer: EventProducer) -> Stack:
    """A stack whose population model was fitted on the same seed traffic, so per-event scoring
    uses a model (the same one on every database)."""
    stack = await open_stack(database_url, producer, run_relay=False)
    await stack.feed(scenario(24, seed=1))
    await stack.maintenance.refit(as_of=datetime(2025, 12, 31, tzinfo=UTC))
    await stack.maintenance.rescore_pending()
    return stack


async def test_out_of_order_delivery_gives_the_same_files(
    broker: Broker, database_url: str, producer: EventProducer, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    events = scenario(30, seed=2)
    in_order = await seeded_stack(database_url, producer)
    shuffled = await seeded_stack(await second_database(database_url, tmp_path, request, "shuffled"), producer)
    try:
        await in_order.feed(events)
        mixed = list(events)
        random.Random(7).shuffle(mixed)
        assert mixed != events
        await publish(producer, mixed)
        before = await shuffled.count(processed_events)
        await consume_until(
            consumer(broker, shuffled, "huitou-scoring"),
            processed_at_least(shuffled, before + len({e.event_id for e in events})),
            "every shuffled event",
        )
        reference = await file_state(in_order)
        assert len(reference["customer_files"]) == 54 and reference["refunds"] and reference["referrals"]
        assert any(f["model_id"] is not None and f["p_alive"] is not None for f in reference["customer_files"])
        assert_same_files(reference, await file_state(shuffled))

        # and after a refit on both, the re-scored files agree too
        for stack in (in_order, shuffled):
            await stack.maintenance.refit(as_of=datetime(2026, 1, 31, tzinfo=UTC))
            await stack.maintenance.rescore_pending()
        assert_same_files(await file_state(in_order), await file_state(shuffled))
    finally:
        await close_stack(in_order)
        await close_stack(shuffled)


async def test_replaying_a_partition_or_killing_the_worker_leaves_the_files_identical(
    broker: Broker, database_url: str, producer: EventProducer, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    events = scenario(20, seed=3)
    distinct = len({e.event_id for e in events})
    clean = await seeded_stack(database_url, producer)
    crashing = await seeded_stack(await second_database(database_url, tmp_path, request, "crashing"), producer)
    try:
        seeded = await clean.count(processed_events)
        await publish(producer, events)
        await consume_until(consumer(broker, clean, "group-a"), processed_at_least(clean, seeded + distinct), "a run")
        reference = await file_state(clean)
        history = await clean.count(score_history)
        queued = await clean.count(outbox) + int(
            clean.metrics.events_published.labels("scoring", "huitou.customers")._value.get()
        )

        # 1. the whole partition again, by a new consumer group reading from the earliest offset
        skipped = clean.metrics.duplicates_skipped.labels("scoring")

        async def all_skipped() -> bool:
            return skipped._value.get() >= len(events)

        await consume_until(consumer(broker, clean, "group-b"), all_skipped, "the replay to be recognised")
        # 2. the same events produced again and read by the first group
        await publish(producer, events)

        async def all_skipped_twice() -> bool:
            return skipped._value.get() >= 2 * len(events)

        await consume_until(consumer(broker, clean, "group-a"), all_skipped_twice, "the re-produced events")
        assert_same_files(reference, await file_state(clean))
        assert await clean.count(score_history) == history
        assert (
            await clean.count(outbox)
            + int(clean.metrics.events_published.labels("scoring", "huitou.customers")._value.get())
            == queued
        )

        # 3. a worker killed mid-batch (after its DB commit, before the offset commit), then restarted
        crashed = asyncio.Event()
        handled = 0

        async def dies_mid_batch(event: AnyEvent, record: ConsumerRecord[bytes, bytes]) -> None:
            nonlocal handled
            await crashing.handler(event, record)
            handled += 1
            if handled == len(events) // 2:
                crashed.set()
                raise asyncio.CancelledError  # the process dies here

        first = consumer(broker, crashing, "group-c", dies_mid_batch)
        task = asyncio.create_task(first.run())
        await asyncio.wait_for(crashed.wait(), 120)
        with pytest.raises(asyncio.CancelledError):
            await asyncio.wait_for(task, 30)
        before = await crashing.count(processed_events)
        await consume_until(
            consumer(broker, crashing, "group-c"),
            processed_at_least(crashing, seeded + distinct),
            "the restarted worker to finish",
        )
        assert before < seeded + distinct
        assert_same_files(reference, await file_state(crashing))
    finally:
        await close_stack(clean)
        await close_stack(crashing)
