"""Outreach's consumer handler: events from ``huitou.customers`` and ``huitou.events``, a run of
them per transaction; each claims its id, updates what outreach holds and stores the touches it
calls for, with their lifecycle messages in the outbox.

* ``customer.updated``: keep the snapshot; plan event, change and calendar touches; attribute a
  purchase to the touches it converts.
* ``customer.erased``: delete everything held about the customer.
* intake ``consent`` (straight from ``huitou.events`` for immediacy — a revocation must stop the
  next send, not the one after scoring caught up), ``purchase`` (conversion) and ``interaction``
  (plans marked ``from_intake``: complaint recovery).

The same purchase reaches us twice (intake, then customer.updated): conversion is idempotent per
touch, and intake-planned touches share their idempotency key with the later update.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal

from aiokafka import ConsumerRecord
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.outreach import repository
from services.outreach.care import PlanBook, PlannedTouch, plan_calendar, plan_intake, plan_update
from services.outreach.planning import PlanCatalog, PlanningReads, apply_planned, planning_defaults
from services.outreach.settings import OutreachSettings
from services.outreach.tables import outbox, processed_events
from shared.contracts import (
    AnyEvent,
    ConsentEvent,
    CustomerErasedEvent,
    CustomerSnapshot,
    CustomerUpdatedEvent,
    InteractionEvent,
    PurchaseEvent,
    TouchStatus,
)
from shared.db import transaction
from shared.kafka import Outgoing
from shared.ledger import OutboxRelay, claim_event, enqueue_many
from shared.observability import ServiceMetrics

HANDLED = (CustomerUpdatedEvent, CustomerErasedEvent, ConsentEvent, PurchaseEvent, InteractionEvent)
Apply = Callable[[AnyEvent, ConsumerRecord[bytes, bytes] | None], Awaitable[None]]


class OutreachHandler:
    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        relay: OutboxRelay,
        metrics: ServiceMetrics,
        *,
        settings: OutreachSettings,
        catalog: PlanCatalog,
    ) -> None:
        self._sessions = sessions
        self._relay = relay
        self._metrics = metrics
        self._settings = settings
        self._catalog = catalog
        self._defaults = planning_defaults(settings)

    async def __call__(self, event: AnyEvent, record: ConsumerRecord[bytes, bytes] | None = None) -> None:
        """Apply one event in a transaction of its own."""
        async with self.transaction() as apply:
            await apply(event, record)

    @asynccontextmanager
    async def transaction(self, upcoming: Sequence[AnyEvent] = ()) -> AsyncIterator[Apply]:
        """One transaction for a run of events; see :class:`shared.kafka.BatchHandler`."""
        catalog = await self._catalog.current()
        outcome = _Outcome()
        async with transaction(self._sessions) as session:

            async def apply(event: AnyEvent, _record: ConsumerRecord[bytes, bytes] | None = None) -> None:
                await self._apply(session, event, catalog.book, outcome)

            yield apply
        # Only now is the work durable: a rolled-back batch is retried, and counts nothing twice.
        if outcome.duplicates:
            self._metrics.duplicates_skipped.labels("outreach").inc(outcome.duplicates)
        if outcome.queued:
            self._relay.notify()

    async def _apply(self, session: AsyncSession, event: AnyEvent, book: PlanBook, outcome: _Outcome) -> None:
        """Claim the event, apply it, and put the messages it calls for in the outbox."""
        if not isinstance(event, HANDLED):
            return
        if not await claim_event(session, processed_events, event.event_id):
            outcome.duplicates += 1
            return
        now = datetime.now(UTC)
        messages: list[Outgoing] = []
        match event:
            case CustomerUpdatedEvent():
                messages = await self._customer_updated(session, event, book, now)
            case CustomerErasedEvent():
                await repository.erase_customer(session, event.customer_id, now)
            case ConsentEvent(payload=consent):
                await repository.record_consent(
                    session,
                    event.customer_id,
                    str(consent.channel),
                    consent.purpose.value,
                    consent.granted,
                    event.occurred_at,
                    "consent_event",
                    event.event_id,
                )
            case PurchaseEvent(payload=order):
                messages = await self._convert(
                    session, event.customer_id, order.order_id, order.amount, event.occurred_at, now
                )
            case InteractionEvent():
                snapshot = await repository.load_snapshot(session, event.customer_id)
                planned = plan_intake(event, snapshot, book, now=now, defaults=self._defaults)
                messages = await self._store(session, planned, event.event_id, book, now, event.trace_id)
        await enqueue_many(session, outbox, messages)
        outcome.queued |= bool(messages)

    async def _customer_updated(
        self, session: AsyncSession, event: CustomerUpdatedEvent, book: PlanBook, now: datetime
    ) -> list[Outgoing]:
        update = event.payload
        if not await repository.remember_customer(session, event.customer_id, update.version, update.snapshot, now):
            # Older than what we hold: its cause may still convert a touch, but plans read the
            # newer snapshot we already planned from.
            return await self._cause_conversion(session, event, now)
        messages = await self._cause_conversion(session, event, now)
        referrer = None
        if update.snapshot.referred_by:
            referrer = await repository.load_snapshot(session, update.snapshot.referred_by)
        planned = plan_update(event.customer_id, update, book, now=now, defaults=self._defaults, referrer=referrer)
        planned += plan_calendar(
            event.customer_id,
            update.snapshot,
            book,
            now=now,
            horizon=self._settings.calendar_horizon,
            defaults=self._defaults,
        )
        known: dict[str, CustomerSnapshot | None] = {event.customer_id: update.snapshot}
        if update.snapshot.referred_by:
            known[update.snapshot.referred_by] = referrer
        messages += await self._store(session, planned, update.cause.event_id, book, now, event.trace_id, known)
        return messages

    async def _cause_conversion(
        self, session: AsyncSession, event: CustomerUpdatedEvent, now: datetime
    ) -> list[Outgoing]:
        cause = event.payload.cause
        if cause.type != "purchase" or not cause.order_id:
            return []
        return await self._convert(session, event.customer_id, cause.order_id, cause.amount, cause.occurred_at, now)

    async def _convert(
        self,
        session: AsyncSession,
        customer_id: str,
        order_id: str,
        revenue: Decimal | None,
        occurred_at: datetime,
        now: datetime,
    ) -> list[Outgoing]:
        converted = await repository.attribute_purchase(session, customer_id, order_id, revenue, occurred_at, now)
        return [
            repository.touch_lifecycle(row, TouchStatus.CONVERTED, now, reason=f"order {order_id}", revenue=revenue)
            for row in converted
        ]

    async def _store(
        self,
        session: AsyncSession,
        planned: list[PlannedTouch],
        cause_event_id: str,
        book: PlanBook,
        now: datetime,
        trace_id: str | None,
        known: dict[str, CustomerSnapshot | None] | None = None,
    ) -> list[Outgoing]:
        messages: list[Outgoing] = []
        known = dict(known or {})
        # One look-up of every planned key (and consents once per customer), not one per touch.
        existing = await repository.existing_touch_keys(session, [touch.idempotency_key for touch in planned])
        reads = PlanningReads(touch_keys=existing)
        for touch in planned:
            if touch.customer_id not in known:
                known[touch.customer_id] = await repository.load_snapshot(session, touch.customer_id)
            snapshot = known[touch.customer_id]
            produced = await apply_planned(
                session,
                touch,
                cause_event_id=cause_event_id,
                book=book,
                settings=self._settings,
                now=now,
                snapshot=snapshot,
                trace_id=trace_id,
                known=reads,
            )
            messages += produced
        return messages


@dataclass
class _Outcome:
    """What a transaction did that matters only once it has committed."""

    duplicates: int = 0
    queued: bool = False
