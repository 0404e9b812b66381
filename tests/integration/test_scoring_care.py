"""Scoring keeps the care a customer received (outreach's touch lifecycle on huitou.touches) in
their file, on SQLite and PostgreSQL: outcomes counted once, nothing announced, no file invented."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.scoring import repository
from services.scoring.api import MIGRATIONS
from services.scoring.tables import outbox
from services.scoring.views import care_summary
from services.scoring.worker import ScoringHandler
from shared.contracts import Channel, PurchaseEvent, PurchasePayload, TouchEvent, TouchPayload, TouchStatus
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
    relay = OutboxRelay(sessions, outbox, EventProducer("127.0.0.1:1"), metrics, "scoring")  # never started
    try:
        yield ScoringHandler(sessions, relay, metrics), sessions
    finally:
        await engine.dispose()


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
