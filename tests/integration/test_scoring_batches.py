"""Scoring's handler applying a run of events in one transaction, on SQLite and PostgreSQL (no
broker: the handler is fed as the consumer loop feeds it).

* A batch leaves exactly what the same events applied one per transaction leave: files, orders,
  refunds, referrals, history and every ``customer.updated`` (version, cause, order).
* Within a batch a customer's events see each other, a repeated event id is a duplicate, and an
  event the transaction was not told about still applies.
* A claim another replica took meanwhile fails the batch; applied one by one, it is a duplicate.
* The statements a batch costs do not grow with its events.
* A file only touched in a batch has its engagement written alone, not the whole row.
* A customer's orders are kept between batches (the order cache) and not read again, unless
  something else changed them since: another replica's order or refund, a rolled-back batch,
  an erasure.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event as sa_event
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError

from services.scoring import repository
from services.scoring.engine import ModelStore
from services.scoring.operations import Operations
from services.scoring.purchases import occasions
from services.scoring.tables import orders, outbox, processed_events, refunds, score_history
from services.scoring.views import care_summary
from services.scoring.worker import ScoringHandler
from shared.contracts import (
    AnyEvent,
    Channel,
    InteractionEvent,
    InteractionKind,
    InteractionPayload,
    PurchaseEvent,
    PurchasePayload,
    RefundEvent,
    RefundPayload,
    TouchEvent,
    TouchPayload,
    TouchStatus,
)
from shared.kafka import EventProducer
from shared.service import is_transient
from tests.integration.test_scoring_pipeline import (
    Stack,
    assert_same_files,
    close_stack,
    file_state,
    open_stack,
    scenario,
    second_database,
)

T0 = datetime(2026, 3, 1, 10, tzinfo=UTC)


async def opened(url: str, **overrides: Any) -> Stack:
    # The relay is only notified; nothing is published, so its producer never starts.
    return await open_stack(url, EventProducer("127.0.0.1:1"), run_relay=False, **overrides)


@pytest.fixture
async def stack(database_url: str) -> AsyncIterator[Stack]:
    wired = await opened(database_url)
    try:
        yield wired
    finally:
        await close_stack(wired)


async def apply_batch(stack: Stack, events: Sequence[AnyEvent], upcoming: Sequence[AnyEvent] | None = None) -> None:
    """One transaction, told ``upcoming`` (default: ``events``), applying ``events``."""
    async with stack.handler.transaction(events if upcoming is None else upcoming) as apply:
        for event in events:
            await apply(event, None)


def purchase(event_id: str, order_id: str, amount: str, customer: str = "c-1", minutes: int = 0) -> PurchaseEvent:
    return PurchaseEvent(
        event_id=event_id,
        customer_id=customer,
        occurred_at=T0 + timedelta(minutes=minutes),
        payload=PurchasePayload(order_id=order_id, amount=Decimal(amount)),
    )


def refund(
    event_id: str, order_id: str, amount: str, refund_id: str | None, customer: str = "c-1", minutes: int = 5
) -> RefundEvent:
    return RefundEvent(
        event_id=event_id,
        customer_id=customer,
        occurred_at=T0 + timedelta(minutes=minutes),
        payload=RefundPayload(order_id=order_id, refund_id=refund_id, amount=Decimal(amount)),
    )


def referral(event_id: str, referrer: str, referred: str, minutes: int) -> InteractionEvent:
    return InteractionEvent(
        event_id=event_id,
        customer_id=referrer,
        occurred_at=T0 + timedelta(minutes=minutes),
        payload=InteractionPayload(kind=InteractionKind.REFERRAL, referred_customer_id=referred),
    )


def touch(event_id: str, customer: str, minutes: int) -> TouchEvent:
    payload = TouchPayload(
        touch_id=f"t-{event_id}", plan="post_purchase_follow_up", status=TouchStatus.SENT, channel=Channel.EMAIL
    )
    return TouchEvent(
        event_id=event_id, customer_id=customer, occurred_at=T0 + timedelta(minutes=minutes), payload=payload
    )


async def announcements(stack: Stack) -> list[dict[str, Any]]:
    """The queued customer.updated messages in outbox order, without the time they were made."""
    async with stack.sessions() as session:
        rows = (await session.execute(select(outbox.c.key, outbox.c.value).order_by(outbox.c.id))).all()
    found = []
    for key, value in rows:
        body = json.loads(value)
        body.pop("received_at")
        found.append({"key": key, **body})
    return found


async def history_rows(stack: Stack) -> list[dict[str, Any]]:
    async with stack.sessions() as session:
        rows = await session.execute(select(score_history).order_by(score_history.c.id))
        return [{k: v for k, v in row.items() if k not in {"id", "recorded_at"}} for row in rows.mappings().all()]


async def count(stack: Stack, table: Any) -> int:
    return await stack.count(table)


def duplicates(stack: Stack) -> float:
    return float(stack.metrics.duplicates_skipped.labels("scoring")._value.get())


def edge_cases() -> list[AnyEvent]:
    """What a batch must get right besides plain purchases: refunds resent with their id, before
    and after their order, an order resent under a lower event id, a referral naming a customer
    before their first event and one naming the referrer themself, touches, repeated event ids."""
    events: list[AnyEvent] = [
        refund("x-r0", "x-o9", "5.00", "x-rf9", customer="x-a", minutes=1),  # before its order
        purchase("x-p1", "x-o1", "100.00", customer="x-a", minutes=2),
        refund("x-r1", "x-o1", "30.00", "x-rf1", customer="x-a", minutes=3),
        refund("x-r1-again", "x-o1", "30.00", "x-rf1", customer="x-a", minutes=4),  # the shop's retry
        refund("x-r2", "x-o1", "10.00", None, customer="x-a", minutes=5),
        purchase("x-p0", "x-o1", "100.00", customer="x-a", minutes=2),  # o1 resent, lower event id
        purchase("x-p9", "x-o9", "40.00", customer="x-a", minutes=6),  # the early refund's order
        refund("x-r0-again", "x-o9", "5.00", "x-rf9", customer="x-a", minutes=7),
        referral("x-ref1", "x-a", "x-b", minutes=8),  # x-b has no file yet
        purchase("x-p2", "x-o2", "20.00", customer="x-b", minutes=9),
        referral("x-ref0", "x-c", "x-b", minutes=1),  # an earlier referrer of x-b
        referral("x-ref2", "x-a", "x-b", minutes=0),  # the same referral, earlier
        referral("x-self", "x-d", "x-d", minutes=3),  # a new file naming its own customer
        touch("x-t1", "x-a", minutes=10),
        touch("x-t2", "x-nobody", minutes=10),  # no file: none is invented
        purchase("x-p1", "x-o1", "100.00", customer="x-a", minutes=2),  # the same event id again
    ]
    return events


async def test_a_batch_leaves_what_one_event_per_transaction_leaves(
    database_url: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    events: list[AnyEvent] = [*scenario(customers=12, seed=7), *edge_cases()]
    events += events[::9]  # replays of events already applied, some in the same batch
    # One by one and reading every customer's orders each time; the batches keep them between
    # transactions (the order cache), which must change nothing either.
    alone = await opened(await second_database(database_url, tmp_path, request, "alone"), order_cache_lines=0)
    batched = await opened(database_url)
    try:
        for event in events:
            await alone.handler(event)
        position = 0
        while position < len(events):
            # Told up to 97 events, applying up to 61: the loop may stop before the end of its list.
            upcoming = events[position : position + 97]
            applied = upcoming[:61]
            await apply_batch(batched, applied, upcoming)
            position += len(applied)

        assert_same_files(await file_state(alone), await file_state(batched))
        assert await history_rows(alone) == await history_rows(batched)
        expected = await announcements(alone)
        assert await announcements(batched) == expected
        assert len(expected) > 100
        assert await count(alone, processed_events) == await count(batched, processed_events)
        assert duplicates(alone) == duplicates(batched) > 0
        assert batched.handler.order_cache.hits > 0 and len(alone.handler.order_cache) == 0
    finally:
        await close_stack(alone)
        await close_stack(batched)


async def test_a_customers_events_in_one_batch_each_announce_their_own_version(stack: Stack) -> None:
    events = [purchase(f"e-{i}", f"o-{i}", f"{i + 1}.00", minutes=i) for i in range(5)]
    await apply_batch(stack, events)
    async with stack.sessions() as session:
        file = await repository.load_file(session, "c-1")
    assert file is not None and file.version == 5 and file.totals.order_count == 5
    assert file.totals.revenue == Decimal("15.00")
    updates = await announcements(stack)
    assert [(u["payload"]["version"], u["payload"]["cause"]["event_id"]) for u in updates] == [
        (i + 1, f"e-{i}") for i in range(5)
    ]
    # Each snapshot is the file as of its own event, not the batch's end.
    assert [u["payload"]["snapshot"]["order_count"] for u in updates] == [1, 2, 3, 4, 5]


async def test_a_repeated_event_id_in_one_batch_is_a_duplicate(stack: Stack) -> None:
    first = purchase("e-1", "o-1", "10.00")
    await apply_batch(stack, [first, purchase("e-2", "o-2", "5.00"), first])
    async with stack.sessions() as session:
        file = await repository.load_file(session, "c-1")
    assert file is not None and file.version == 2 and file.totals.revenue == Decimal("15.00")
    assert await count(stack, processed_events) == 2
    assert duplicates(stack) == 1
    await apply_batch(stack, [first])  # and in a later batch
    assert duplicates(stack) == 2


async def test_a_resent_order_and_refunds_in_one_batch(stack: Stack) -> None:
    await apply_batch(
        stack,
        [
            refund("r-0", "o-2", "4.00", "rf-0", minutes=1),  # before its order, booked when it comes
            purchase("p-5", "o-1", "100.00"),
            refund("r-1", "o-1", "30.00", "rf-1"),
            purchase("p-2", "o-1", "100.00"),  # resent under a lower event id
            refund("r-1-again", "o-1", "30.00", "rf-1", minutes=6),  # resent refund: counted once
            purchase("p-7", "o-2", "20.00", minutes=2),
        ],
    )
    async with stack.sessions() as session:
        file = await repository.load_file(session, "c-1")
        stored = {r.order_id: r for r in await session.execute(select(orders))}
        refund_count = await session.scalar(select(func.count()).select_from(refunds))
    assert file is not None
    assert file.totals.order_count == 2 and file.totals.refunded == Decimal("34.00")
    assert file.unmatched_refunds == {}
    assert file.version == 4  # r-0, p-5, r-1, p-7; the resent order and refund change nothing
    assert (stored["o-1"].event_id, stored["o-1"].refunded) == ("p-2", Decimal("30.00"))
    assert (stored["o-2"].event_id, stored["o-2"].refunded) == ("p-7", Decimal("4.00"))
    assert refund_count == 2

    # A later batch books on stored orders and keeps their first event id.
    await apply_batch(stack, [refund("r-3", "o-2", "1.00", "rf-3"), purchase("p-1", "o-1", "100.00")])
    async with stack.sessions() as session:
        stored = {r.order_id: r for r in await session.execute(select(orders))}
    assert (stored["o-1"].event_id, stored["o-1"].refunded) == ("p-1", Decimal("30.00"))
    assert stored["o-2"].refunded == Decimal("5.00")


async def test_events_the_transaction_was_not_told_about_still_apply(stack: Stack) -> None:
    await stack.handler(purchase("e-0", "o-0", "1.00", customer="c-9"))
    told = purchase("e-1", "o-1", "10.00")
    async with stack.handler.transaction([told]) as apply:
        await apply(told, None)
        await apply(purchase("e-2", "o-2", "5.00", minutes=1), None)  # same customer, not told
        await apply(purchase("e-3", "o-3", "7.00", customer="c-2"), None)  # a customer not read yet
        await apply(purchase("e-0", "o-0", "1.00", customer="c-9"), None)  # applied before
        await apply(purchase("e-2", "o-2", "5.00", minutes=1), None)  # earlier in this transaction
    async with stack.sessions() as session:
        first = await repository.load_file(session, "c-1")
        second = await repository.load_file(session, "c-2")
    assert first is not None and (first.version, first.totals.revenue) == (2, Decimal("15.00"))
    assert second is not None and (second.version, second.totals.revenue) == (1, Decimal("7.00"))
    assert duplicates(stack) == 2


async def test_a_claim_taken_meanwhile_fails_the_batch_and_one_by_one_it_is_a_duplicate(stack: Stack) -> None:
    first, second = purchase("e-1", "o-1", "10.00"), purchase("e-2", "o-2", "5.00")
    with pytest.raises(IntegrityError) as raised:
        async with stack.handler.transaction([first, second]) as apply:
            await apply(first, None)
            # Another replica (the partition's previous owner, say) applies e-2 and commits.
            async with stack.sessions() as other, other.begin():
                assert await repository.claim(other, "e-2")
            await apply(second, None)
    # Not transient: the consumer loop re-applies the batch's events one per transaction.
    assert not is_transient(raised.value)
    assert await count(stack, processed_events) == 1 and await count(stack, outbox) == 0
    await stack.handler(first)
    await stack.handler(second)
    async with stack.sessions() as session:
        file = await repository.load_file(session, "c-1")
    assert file is not None and (file.version, file.totals.revenue) == (1, Decimal("10.00"))
    assert duplicates(stack) == 1


async def test_a_batch_costs_a_handful_of_statements_whatever_its_size(stack: Stack) -> None:
    statements: list[str] = []

    def counted(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        statements.append(statement)  # an executemany is one

    # The model in force is cached for seconds in production (the test stack re-reads it per event).
    models = ModelStore(stack.sessions, poll_seconds=3600)
    await models.current()
    handler = ScoringHandler(
        stack.sessions, stack.relay, stack.metrics, settings=stack.settings, models=models, clock=stack.clock
    )
    sa_event.listen(stack.engine.sync_engine, "before_cursor_execute", counted)
    try:
        for batch in range(2):  # new files, then known ones with stored orders
            events = [
                purchase(
                    f"b{batch}-{i}", f"b{batch}-o{i}", "9.90", customer=f"c-{i % 50}", minutes=batch * 10 + i // 50
                )
                for i in range(200)
            ]
            statements.clear()
            async with handler.transaction(events) as apply:
                for event in events:
                    await apply(event, None)
            assert len(statements) < 20, "\n".join(statements)
    finally:
        sa_event.remove(stack.engine.sync_engine, "before_cursor_execute", counted)
    async with stack.sessions() as session:
        file = await repository.load_file(session, "c-0")
    assert file is not None and file.version == 8 and file.totals.order_count == 8


def set_columns(statement: str) -> set[str]:
    """The columns an UPDATE sets, whatever the driver's parameter style."""
    assignments = statement.split(" SET ", 1)[1].split(" WHERE ", 1)[0]
    return {part.split("=", 1)[0].strip().strip('"') for part in assignments.split(",")}


