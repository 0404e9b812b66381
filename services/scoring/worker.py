"""Scoring's consumer handler: one intake event in, one customer-file transaction out.

The event claim, the file change and the ``customer.updated`` outbox row commit together; the
consumer loop commits the Kafka offset only afterwards. A crash anywhere replays the event,
and the claim makes the replay a no-op.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from datetime import UTC, datetime
from uuid import NAMESPACE_URL, uuid5

from aiokafka import ConsumerRecord
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.scoring import repository
from services.scoring.customer_file import (
    CustomerFile,
    add_purchase,
    add_refund,
    count_interaction,
    merge_consent,
    merge_traits,
)
from services.scoring.tables import outbox, processed_events
from shared.contracts import (
    AnyEvent,
    ConsentEvent,
    CustomerCause,
    CustomerUpdatedEvent,
    CustomerUpdatedPayload,
    IdentifyEvent,
    InteractionEvent,
    PurchaseEvent,
    RefundEvent,
    to_wire,
)
from shared.db import transaction
from shared.kafka import Outgoing
from shared.ledger import OutboxRelay, claim_event, enqueue
from shared.observability import ServiceMetrics
from shared.topics import CUSTOMERS

log = logging.getLogger("huitou.scoring")

IntakeEvent = IdentifyEvent | PurchaseEvent | RefundEvent | InteractionEvent | ConsentEvent


def derived_event_id(kind: str, cause_event_id: str) -> str:
    """Deterministic ids for derived events, so a re-derivation is recognisably the same event."""
    return str(uuid5(NAMESPACE_URL, f"huitou:{kind}/{cause_event_id}"))


async def fold(session: AsyncSession, file: CustomerFile, event: IntakeEvent) -> CustomerFile | None:
    """The file after ``event``, or None when the event changes nothing (e.g. a resent order)."""
    at = event.occurred_at
    match event:
        case PurchaseEvent(payload=order):
            if not await repository.record_order(session, file.customer_id, event.event_id, order, at):
                return None
            return replace(file, totals=add_purchase(file.totals, order.amount, at))
        case RefundEvent(payload=refund):
            await repository.record_refund(session, file.customer_id, refund.order_id, refund.amount)
            return replace(file, totals=add_refund(file.totals, refund.amount))
        case IdentifyEvent(payload=identify):
            return replace(file, profile=merge_traits(file.profile, identify.traits, at))
        case ConsentEvent(payload=consent):
            return replace(file, consents=merge_consent(file.consents, consent, at))
        case InteractionEvent(payload=interaction):
            return replace(file, interactions=count_interaction(file.interactions, interaction))
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
    def __init__(self, sessions: async_sessionmaker[AsyncSession], relay: OutboxRelay, metrics: ServiceMetrics) -> None:
        self._sessions = sessions
        self._relay = relay
        self._metrics = metrics

    async def __call__(self, event: AnyEvent, record: ConsumerRecord[bytes, bytes] | None = None) -> None:
        if not isinstance(event, IdentifyEvent | PurchaseEvent | RefundEvent | InteractionEvent | ConsentEvent):
            return  # not ours to fold (e.g. touch lifecycle, consumed by later scores)
        changed = False
        async with transaction(self._sessions) as session:
            if not await claim_event(session, processed_events, event.event_id):
                self._metrics.duplicates_skipped.labels("scoring").inc()
                return
            current = await repository.load_file(session, event.customer_id)
            before = current or CustomerFile(event.customer_id)
            after = await fold(session, before, event)
            if after is not None:
                after = replace(after, version=before.version + 1)
                await repository.save_file(session, after, datetime.now(UTC), is_new=current is None)
                await enqueue(session, outbox, self._announce(after, event))
                changed = True
        if changed:
            self._relay.notify()

    @staticmethod
    def _announce(file: CustomerFile, cause: IntakeEvent) -> Outgoing:
        update = CustomerUpdatedEvent(
            event_id=derived_event_id("customer.updated", cause.event_id),
            customer_id=file.customer_id,
            occurred_at=cause.occurred_at,
            received_at=datetime.now(UTC),
            source="scoring",
            historical=cause.historical,
            trace_id=cause.trace_id,
            payload=CustomerUpdatedPayload(version=file.version, cause=cause_of(cause), snapshot=file.snapshot()),
        )
        return Outgoing(CUSTOMERS, file.customer_id, to_wire(update))
