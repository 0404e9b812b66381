"""Scoring's database adapter: load and store customer files and their orders."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import insert, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from services.scoring.customer_file import CustomerFile, PurchaseTotals
from services.scoring.tables import customer_files, orders
from shared.contracts import PurchasePayload


async def load_file(session: AsyncSession, customer_id: str) -> CustomerFile | None:
    row = (
        (await session.execute(select(customer_files).where(customer_files.c.customer_id == customer_id)))
        .mappings()
        .first()
    )
    if row is None:
        return None
    return CustomerFile(
        customer_id=row["customer_id"],
        version=row["version"],
        profile=row["profile"],
        consents=row["consents"],
        interactions=row["interactions"],
        totals=PurchaseTotals(
            order_count=row["order_count"],
            revenue=row["revenue"],
            refunded=row["refunded"],
            first_purchase_at=row["first_purchase_at"],
            last_purchase_at=row["last_purchase_at"],
        ),
    )


async def save_file(session: AsyncSession, file: CustomerFile, now: datetime, *, is_new: bool) -> None:
    values: dict[str, Any] = {
        "version": file.version,
        "profile": file.profile,
        "consents": file.consents,
        "interactions": file.interactions,
        "order_count": file.totals.order_count,
        "revenue": file.totals.revenue,
        "refunded": file.totals.refunded,
        "first_purchase_at": file.totals.first_purchase_at,
        "last_purchase_at": file.totals.last_purchase_at,
        "updated_at": now,
    }
    if is_new:
        await session.execute(insert(customer_files).values(customer_id=file.customer_id, created_at=now, **values))
    else:
        await session.execute(
            update(customer_files).where(customer_files.c.customer_id == file.customer_id).values(**values)
        )


async def record_order(
    session: AsyncSession, customer_id: str, event_id: str, order: PurchasePayload, at: datetime
) -> bool:
    """Store the order; False if this customer's order id was recorded before (a resend)."""
    known = await session.scalar(
        select(orders.c.order_id).where(orders.c.customer_id == customer_id, orders.c.order_id == order.order_id)
    )
    if known is not None:
        return False
    await session.execute(
        insert(orders).values(
            customer_id=customer_id,
            order_id=order.order_id,
            event_id=event_id,
            amount=order.amount,
            refunded=Decimal(0),
            currency=order.currency,
            margin=order.margin,
            items=[item.model_dump(mode="json", exclude_none=True) for item in order.items],
            occurred_at=at,
        )
    )
    return True


async def record_refund(session: AsyncSession, customer_id: str, order_id: str, amount: Decimal) -> None:
    await session.execute(
        update(orders)
        .where(orders.c.customer_id == customer_id, orders.c.order_id == order_id)
        .values(refunded=orders.c.refunded + amount)
    )


async def recent_orders(session: AsyncSession, customer_id: str, limit: int = 20) -> list[dict[str, Any]]:
    rows = (
        (
            await session.execute(
                select(orders)
                .where(orders.c.customer_id == customer_id)
                .order_by(orders.c.occurred_at.desc())
                .limit(limit)
            )
        )
        .mappings()
        .all()
    )
    return [dict(row) for row in rows]
