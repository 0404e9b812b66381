"""Time passing without events, and the population model's refresh — on SQLite and PostgreSQL:

* the lapse sweep notices silence against the customer's own rhythm and announces the change
  (cause type ``clock``) through the outbox; sweeping twice on one day is a no-op;
* the churn band moves with silence alone;
* in replay mode the sweep runs on event time (the replay clock), not the wall clock;
* a refit re-scores every file, resumably, announcing what changed (cause type ``model_refit``);
* refits are triggered at start, by population growth and by the schedule.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import select

from services.scoring import repository
from services.scoring.clock import Clock
from services.scoring.customer_file import CustomerFile
from services.scoring.engine import ModelStore
from services.scoring.maintenance import Maintenance
from services.scoring.settings import ScoringSettings
from services.scoring.tables import clock as clock_table
from services.scoring.tables import outbox, score_history
from shared.contracts import PurchaseEvent, PurchasePayload
from shared.kafka import EventProducer
from tests.integration.test_scoring_pipeline import Stack, close_stack, open_stack, scenario

T = datetime(2026, 1, 5, 10, tzinfo=UTC)


@dataclass
class FakeNow:
    at: datetime

    def __call__(self) -> datetime:
        return self.at


@pytest.fixture
def now() -> FakeNow:
    return FakeNow(T)


@pytest.fixture
async def live(database_url: str, now: FakeNow) -> AsyncIterator[Stack]:
    """A live-clock stack whose wall clock the test moves; no broker (the outbox is inspected)."""
    stack = await open_stack(
        database_url, EventProducer("127.0.0.1:9"), with_clock=Clock("live", now), run_relay=False, clock="live"
    )
    try:
        yield stack
    finally:
        await close_stack(stack)


def purchase(customer: str, order: str, at: datetime, amount: str = "50") -> PurchaseEvent:
    return PurchaseEvent(
        event_id=f"{customer}-{order}",
        customer_id=customer,
        occurred_at=at,
        payload=PurchasePayload(order_id=order, amount=Decimal(amount)),
    )


async def announcements(stack: Stack, customer: str) -> list[dict[str, Any]]:
    async with stack.sessions() as session:
        rows = await session.execute(select(outbox.c.value).where(outbox.c.key == customer).order_by(outbox.c.id))
        return [json.loads(value) for (value,) in rows]


async def file_of(stack: Stack, customer: str) -> CustomerFile:
    async with stack.sessions() as session:
        file = await repository.load_file(session, customer)
    assert file is not None
    return file


async def test_the_sweep_notices_a_silent_lapse_against_the_customers_own_rhythm(live: Stack, now: FakeNow) -> None:
    for k in range(3):  # monthly buyer; with no population yet the prior rhythm is 30 days too
        now.at = T + timedelta(days=30 * k)
        await live.handler(purchase("c-1", f"o-{k}", now.at))
    last = T + timedelta(days=60)
    assert (await file_of(live, "c-1")).scores.stage == "active"
    sent = len(await announcements(live, "c-1"))

    now.at = last + timedelta(days=45)  # 1.5 × 30: not yet beyond
    assert await live.maintenance.sweep() == (0, True)
    assert len(await announcements(live, "c-1")) == sent

    now.at = last + timedelta(days=46)
    assert await live.maintenance.sweep() == (1, True)
    update = (await announcements(live, "c-1"))[-1]
    assert update["payload"]["cause"]["type"] == "clock"
    assert update["payload"]["snapshot"]["stage"] == "at_risk"
    [change] = [c for c in update["payload"]["changes"] if c["field"] == "stage"]
    assert (change["before"], change["after"]) == ("active", "at_risk") and "rhythm 30.0 days" in change["reason"]
    assert update["payload"]["version"] == 4

    assert await live.maintenance.sweep() == (0, True)  # the same day again: a no-op
    assert len(await announcements(live, "c-1")) == sent + 1

    now.at = last + timedelta(days=91)
    await live.maintenance.sweep()
    assert (await file_of(live, "c-1")).scores.stage == "lapsed"
    async with live.sessions() as session:
        stages = (
            await session.execute(
                select(score_history.c.after, score_history.c.cause_type)
                .where(score_history.c.customer_id == "c-1", score_history.c.field == "stage")
                .order_by(score_history.c.id)
            )
        ).all()
    assert [tuple(row) for row in stages] == [
        ("new", "purchase"),
        ("active", "purchase"),
        ("at_risk", "clock"),
        ("lapsed", "clock"),
    ]

    await live.handler(purchase("c-1", "o-back", now.at))
    assert (await file_of(live, "c-1")).scores.stage == "won_back"


async def test_silence_alone_moves_the_churn_band(live: Stack, now: FakeNow) -> None:
    now.at = datetime(2026, 1, 1, tzinfo=UTC)
    await live.feed(scenario(24, seed=1))
    await live.maintenance.refit(as_of=datetime(2025, 12, 31, tzinfo=UTC))
    for k in range(4):
        now.at = T + timedelta(days=7 * k)
        await live.handler(purchase("weekly", f"w-{k}", now.at))
    file = await file_of(live, "weekly")
    assert file.scores.churn_band == "low" and file.scores.next_check_at is not None
    for _ in range(60):
        now.at = file.scores.next_check_at + timedelta(hours=1)
        await live.maintenance.sweep()
        file = await file_of(live, "weekly")
        if file.scores.churn_band != "low":
            break
    assert file.scores.churn_band in {"medium", "high"}
    band_changes = [
        change
        for update in await announcements(live, "weekly")
        if update["payload"]["cause"]["type"] == "clock"
        for change in update["payload"]["changes"]
        if change["field"] == "churn_band"
    ]
    assert (
        band_changes and band_changes[0]["before"] == "low" and "P(no purchase in 90 days)" in band_changes[0]["reason"]
    )
    silence = now.at - T - timedelta(days=21)
    assert silence < timedelta(days=60), "a weekly buyer's churn risk should rise within weeks, not months"


async def test_in_replay_mode_the_sweep_runs_on_event_time(database_url: str) -> None:
    stack = await open_stack(database_url, EventProducer("127.0.0.1:9"), run_relay=False, clock="replay")
    try:
        start = datetime(2019, 3, 1, tzinfo=UTC)  # years before the wall clock
        await stack.feed([purchase("quiet", "q-1", start), purchase("quiet", "q-2", start + timedelta(days=30))])
        await stack.feed([purchase("busy", f"b-{k}", start + timedelta(days=10 * k)) for k in range(30)])
        assert (await file_of(stack, "quiet")).scores.stage == "active"  # as of its own last event
        await stack.maintenance.sweep()
        quiet = await file_of(stack, "quiet")
        assert quiet.scores.stage == "lapsed"
        assert quiet.scores.as_of == start + timedelta(days=290)  # the replay clock: the latest event seen
        update = (await announcements(stack, "quiet"))[-1]
        assert update["historical"] is True and update["payload"]["cause"]["type"] == "clock"
        async with stack.sessions() as session:
            stored = await session.scalar(select(clock_table.c.at))
        assert stored == start + timedelta(days=290)
    finally:
        await close_stack(stack)


async def test_a_refit_rescores_every_file_and_resumes_after_a_crash(live: Stack, now: FakeNow) -> None:
    now.at = datetime(2026, 1, 1, tzinfo=UTC)
    await live.feed(scenario(24, seed=1))
    first = await live.maintenance.refit(as_of=datetime(2025, 10, 1, tzinfo=UTC))
    await live.maintenance.rescore_pending()
    async with live.sessions() as session:
        ids = await repository.customers_after(session, None, 1000)
        assert {f.scores.model_id for f in await repository.load_files(session, ids)} == {first.id}

    second = await live.maintenance.refit(as_of=datetime(2025, 12, 31, tzinfo=UTC))
    assert second.id != first.id and second.n_customers >= first.n_customers
    async with live.sessions() as session, session.begin():  # as if it crashed after ten files
        await repository.set_rescore_progress(session, second.id, ids[9])
    changed = await live.maintenance.rescore_pending()
    async with live.sessions() as session:
        files = await repository.load_files(session, ids)
        done_at = (await repository.rescore_progress(session, second.id))[1]
    assert [f.scores.model_id for f in files[:10]] == [first.id] * 10
    assert {f.scores.model_id for f in files[10:]} == {second.id}
    assert done_at is not None and await live.maintenance.rescore_pending() == 0
    refit_updates = [
        update
        for f in files[10:]
        for update in await announcements(live, f.customer_id)
        if update["payload"]["cause"]["event_id"].startswith(f"model-{second.id}:")
    ]
    assert len(refit_updates) == changed


class _OnFirstBatch:
    """A relay stand-in: what the maintenance does after its first written batch, in between."""

    def __init__(self, then: Any) -> None:
        self.batches = 0
        self._then = then

    def notify(self) -> None:
        self.batches += 1
        if self.batches == 1:
            self._then()


async def test_a_refit_landing_mid_rescoring_is_applied_in_the_same_pass(live: Stack, now: FakeNow) -> None:
    # After a backfill the start refit was re-scoring every file when the operator's refit landed;
    # the pass gave up on the superseded model and left the newer one for a later pass, after the
    # sweep: the operator waited for both.
    now.at = datetime(2026, 1, 1, tzinfo=UTC)
    await live.feed(scenario(24, seed=1))
    first = await live.maintenance.refit(as_of=datetime(2025, 10, 1, tzinfo=UTC))
    second = await live.maintenance.refit(as_of=datetime(2025, 12, 31, tzinfo=UTC))
    store = ModelStore(live.sessions, poll_seconds=3600)  # sees the second model only when the "refit" lands
    store.set(first)
    relay = _OnFirstBatch(lambda: store.set(second))
    small_batches = live.settings.model_copy(update={"rescore_batch_size": 5})
    holder = live.maintenance.holder
    maintenance = Maintenance(live.sessions, relay, store, small_batches, live.clock, holder=holder)  # type: ignore[arg-type]

    await maintenance.rescore_pending()
    async with live.sessions() as session:
        ids = await repository.customers_after(session, None, 1000)
        files = await repository.load_files(session, ids)
        first_done = (await repository.rescore_progress(session, first.id))[1]
        second_done = (await repository.rescore_progress(session, second.id))[1]
    assert relay.batches == 1 + -(-len(ids) // 5)  # the first model's one batch, then every file again
    assert first_done is None and second_done is not None
    assert {f.scores.model_id for f in files} == {second.id}


async def test_a_sweep_gives_way_to_a_newer_model_and_a_refit_during_a_pass_starts_the_next_at_once(
    live: Stack, now: FakeNow
) -> None:
    now.at = T
    customers = 24  # enough to fit (min_customers_for_fit)
    await live.feed(
        [purchase(f"c-{k:02}", f"o-{k}-{n}", T + timedelta(days=30 * n)) for k in range(customers) for n in range(3)]
    )
    first = await live.maintenance.refit(as_of=T + timedelta(days=61))
    second = await live.maintenance.refit(as_of=T + timedelta(days=62))
    store = ModelStore(live.sessions, poll_seconds=3600)
    store.set(first)
    relay = _OnFirstBatch(lambda: store.set(second))
    settings = live.settings.model_copy(update={"sweep_batch_size": 8})
    holder = live.maintenance.holder
    maintenance = Maintenance(live.sessions, relay, store, settings, live.clock, holder=holder)  # type: ignore[arg-type]
    now.at = T + timedelta(days=400)  # everyone has lapsed: the sweep has every file to re-score
    assert await maintenance.sweep() == (8, False)  # one batch, then the newer model comes first
    assert await maintenance.sweep() == (16, True)

    # The background loop: a refit requested while a pass runs is made without waiting a tick.
    hourly = live.settings.model_copy(update={"maintenance_tick": timedelta(hours=1)})
    looping = Maintenance(live.sessions, None, store, hourly, live.clock, holder=holder)
    rescore_pending, asked = looping.rescore_pending, []

    async def rescore_and_request() -> int:
        if not asked:
            asked.append(True)
            looping.request_refit("erasure")  # e.g. an erasure during the pass
        return await rescore_pending()

    looping.rescore_pending = rescore_and_request  # type: ignore[method-assign]
    stop = asyncio.Event()
    task = asyncio.create_task(looping.run(stop))
    latest = None
    try:
        for _ in range(300):
            latest = await store.current()
            if latest is not None and latest.trigger == "erasure":
                break
            await asyncio.sleep(0.1)
    finally:
        stop.set()
        await asyncio.wait_for(task, 60)
    assert asked and latest is not None and latest.trigger == "erasure"


async def test_refits_are_triggered_at_start_by_growth_and_on_schedule(live: Stack, now: FakeNow) -> None:
    now.at = datetime(2026, 1, 1, tzinfo=UTC)
    await live.maintenance.run_once()
    assert await live.models.current() is None  # nobody has bought yet: nothing to fit
    await live.feed(scenario(24, seed=1))
    await live.maintenance.run_once()
    start = await live.models.current()
    assert start is not None and start.trigger == "start"
    await live.maintenance.run_once()
    assert (await live.models.current()).id == start.id  # nothing due

    await live.feed(scenario(8, seed=4))  # 24 → 31 purchasing customers: more than 10 % growth
    await live.maintenance.run_once()
    grown = await live.models.current()
    assert grown.trigger == "growth" and grown.population_size > start.population_size

    impatient = live.settings.model_copy(update={"refit_interval": timedelta(0)})
    same_replica = live.maintenance.holder
    await Maintenance(live.sessions, live.relay, live.models, impatient, live.clock, holder=same_replica).run_once()
    assert (await live.models.current()).trigger == "schedule"


async def test_start_and_growth_refits_wait_out_a_backlog_but_a_scheduled_one_does_not(
    live: Stack, now: FakeNow
) -> None:
    now.at = datetime(2026, 1, 1, tzinfo=UTC)
    behind = 10_000  # more than refit_defer_backlog: a backfill is streaming in
    holder = live.maintenance.holder

    def maintenance(settings: ScoringSettings = live.settings) -> Maintenance:
        return Maintenance(
            live.sessions, live.relay, live.models, settings, live.clock, holder=holder, backlog=lambda: behind
        )

    await live.feed(scenario(24, seed=1))
    await maintenance().run_once()
    assert await live.models.current() is None  # the start fit waits for the backlog
    behind = live.settings.refit_defer_backlog  # at the threshold, not above it: caught up enough
    await maintenance().run_once()
    start = await live.models.current()
    assert start is not None and start.trigger == "start"

    behind = 10_000
    await live.feed(scenario(8, seed=4))  # more than 10 % growth
    await maintenance().run_once()
    assert (await live.models.current()).id == start.id  # the growth fit waits too
    impatient = live.settings.model_copy(update={"refit_interval": timedelta(0)})
    await maintenance(impatient).run_once()
    scheduled = await live.models.current()
    assert scheduled.trigger == "schedule" and scheduled.population_size > start.population_size

    never_wait = live.settings.model_copy(update={"refit_defer_backlog": 0})
    await live.feed(scenario(12, seed=9))
    await maintenance(never_wait).run_once()
    assert (await live.models.current()).trigger == "growth"
