"""Outreach's database adapter: event-carried customer state and touches."""

from __future__ import annotations

from datetime import datetime
from typing import Any
from uuid import NAMESPACE_URL, uuid5

from sqlalchemy import insert, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from services.outreach.care import PlannedTouch
from services.outreach.tables import customers, touches
from shared.contracts import CustomerSnapshot, TouchStatus


async def remember_customer(
    session: AsyncSession, customer_id: str, version: int, snapshot: CustomerSnapshot, now: datetime
) -> None:
    """Keep the newest snapshot; an older version arriving late does not overwrite a newer one."""
    data = snapshot.model_dump(mode="json")
    stored = await session.scalar(select(customers.c.version).where(customers.c.customer_id == customer_id))
    if stored is None:
        await session.execute(
            insert(customers).values(customer_id=customer_id, version=version, snapshot=data, updated_at=now)
        )
    elif version > stored:
        await session.execute(
            update(customers)
            .where(customers.c.customer_id == customer_id)
            .values(version=version, snapshot=data, updated_at=now)
        )


def touch_id_for(idempotency_key: str) -> str:
    return str(uuid5(NAMESPACE_URL, f"huitou:touch/{idempotency_key}"))


async def schedule_touch(
    session: AsyncSession, customer_id: str, planned: PlannedTouch, cause_event_id: str, now: datetime
) -> str | None:
    """Insert the touch unless its idempotency key exists; returns the new touch id or None."""
    exists = await session.scalar(
        select(touches.c.touch_id).where(touches.c.idempotency_key == planned.idempotency_key)
    )
    if exists is not None:
        return None
    touch_id = touch_id_for(planned.idempotency_key)
    await session.execute(
        insert(touches).values(
            touch_id=touch_id,
            customer_id=customer_id,
            plan=planned.plan,
            channel=planned.channel.value if planned.channel else None,
            status=TouchStatus.SCHEDULED.value,
            due_at=planned.due_at,
            idempotency_key=planned.idempotency_key,
            cause_event_id=cause_event_id,
            created_at=now,
            updated_at=now,
        )
    )
    return touch_id


async def customer_touches(session: AsyncSession, customer_id: str) -> list[dict[str, Any]]:
    rows = (
        (await session.execute(select(touches).where(touches.c.customer_id == customer_id).order_by(touches.c.due_at)))
        .mappings()
        .all()
    )
    return [dict(row) for row in rows]