async def test_a_file_only_touched_in_a_batch_has_its_engagement_written_alone(stack: Stack) -> None:
    await apply_batch(stack, [purchase("p-1", "o-1", "10.00"), purchase("p-2", "o-2", "20.00", customer="c-2")])
    async with stack.sessions() as session:
        before = await repository.load_file(session, "c-1")
    file_updates: list[tuple[str, str]] = []

    def seen(_conn: Any, _cursor: Any, statement: str, parameters: Any, *_args: Any) -> None:
        if statement.lstrip().upper().startswith("UPDATE CUSTOMER_FILES"):
            file_updates.append((statement, str(parameters)))

    sa_event.listen(stack.engine.sync_engine, "before_cursor_execute", seen)
    try:
        # c-1 is only touched (twice); c-2 is touched and buys again, so its whole row is written.
        await apply_batch(
            stack,
            [
                touch("t-1", "c-1", minutes=10),
                touch("t-2", "c-2", minutes=10),
                purchase("p-3", "o-3", "5.00", customer="c-2", minutes=11),
                touch("t-3", "c-1", minutes=12),
            ],
        )
    finally:
        sa_event.remove(stack.engine.sync_engine, "before_cursor_execute", seen)

    narrow = [(statement, params) for statement, params in file_updates if "c-1" in params]
    assert len(narrow) == 1, file_updates
    assert set_columns(narrow[0][0]) == {"engagement", "updated_at"}
    assert "c-2" not in narrow[0][1]
    whole = [statement for statement, params in file_updates if "c-2" in params]
    assert len(whole) == 1 and {"version", "profile", "engagement", "revenue"} <= set_columns(whole[0])

    async with stack.sessions() as session:
        first = await repository.load_file(session, "c-1")
        second = await repository.load_file(session, "c-2")
    assert before is not None and first is not None and second is not None
    assert care_summary(first.engagement["care"]).touches == {"sent": 2}
    assert care_summary(first.engagement["care"]).last_sent_at == T0 + timedelta(minutes=12)
    assert (first.version, first.scores, first.totals) == (before.version, before.scores, before.totals)
    assert care_summary(second.engagement["care"]).touches == {"sent": 1}
    assert (second.version, second.totals.revenue) == (2, Decimal("25.00"))


