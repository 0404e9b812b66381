"""Care rules as pure functions: which touch a customer-file change calls for, and when."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from shared.contracts import Channel, CustomerSnapshot, CustomerUpdatedPayload

POST_PURCHASE_FOLLOW_UP = "post_purchase_follow_up"


@dataclass(frozen=True)
class PlannedTouch:
    plan: str
    idempotency_key: str
    due_at: datetime
    channel: Channel | None


def preferred_channel(snapshot: CustomerSnapshot) -> Channel | None:
    """Email when we have an address, else SMS when we have a number; None until we know one."""
    if snapshot.email:
        return Channel.EMAIL
    if snapshot.phone:
        return Channel.SMS
    return None


def plan_follow_up(
    customer_id: str, update: CustomerUpdatedPayload, *, now: datetime, delay: timedelta
) -> PlannedTouch | None:
    """A post-purchase follow-up ``delay`` after each new order.

    A backfilled (historical) order whose follow-up moment has already passed gets none: care
    must answer what the customer just did, not what they did last year.
    """
    cause = update.cause
    if cause.type != "purchase" or not cause.order_id:
        return None
    due = cause.occurred_at + delay
    if cause.historical and due <= now:
        return None
    return PlannedTouch(
        plan=POST_PURCHASE_FOLLOW_UP,
        # One follow-up per order, whatever the number of replays or resends.
        idempotency_key=f"{POST_PURCHASE_FOLLOW_UP}:{customer_id}:{cause.order_id}",
        due_at=due,
        channel=preferred_channel(update.snapshot),
    )
