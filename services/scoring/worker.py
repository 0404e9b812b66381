"""Scoring's consumer handler: intake events in, customer-file changes out, a run of events per
transaction.

For each event, the event claim, the file change, its scores, the history of what changed and the
``customer.updated`` outbox row are written in the batch's transaction; they commit together, and
the consumer loop commits the Kafka offsets only afterwards. A crash anywhere replays the events,
and the claims make the replay a no-op.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from decimal import Decimal

from aiokafka import ConsumerRecord
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.scoring import repository
from services.scoring.clock import Clock
from services.scoring.customer_file import (
    CustomerFile,
    add_purchase,
    add_refund,
    count_interaction,
    merge_consent,
    merge_traits,
    note_complaint,
    note_engagement,
    note_order,
    note_share_of_wallet,
    note_touch,
)
from services.scoring.engine import Announcement, ModelStore, commit, derived_event_id, rescored
from services.scoring.purchases import OrderLine
from services.scoring.scorecard import Rules
from services.scoring.settings import ScoringSettings
from shared.contracts import (
    AnyEvent,
    ConsentEvent,
    CustomerCause,
    IdentifyEvent,
    InteractionEvent,
    InteractionKind,
    PurchaseEvent,
    RefundEvent,
    TouchEvent,
)
from shared.db import transaction
from shared.ledger import OutboxRelay
from shared.observability import ServiceMetrics

log = logging.getLogger("huitou.scoring")

IntakeEvent = IdentifyEvent | PurchaseEvent | RefundEvent | InteractionEvent | ConsentEvent
Apply = Callable[[AnyEvent, ConsumerRecord[bytes, bytes] | None], Awaitable[None]]

__all__ = ["ScoringHandler", "cause_of", "derived_event_id", "fold"]


async def fold(
    session: AsyncSession, file: CustomerFile, event: IntakeEvent, orders: list[OrderLine]
) -> CustomerFile | None:
    """The file after ``event``, or None when the event changes nothing (e.g. a resent order).

    ``orders`` holds the customer's stored orders and is kept up to date with the event.
    """
    at = event.occurred_at
    match event:
        case PurchaseEvent(payload=order):
            known = next((line for line in orders if line.order_id == order.order_id), None)
            if known is not None:  # the same order resent under a new event id: nothing to count
                if event.event_id < known.event_id:
                    await repository.keep_first_event_id(session, file.customer_id, order.order_id, event.event_id)
                return None
            unmatched = dict(file.unmatched_refunds)
            early_refunds = Decimal(unmatched.pop(order.order_id, "0"))
            orders.append(
                await repository.record_order(session, file.customer_id, event.event_id, order, at, early_refunds)
            )
            categories, last_order = note_order(file.categories, file.last_order, order, at)
            return replace(
                file,
                totals=add_purchase(file.totals, order.amount, at, order.margin),
                categories=categories,
                last_order=last_order,
                share_of_wallet=note_share_of_wallet(file.share_of_wallet, order, at),
                unmatched_refunds=unmatched,
            )
        case RefundEvent(payload=refund):
            unmatched = dict(file.unmatched_refunds)
            booking = await repository.record_refund(session, file.customer_id, event.event_id, refund, at)
            if booking == "duplicate":  # the same refund resent under a new event id: nothing to count
                return None
            if booking == "booked":
                orders[:] = [
                    replace(line, refunded=line.refunded + refund.amount) if line.order_id == refund.order_id else line
                    for line in orders
                ]
            else:  # its order has not arrived yet; it is booked on it when it does
                unmatched[refund.order_id] = str(Decimal(unmatched.get(refund.order_id, "0")) + refund.amount)
            return replace(file, totals=add_refund(file.totals, refund.amount), unmatched_refunds=unmatched)
        case IdentifyEvent(payload=identify):
            return replace(file, profile=merge_traits(file.profile, identify.traits, at))
        case ConsentEvent(payload=consent):
            return replace(file, consents=merge_consent(file.consents, consent, at))
        case InteractionEvent(payload=interaction):
            referrals = file.referral_count
            if interaction.kind is InteractionKind.REFERRAL and interaction.referred_customer_id:
                referrals = await repository.record_referral(
                    session, file.customer_id, interaction.referred_customer_id, at
                )
            return replace(
                file,
                interactions=count_interaction(file.interactions, interaction),
                engagement=note_engagement(file.engagement, interaction, at),
                complaints=note_complaint(file.complaints, interaction, at, event.event_id),
                referral_count=referrals,
            )
    return None


def cause_of(event: IntakeEvent) -> CustomerCause:
    return CustomerCause(
        event_id=event.event_id,
        type=event.type,
        occurred_at=event.occurred_at,
        historical=event.historical,
        order_id=getattr(event.payload, "order_id", None),
        amount=getattr(event.payload, "amount", None),
        interaction_kind=event.payload.kind if isinstance(event, InteractionEvent) else None,
    )


class ScoringHandler:
    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        relay: OutboxRelay,
        metrics: ServiceMetrics,
        *,
        settings: ScoringSettings | None = None,
        models: ModelStore | None = None,
        clock: Clock | None = None,
    ) -> None:
        settings = settings or ScoringSettings()
        self._sessions = sessions
        self._relay = relay
        self._metrics = metrics
        self._rules: Rules = settings.rules()
        self._models = models or ModelStore(sessions)
        self._clock = clock or Clock(settings.clock)

    async def __call__(self, event: AnyEvent, record: ConsumerRecord[bytes, bytes] | None = None) -> None:
        """Apply one event in a transaction of its own."""
        async with self.transaction() as apply:
            await apply(event, record)

    @asynccontextmanager
    async def transaction(self, upcoming: Sequence[AnyEvent] = ()) -> AsyncIterator[Apply]:
        """One transaction for a run of events; see :class:`shared.kafka.BatchHandler`."""
        outcome = _Outcome()
        async with transaction(self._sessions) as session:

            async def apply(event: AnyEvent, _record: ConsumerRecord[bytes, bytes] | None = None) -> None:
                await self._apply(session, event, outcome)

            yield apply
        # Only now is the work durable: a rolled-back batch is retried, and counts nothing twice.
        if outcome.duplicates:
            self._metrics.duplicates_skipped.labels("scoring").inc(outcome.duplicates)
        if outcome.queued:
            self._relay.notify()

    async def _apply(self, session: AsyncSession, event: AnyEvent, outcome: _Outcome) -> None:
        if isinstance(event, TouchEvent):
            await self._note_touch(session, event, outcome)
            return
        if not isinstance(event, IdentifyEvent | PurchaseEvent | RefundEvent | InteractionEvent | ConsentEvent):
            return  # not ours to fold (alias: not merged yet)
        if not await repository.claim(session, event.event_id):
            outcome.duplicates += 1
            return
        current, referrer = await repository.load_for_event(session, event.customer_id)
        before = current or CustomerFile(event.customer_id, referred_by=referrer)
        orders = await repository.order_lines(session, event.customer_id) if before.totals.order_count else []
        folded = await fold(session, before, event, orders)
        if folded is None:
            return
        folded = folded.seen(event.occurred_at)
        model = await self._models.current(session)
        after, found = rescored(folded, orders, model, self._clock.for_file(folded), self._rules)
        announcement = Announcement(cause_of(event), event.historical, event.trace_id)
        # The referrer came with the (missing) file, unless this event records a referral: that one
        # could name the customer themself, so a new file then looks its referrer up afterwards.
        referrer_known = not _is_referral(event)
        if await commit(session, current, after, found, announcement, referrer_known=referrer_known):
            outcome.queued = True


    async def _note_touch(self, session: AsyncSession, event: TouchEvent, outcome: _Outcome) -> None:
        """Keep the care a customer received in their file (touches by outcome, the latest sent).

        Nothing is announced: care changes no score, and a customer.updated per touch would only
        send outreach its own news back."""
        if not await repository.claim(session, event.event_id):
            outcome.duplicates += 1
            return
        current, _ = await repository.load_for_event(session, event.customer_id)
        if current is None:
            return  # no file (erased, or a touch for a customer scoring never saw): nothing to keep
        engagement = note_touch(current.engagement, event.payload, event.occurred_at)
        if engagement != current.engagement:
            await repository.save_engagement(session, event.customer_id, engagement, datetime.now(UTC))


def _is_referral(event: IntakeEvent) -> bool:
    return isinstance(event, InteractionEvent) and event.payload.kind is InteractionKind.REFERRAL


@dataclass
class _Outcome:
    """What a transaction did that matters only once it has committed."""

    duplicates: int = 0
    queued: bool = False