DAY = 24 * 60


def orders_read(stack: Stack) -> tuple[list[str], Any]:
    """The SELECTs of the orders table from now on, and the listener to remove."""
    reads: list[str] = []

    def seen(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        if statement.lstrip().upper().startswith("SELECT") and "FROM orders" in statement:
            reads.append(statement)

    sa_event.listen(stack.engine.sync_engine, "before_cursor_execute", seen)
    return reads, seen


async def stored_lines(stack: Stack, customer_id: str) -> dict[str, tuple[Decimal, Decimal, str]]:
    async with stack.sessions() as session:
        lines = (await repository.order_lines_for(session, [customer_id]))[customer_id]
    return {line.order_id: (line.amount, line.refunded, line.event_id) for line in lines}


async def held_lines(
    stack: Stack, handler: ScoringHandler, customer_id: str
) -> dict[str, tuple[Decimal, Decimal, str]]:
    async with stack.sessions() as session:
        file = await repository.load_file(session, customer_id)
    assert file is not None
    held = handler.order_cache.held_for(file)
    assert held is not None, "no entry for the file as stored"
    lines, history = held
    rules = stack.settings.rules()
    assert history == occasions(lines, rules.timezone, rules.tiers.basis)  # kept up to date, not stale
    return {line.order_id: (line.amount, line.refunded, line.event_id) for line in lines}


async def test_a_known_customers_orders_are_not_read_again(stack: Stack) -> None:
    await apply_batch(stack, [purchase(f"p-{i}", f"o-{i}", "10.00", minutes=i * DAY) for i in range(3)])
    reads, listener = orders_read(stack)
    try:
        await apply_batch(stack, [purchase("p-3", "o-3", "12.00", minutes=3 * DAY)])
        await apply_batch(stack, [refund("r-1", "o-1", "4.00", "rf-1", minutes=3 * DAY + 5)])
        await apply_batch(stack, [purchase("p-1-again", "o-1", "10.00", minutes=DAY)])  # resent: nothing new
    finally:
        sa_event.remove(stack.engine.sync_engine, "before_cursor_execute", listener)
    assert reads == []
    assert stack.handler.order_cache.hits == 3
    async with stack.sessions() as session:
        file = await repository.load_file(session, "c-1")
    assert file is not None and file.scores is not None
    assert (file.totals.order_count, file.totals.refunded, file.scores.occasion_count) == (4, Decimal("4.00"), 4)
    assert await held_lines(stack, stack.handler, "c-1") == await stored_lines(stack, "c-1")


async def test_another_replicas_orders_and_refunds_are_read_not_missed(
    database_url: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """Two replicas on one database, as after a rebalance: each one's cache must notice what the
    other committed. A stack that reads every batch, fed the same events, is the reference."""
    events = [
        ("a", purchase("p-0", "o-0", "10.00", minutes=0)),
        ("a", purchase("p-1", "o-1", "30.00", minutes=DAY)),
        ("b", purchase("p-2", "o-2", "20.00", minutes=2 * DAY)),  # a's entry no longer holds
        ("a", purchase("p-3", "o-3", "15.00", minutes=3 * DAY)),
        ("b", refund("r-1", "o-1", "30.00", "rf-1", minutes=3 * DAY + 5)),  # same count, more refunded
        ("a", purchase("p-4", "o-4", "5.00", minutes=4 * DAY)),
        ("b", purchase("a-0-first", "o-0", "10.00", minutes=0)),  # o-0 resent, a lower event id
        ("a", purchase("p-5", "o-5", "8.00", minutes=5 * DAY)),
    ]
    shared_db = await opened(database_url)
    reference = await opened(await second_database(database_url, tmp_path, request, "reference"), order_cache_lines=0)
    other = ScoringHandler(
        shared_db.sessions,
        shared_db.relay,
        shared_db.metrics,
        settings=shared_db.settings,
        models=shared_db.models,
        clock=shared_db.clock,
    )
    try:
        for replica, event in events:
            handler = shared_db.handler if replica == "a" else other
            async with handler.transaction([event]) as apply:
                await apply(event, None)
            await reference.handler(event)
        assert_same_files(await file_state(reference), await file_state(shared_db))
        assert await announcements(shared_db) == await announcements(reference)
        async with shared_db.sessions() as session:
            file = await repository.load_file(session, "c-1")
        assert file is not None and file.scores is not None and file.scores.occasion_count == 6
        # a read again after b's order and after b's refund; b after a's purchases.
        assert shared_db.handler.order_cache.misses == 2 and other.order_cache.misses == 3
        stored = await stored_lines(shared_db, "c-1")
        assert stored["o-1"][1] == Decimal("30.00") and stored["o-0"][2] == "a-0-first"
        held = await held_lines(shared_db, shared_db.handler, "c-1")
        # b's resend lowered o-0's first event id and left the file as it was, so a's entry still
        # holds the higher one: it only lets a resend issue the guarded UPDATE that keeps the lower.
        assert held["o-0"][2] == "p-0"
        assert {k: v[:2] for k, v in held.items()} == {k: v[:2] for k, v in stored.items()}
    finally:
        await close_stack(shared_db)
        await close_stack(reference)


async def test_a_rolled_back_batch_leaves_the_cache_as_it_was(stack: Stack) -> None:
    await apply_batch(stack, [purchase("p-0", "o-0", "10.00")])
    before = await held_lines(stack, stack.handler, "c-1")
    first, second = purchase("p-1", "o-1", "20.00", minutes=DAY), purchase("p-2", "o-2", "5.00", minutes=2 * DAY)
    with pytest.raises(IntegrityError):
        async with stack.handler.transaction([first, second]) as apply:
            await apply(first, None)
            async with stack.sessions() as other, other.begin():
                assert await repository.claim(other, "p-2")  # taken meanwhile: the batch fails
            await apply(second, None)
    assert await held_lines(stack, stack.handler, "c-1") == before == await stored_lines(stack, "c-1")
    await stack.handler(first)
    async with stack.sessions() as session:
        file = await repository.load_file(session, "c-1")
    assert file is not None and file.scores is not None
    assert (file.totals.order_count, file.scores.occasion_count) == (2, 2)
    assert await held_lines(stack, stack.handler, "c-1") == await stored_lines(stack, "c-1")


async def test_an_erasure_drops_the_customers_entry(stack: Stack) -> None:
    await apply_batch(stack, [purchase("p-0", "o-0", "10.00"), purchase("p-1", "o-0", "10.00", customer="c-2")])
    cache = stack.handler.order_cache
    assert len(cache) == 2
    operations = Operations(stack.sessions, stack.settings.rules(), stack.models, stack.clock, None, None, cache)
    await operations.erase("c-1", "asked to be forgotten")
    assert len(cache) == 1 and cache.lines == 1
    # Bought again after the erasure: a new file, read and kept afresh.
    await apply_batch(stack, [purchase("p-9", "o-9", "7.00", minutes=DAY)])
    assert await held_lines(stack, stack.handler, "c-1") == await stored_lines(stack, "c-1")
    assert list(await stored_lines(stack, "c-1")) == ["o-9"]
