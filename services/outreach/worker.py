"""Outreach's consumer handler: a customer-file change in, the care touches it calls for out."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from aiokafka import ConsumerRecord
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.outreach import repository
from services.outreach.care import PlannedTouch, plan_follow_up
from services.outreach.tables import outbox, processed_events
from shared.contracts import (
    AnyEvent,
    CustomerUpdatedEvent,
    TouchEvent,
    TouchPayload,
    TouchStatus,
    to_wire,
)
from shared.db import transaction
from shared.kafka import Outgoing
from shared.ledger import OutboxRelay, claim_event, enqueue
from shared.observability import ServiceMetrics
from shared.topics import TOUCHES


class OutreachHandler:
    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        relay: OutboxRelay,
        metrics: ServiceMetrics,
        *,
        follow_up_delay: timedelta,
    ) -> None:
        self._sessions = sessions
        self._relay = relay
        self._metrics = metrics
        self._delay = follow_up_delay

    async def __call__(self, event: AnyEvent, record: ConsumerRecord[bytes, bytes] | None = None) -> None:
        if not isinstance(event, CustomerUpdatedEvent):
            return
        now = datetime.now(UTC)
        scheduled = False
        async with transaction(self._sessions) as session:
            if not await claim_event(session, processed_events, event.event_id):
                self._metrics.duplicates_skipped.labels("outreach").inc()
                return
            update = event.payload
            await repository.remember_customer(session, event.customer_id, update.version, update.snapshot, now)
            planned = plan_follow_up(event.customer_id, update, now=now, delay=self._delay)
            if planned is not None:
                touch_id = await repository.schedule_touch(session, event.customer_id, planned, event.event_id, now)
                if touch_id is not None:
                    await enqueue(session, outbox, _lifecycle(event, touch_id, planned, now))
                    scheduled = True
        if scheduled:
            self._relay.notify()


def _lifecycle(cause: CustomerUpdatedEvent, touch_id: str, planned: PlannedTouch, now: datetime) -> Outgoing:
    message = TouchEvent(
        event_id=f"{touch_id}:{TouchStatus.SCHEDULED.value}",
        customer_id=cause.customer_id,
        occurred_at=now,
        received_at=now,
        source="outreach",
        trace_id=cause.trace_id,
        payload=TouchPayload(
            touch_id=touch_id,
            plan=planned.plan,
            status=TouchStatus.SCHEDULED,
            channel=planned.channel,
            due_at=planned.due_at,
        ),
    )
    return Outgoing(TOUCHES, cause.customer_id, to_wire(message))
