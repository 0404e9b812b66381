"""Scoring's handler fed directly, on SQLite and PostgreSQL.

* Refunds: a refund the shop resends under a new event id is counted once when it carries the
  shop's refund id, including one that arrived before its order.
* Care: outreach's touch outcomes (huitou.touches) are kept in the file once, announce nothing,
  and invent no file."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.scoring import repository
from services.scoring.api import MIGRATIONS
from services.scoring.customer_file import CustomerFile
from services.scoring.tables import outbox, refunds
from services.scoring.views import care_summary
from services.scoring.worker import ScoringHandler
from shared.contracts import (
    Channel,
    PurchaseEvent,
    PurchasePayload,
    RefundEvent,
    RefundPayload,
    TouchEvent,
    TouchPayload,
    TouchStatus,
)
from shared.db import create_engine, migrate, session_factory
from shared.kafka import EventProducer
from shared.ledger import OutboxRelay
from shared.observability import ServiceMetrics

T0 = datetime(2026, 3, 1, 10, tzinfo=UTC)


@pytest.fixture
async def scoring(database_url: str) -> AsyncIterator[tuple[ScoringHandler, async_sessionmaker[AsyncSession]]]:
    engine = create_engine(database_url, "scoring")
    await migrate(engine, MIGRATIONS, "scoring")
    sessions = session_factory(engine)
    metrics = ServiceMetrics()
    # The relay is only notified here; nothing is published, so its producer never starts.
    relay = OutboxRelay(sessions, outbox, EventProducer("127.0.0.1:1"), metrics, "scoring")
    try:
        yield ScoringHandler(sessions, relay, metrics), sessions
    finally:
        await engine.dispose()


def purchase(event_id: str, order_id: str, amount: str, minutes: int = 0) -> PurchaseEvent:
    return PurchaseEvent(
        event_id=event_id,
        customer_id="c-1",
        occurred_at=T0 + timedelta(minutes=minutes),
        payload=PurchasePayload(order_id=order_id, amount=Decimal(amount)),
    )


def refund(event_id: str, order_id: str, amount: str, refund_id: str | None, minutes: int = 5) -> RefundEvent:
    return RefundEvent(
        event_id=event_id,
        customer_id="c-1",
        occurred_at=T0 + timedelta(minutes=minutes),
        payload=RefundPayload(order_id=order_id, refund_id=refund_id, amount=Decimal(amount)),
    )


async def file_of(sessions: async_sessionmaker[AsyncSession]) -> CustomerFile:
    async with sessions() as session:
        file = await repository.load_file(session, "c-1")
    assert file is not None
    return file


async def refund_rows(sessions: async_sessionmaker[AsyncSession]) -> int:
    async with sessions() as session:
        return int(await session.scalar(select(func.count()).select_from(refunds)) or 0)


async def test_a_refund_resent_under_a_new_event_id_is_counted_once(scoring) -> None:  # type: ignore[no-untyped-def]
    handle, sessions = scoring
    await handle(purchase("p-1", "o-1", "100.00"))
    await handle(refund("r-1", "o-1", "30.00", "rf-1"))
    version = (await file_of(sessions)).version
    await handle(refund("r-1-again", "o-1", "30.00", "rf-1", minutes=6))  # the shop's retry
    file = await file_of(sessions)
    assert file.totals.refunded == Decimal("30.00") and file.totals.net_revenue == Decimal("70.00")
    assert file.version == version  # nothing changed, so nothing was announced
    assert await refund_rows(sessions) == 1
    await handle(refund("r-2", "o-1", "20.00", "rf-2", minutes=7))  # a second, different refund
    assert (await file_of(sessions)).totals.refunded == Decimal("50.00")
    assert await refund_rows(sessions) == 2


async def test_without_a_refund_id_each_event_is_a_refund_of_its_own(scoring) -> None:  # type: ignore[no-untyped-def]
    handle, sessions = scoring
    await handle(purchase("p-1", "o-1", "100.00"))
    await handle(refund("r-1", "o-1", "10.00", None))
    await handle(refund("r-2", "o-1", "10.00", None, minutes=6))  # two partial refunds of equal size
    assert (await file_of(sessions)).totals.refunded == Decimal("20.00")
    assert await refund_rows(sessions) == 2


async def test_an_early_refund_resent_before_its_order_is_booked_once(scoring) -> None:  # type: ignore[no-untyped-def]
    handle, sessions = scoring
    await handle(refund("r-1", "o-9", "15.00", "rf-9", minutes=5))
    await handle(refund("r-1-again", "o-9", "15.00", "rf-9", minutes=6))
    assert (await file_of(sessions)).unmatched_refunds == {"o-9": "15.00"}
    await handle(purchase("p-9", "o-9", "60.00", minutes=1))
    file = await file_of(sessions)
    assert file.totals.refunded == Decimal("15.00") and file.totals.net_revenue == Decimal("45.00")
    assert file.unmatched_refunds == {}


def touch(event_id: str, status: TouchStatus, minutes: int, *, customer: str = "c-1", **extra: object) -> TouchEvent:
    payload = TouchPayload(touch_id=f"t-{event_id}", plan="post_purchase_follow_up", status=status, **extra)
    return TouchEvent(
        event_id=event_id, customer_id=customer, occurred_at=T0 + timedelta(minutes=minutes), payload=payload
    )


async def outbox_rows(sessions: async_sessionmaker[AsyncSession]) -> int:
    async with sessions() as session:
        return int(await session.scalar(select(func.count()).select_from(outbox)) or 0)


async def test_touch_outcomes_are_kept_in_the_file_once_and_announce_nothing(scoring) -> None:  # type: ignore[no-untyped-def]
    handle, sessions = scoring
    purchase = PurchaseEvent(
        event_id="p-1",
        customer_id="c-1",
        occurred_at=T0,
        payload=PurchasePayload(order_id="o-1", amount=Decimal("80.00")),
    )
    await handle(purchase)
    async with sessions() as session:
        before = await repository.load_file(session, "c-1")
    announced = await outbox_rows(sessions)

    sent = touch("k-1", TouchStatus.SENT, 10, channel=Channel.EMAIL)
    for event in (
        touch("k-0", TouchStatus.SCHEDULED, 5),  # scheduling is not care yet
        sent,
        sent,  # redelivered
        touch("k-2", TouchStatus.SUPPRESSED, 20),
        touch("k-3", TouchStatus.CONVERTED, 30, revenue=Decimal("45.50")),
        touch("k-4", TouchStatus.SENT, 3, channel=Channel.SMS),  # older than the latest sent: counted, not latest
        touch("k-9", TouchStatus.SENT, 40, customer="nobody"),  # no file: none is invented
    ):
        await handle(event)

    async with sessions() as session:
        after = await repository.load_file(session, "c-1")
        assert await repository.load_file(session, "nobody") is None
    assert before is not None and after is not None
    care = care_summary(after.engagement["care"])
    assert care.touches == {"sent": 2, "suppressed": 1, "converted": 1}
    assert (care.last_sent_at, care.last_sent_plan, care.last_sent_channel) == (
        T0 + timedelta(minutes=10),
        "post_purchase_follow_up",
        "email",
    )
    assert care.attributed_revenue == Decimal("45.50")
    assert after.version == before.version and after.scores == before.scores
    assert await outbox_rows(sessions) == announced  # care changes no score: nothing announced
