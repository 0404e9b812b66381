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
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from aiokafka import ConsumerRecord
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.outreach import repository
from services.outreach.care import PlanBook, PlannedTouch, plan_calendar, plan_intake, plan_update
from services.outreach.planning import PlanCatalog, PlanningState, apply_planned, planning_defaults
from services.outreach.settings import OutreachSettings
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
from shared.ledger import OutboxRelay
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
        """One transaction for a run of events; see :class:`shared.kafka.BatchHandler`.

        What ``upcoming`` will read is fetched up front, one query per kind, and what the events
        change is written at the end, one statement per table (round trips, not planning,
        dominated the cost of an event)."""
        catalog = await self._catalog.current()
        outcome = _Outcome()
        async with transaction(self._sessions) as session:
            # A transaction of one asks the touch table for its keys, exactly as the unique index
            # will judge them: it is the fallback when a batch failed.
            state = PlanningState(
                session,
                exact_keys=not upcoming,
                horizon=self._horizon(catalog.book),
                attribution_reach=self._attribution_reach(catalog.book),
                windowed_plans={a.plan.name for a in catalog.book.plans if a.plan.dedupe.window is not None},
            )
            await state.prefetch(*_named(upcoming))

            async def apply(event: AnyEvent, _record: ConsumerRecord[bytes, bytes] | None = None) -> None:
                await self._apply(state, event, catalog.book, outcome)

            yield apply
            outcome.queued = bool(state.messages)
            await state.flush()
        # Only now is the work durable: a rolled-back batch is retried, and counts nothing twice.
        if outcome.duplicates:
            self._metrics.duplicates_skipped.labels("outreach").inc(outcome.duplicates)
        if outcome.queued:
            self._relay.notify()

    def _attribution_reach(self, book: PlanBook) -> timedelta:
        """The longest attribution window of the plans in force (and the default)."""
        windows = [a.plan.attribution_window for a in book.plans if a.plan.attribution_window is not None]
        return max([self._settings.default_attribution_window, *windows])

    def _horizon(self, book: PlanBook) -> timedelta:
        """How far back a touch can still matter to planning (a dedupe window) or to a purchase
        (an attribution window); the state reads further back only when an event needs it."""
        windows = [a.plan.dedupe.window for a in book.plans if a.plan.dedupe.window is not None]
        return max([self._attribution_reach(book), *windows])

    async def _apply(self, state: PlanningState, event: AnyEvent, book: PlanBook, outcome: _Outcome) -> None:
        """Claim the event, apply it, and put the messages it calls for in the outbox."""
        if not isinstance(event, HANDLED):
            return
        now = datetime.now(UTC)
        if not await state.claim(event.event_id):
            outcome.duplicates += 1
            return
        messages: list[Outgoing] = []
        match event:
            case CustomerUpdatedEvent():
                messages = await self._customer_updated(state, event, book, now)
            case CustomerErasedEvent():
                await state.erase(event.customer_id, now)
            case ConsentEvent(payload=consent):
                await state.record_consent(
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
                    state, event.customer_id, order.order_id, order.amount, event.occurred_at, now
                )
            case InteractionEvent():
                snapshot = await state.snapshot(event.customer_id)
                planned = plan_intake(event, snapshot, book, now=now, defaults=self._defaults)
                messages = await self._store(state, planned, event.event_id, book, now, event.trace_id)
        state.enqueue(messages)

    async def _customer_updated(
        self, state: PlanningState, event: CustomerUpdatedEvent, book: PlanBook, now: datetime
    ) -> list[Outgoing]:
        update = event.payload
        if not await state.remember(event.customer_id, update.version, update.snapshot, now):
            # Older than what we hold: its cause may still convert a touch, but plans read the
            # newer snapshot we already planned from.
            return await self._cause_conversion(state, event, now)
        messages = await self._cause_conversion(state, event, now)
        referrer = None
        if update.snapshot.referred_by:
            referrer = await state.snapshot(update.snapshot.referred_by)
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
        messages += await self._store(state, planned, update.cause.event_id, book, now, event.trace_id, known)
        return messages

    async def _cause_conversion(
        self, state: PlanningState, event: CustomerUpdatedEvent, now: datetime
    ) -> list[Outgoing]:
        cause = event.payload.cause
        if cause.type != "purchase" or not cause.order_id:
            return []
        return await self._convert(state, event.customer_id, cause.order_id, cause.amount, cause.occurred_at, now)

    async def _convert(
        self,
        state: PlanningState,
        customer_id: str,
        order_id: str,
        revenue: Decimal | None,
        occurred_at: datetime,
        now: datetime,
    ) -> list[Outgoing]:
        converted = await state.attribute_purchase(customer_id, order_id, revenue, occurred_at, now)
        return [
            repository.touch_lifecycle(row, TouchStatus.CONVERTED, now, reason=f"order {order_id}", revenue=revenue)
            for row in converted
        ]

    async def _store(
        self,
        state: PlanningState,
        planned: list[PlannedTouch],
        cause_event_id: str,
        book: PlanBook,
        now: datetime,
        trace_id: str | None,
        known: dict[str, CustomerSnapshot | None] | None = None,
    ) -> list[Outgoing]:
        messages: list[Outgoing] = []
        known = dict(known or {})
        await state.look_up_keys(planned)
        for touch in planned:
            if touch.customer_id not in known:
                known[touch.customer_id] = await state.snapshot(touch.customer_id)
            messages += await apply_planned(
                state.session,
                touch,
                cause_event_id=cause_event_id,
                book=book,
                settings=self._settings,
                now=now,
                snapshot=known[touch.customer_id],
                trace_id=trace_id,
                state=state,
            )
        return messages


def _named(upcoming: Sequence[AnyEvent]) -> tuple[set[str], list[str], set[str], datetime | None]:
    """The customers (with the referrers whose touches a customer.updated may plan), the event
    ids a batch names, the customers whose touches it may read (events that plan or convert;
    not consents or erasures), and the earliest of those events: what its transaction reads up
    front."""
    handled = [event for event in upcoming if isinstance(event, HANDLED)]
    customers = {event.customer_id for event in handled}
    referrers = {
        event.payload.snapshot.referred_by
        for event in handled
        if isinstance(event, CustomerUpdatedEvent) and event.payload.snapshot.referred_by
    }
    touching = [e for e in handled if isinstance(e, CustomerUpdatedEvent | PurchaseEvent | InteractionEvent)]
    planning = {e.customer_id for e in touching}
    earliest = min((e.occurred_at for e in touching), default=None)
    return customers | referrers, [event.event_id for event in handled], planning | referrers, earliest


@dataclass
class _Outcome:
    """What a transaction did that matters only once it has committed."""

    duplicates: int = 0
    queued: bool = False
