"""Scoring's database adapter: customer files, their orders, refunds, referrals, history, notes,
tags and contacts, model snapshots, the replay clock and task leases."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, tzinfo
from decimal import Decimal
from typing import Any, Literal

import numpy as np
from sqlalchemy import and_, bindparam, delete, func, insert, literal, or_, select, true, type_coerce, update
from sqlalchemy.ext.asyncio import AsyncSession

from services.scoring.customer_file import CustomerFile, PurchaseTotals
from services.scoring.loyalty import Loyalty
from services.scoring.population import PopulationModel, PurchaseLog, occasions_log
from services.scoring.purchases import OrderLine, TierBasis, local_day
from services.scoring.scorecard import Scorecard
from services.scoring.tables import (
    clock,
    contacts,
    customer_files,
    customer_tags,
    leases,
    model_snapshots,
    notes,
    orders,
    outbox,
    processed_events,
    referrals,
    refunds,
    score_history,
)
from shared.contracts import (
    ChurnBand,
    CustomerCause,
    FieldChange,
    LifecycleStage,
    PurchasePayload,
    RefundPayload,
    ValueTier,
)
from shared.db import Money
from shared.ledger import claim_event

ZERO = Decimal(0)


# --- the customer file ------------------------------------------------------------------------


def _enum(kind: Any, value: str | None) -> Any:
    return None if value is None else kind(value)


def _card(row: Any) -> Scorecard | None:
    if row["scored_as_of"] is None:
        return None
    details = dict(row["score_details"] or {})
    loyal = details.get("loyalty")
    rfm = row["rfm"]
    return Scorecard(
        as_of=row["scored_as_of"],
        model_id=row["model_id"],
        occasion_count=row["occasion_count"],
        stage=_enum(LifecycleStage, row["stage"]),
        rhythm_days=row["rhythm_days"],
        computed_tier=_enum(ValueTier, row["computed_tier"]),
        value_tier=_enum(ValueTier, row["value_tier"]),
        tier_value=row["tier_value"],
        grade=row["grade"],
        rfm=(int(rfm[0]), int(rfm[1]), int(rfm[2])) if rfm else None,
        p_alive=row["p_alive"],
        p_no_purchase_90d=row["p_no_purchase_90d"],
        churn_band=_enum(ChurnBand, row["churn_band"]),
        expected_purchases_90d=row["expected_purchases_90d"],
        expected_purchases_365d=row["expected_purchases_365d"],
        expected_spend=row["expected_spend"],
        clv_365=row["clv_365"],
        expected_next_order_at=row["expected_next_order_at"],
        loyalty=Loyalty(**loyal) if loyal else None,
        satisfaction_level=row["satisfaction_level"],
        loyalty_quadrant=row["loyalty_quadrant"],
        relationship_type=row["relationship_type"],
        prospect_grade=row["prospect_grade"],
        next_check_at=row["next_check_at"],
        reasons=details.get("reasons", {}),
        details=details.get("details", {}),
    )


def _card_columns(card: Scorecard | None) -> dict[str, Any]:
    if card is None:
        return {"scored_as_of": None, "occasion_count": 0, "score_details": {}, "next_check_at": None}
    return {
        "scored_as_of": card.as_of,
        "model_id": card.model_id,
        "occasion_count": card.occasion_count,
        "stage": card.stage,
        "rhythm_days": card.rhythm_days,
        "value_tier": card.value_tier,
        "computed_tier": card.computed_tier,
        "tier_value": card.tier_value,
        "grade": card.grade,
        "rfm": "".join(map(str, card.rfm)) if card.rfm else None,
        "p_alive": card.p_alive,
        "p_no_purchase_90d": card.p_no_purchase_90d,
        "churn_band": card.churn_band,
        "expected_purchases_90d": card.expected_purchases_90d,
        "expected_purchases_365d": card.expected_purchases_365d,
        "expected_spend": card.expected_spend,
        "clv_365": card.clv_365,
        "expected_next_order_at": card.expected_next_order_at,
        "loyalty_index": card.loyalty.index if card.loyalty else None,
        "satisfaction_level": card.satisfaction_level,
        "loyalty_quadrant": card.loyalty_quadrant,
        "relationship_type": card.relationship_type,
        "prospect_grade": card.prospect_grade,
        "score_details": {
            "loyalty": card.loyalty.as_json() if card.loyalty else None,
            "reasons": dict(card.reasons),
            "details": dict(card.details),
        },
        "next_check_at": card.next_check_at,
    }


def file_from_row(row: Any) -> CustomerFile:
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
            margin=row["margin"],
        ),
        engagement=row["engagement"],
        complaints=row["complaints"],
        categories=row["categories"],
        unmatched_refunds=row["unmatched_refunds"],
        last_order=row["last_order"],
        share_of_wallet=row["share_of_wallet"],
        referral_count=row["referral_count"],
        tags=tuple(row["tags"]),
        tier_override=_enum(ValueTier, row["tier_override"]),
        tier_override_reason=row["tier_override_reason"],
        last_event_at=row["last_event_at"],
        scores=_card(row),
        contact_count=row["contact_count"],
        referred_by=row.get("referred_by"),
    )


async def load_file(session: AsyncSession, customer_id: str, *, for_update: bool = False) -> CustomerFile | None:
    """The file, locked for this transaction with ``for_update`` (PostgreSQL; SQLite locks the database)."""
    connection = await session.connection()
    query = _LOAD_FILE_FOR_UPDATE if for_update else _LOAD_FILE
    row = (await connection.execute(query, {"file_id": customer_id})).mappings().first()
    return None if row is None else file_from_row(row)


def _with_referrer() -> Any:
    """The file's columns plus its first referrer (by event time, then id), in one round trip."""
    first_referrer = (
        select(referrals.c.referrer_id)
        .where(referrals.c.referred_customer_id == customer_files.c.customer_id)
        .order_by(referrals.c.occurred_at, referrals.c.referrer_id)
        .limit(1)
        .scalar_subquery()
        .label("referred_by")
    )
    return select(customer_files, first_referrer)


_LOAD_FILE = _with_referrer().where(customer_files.c.customer_id == bindparam("file_id"))
_LOAD_FILE_FOR_UPDATE = _LOAD_FILE.with_for_update()


async def load_for_event(session: AsyncSession, customer_id: str) -> tuple[CustomerFile | None, str | None]:
    """The file, locked like ``load_file(for_update=True)``, and the customer's first referrer, in
    one round trip even when there is no file yet: a new file needs its referrer (someone may
    have referred the customer before their first event), and that was a second statement."""
    connection = await session.connection()
    row = (await connection.execute(_LOAD_FOR_EVENT, {"file_id": customer_id})).mappings().one()
    if row["customer_id"] is None:
        return None, row["referred_by"]
    return file_from_row(row), row["referred_by"]


def _file_or_nothing_with_referrer() -> Any:
    """One row always: the file's columns (NULL when there is no file) and the first referrer.
    The lock sits on the file's own sub-select: PostgreSQL refuses FOR UPDATE on the nullable
    side of an outer join, but locks the rows a locking sub-select reads."""
    file = (
        select(customer_files)
        .where(customer_files.c.customer_id == bindparam("file_id"))
        .with_for_update()
        .subquery("loaded_file")
    )
    first_referrer = (
        select(referrals.c.referrer_id)
        .where(referrals.c.referred_customer_id == bindparam("file_id"))
        .order_by(referrals.c.occurred_at, referrals.c.referrer_id)
        .limit(1)
        .scalar_subquery()
        .label("referred_by")
    )
    one_row = select(literal(1).label("one")).subquery("one_row")
    return select(file, first_referrer).select_from(one_row.outerjoin(file, true()))


_LOAD_FOR_EVENT = _file_or_nothing_with_referrer()


async def load_files(
    session: AsyncSession, customer_ids: Sequence[str], *, for_update: bool = False
) -> list[CustomerFile]:
    query = (
        select(customer_files)
        .where(customer_files.c.customer_id.in_(customer_ids))
        .order_by(customer_files.c.customer_id)
    )
    if for_update:
        query = query.with_for_update()
    return [file_from_row(row) for row in (await session.execute(query)).mappings().all()]


def _file_columns(file: CustomerFile) -> dict[str, Any]:
    return {
        "version": file.version,
        "profile": file.profile,
        "consents": file.consents,
        "interactions": file.interactions,
        "order_count": file.totals.order_count,
        "revenue": file.totals.revenue,
        "refunded": file.totals.refunded,
        "first_purchase_at": file.totals.first_purchase_at,
        "last_purchase_at": file.totals.last_purchase_at,
        "margin": file.totals.margin,
        "engagement": file.engagement,
        "complaints": file.complaints,
        "categories": file.categories,
        "unmatched_refunds": file.unmatched_refunds,
        "last_order": file.last_order,
        "share_of_wallet": file.share_of_wallet,
        "referral_count": file.referral_count,
        "contact_count": file.contact_count,
        "tags": list(file.tags),
        "tier_override": file.tier_override,
        "tier_override_reason": file.tier_override_reason,
        "last_event_at": file.last_event_at,
        **_card_columns(file.scores),
    }


# Built once: constructing a 60-column INSERT/UPDATE per event costs more than executing it.
_INSERT_FILE = insert(customer_files)
_UPDATE_FILE = update(customer_files).where(customer_files.c.customer_id == bindparam("file_id"))


async def save_file(session: AsyncSession, file: CustomerFile, now: datetime, *, is_new: bool) -> None:
    values = {**_file_columns(file), "updated_at": now}
    connection = await session.connection()
    if is_new:
        await connection.execute(_INSERT_FILE, {"customer_id": file.customer_id, "created_at": now, **values})
    else:
        await connection.execute(_UPDATE_FILE, {"file_id": file.customer_id, **values})


async def save_engagement(session: AsyncSession, customer_id: str, engagement: dict[str, Any], now: datetime) -> None:
    """Only the engagement column: care received changes no score, so no version and no announcement."""
    await session.execute(
        update(customer_files)
        .where(customer_files.c.customer_id == customer_id)
        .values(engagement=engagement, updated_at=now)
    )


async def claim(session: AsyncSession, event_id: str) -> bool:
    """Record that ``event_id`` is being applied; False if it was applied before (rolls back with
    the caller's transaction)."""
    return await claim_event(session, processed_events, event_id)


# --- orders, refunds, referrals -----------------------------------------------------------------


async def record_order(
    session: AsyncSession,
    customer_id: str,
    event_id: str,
    order: PurchasePayload,
    at: datetime,
    refunded: Decimal = ZERO,
) -> OrderLine:
    """Store a new order (the caller has checked its id against the customer's orders); ``refunded``
    carries refunds that arrived before it."""
    connection = await session.connection()
    await connection.execute(
        _INSERT_ORDER,
        {
            "customer_id": customer_id,
            "order_id": order.order_id,
            "event_id": event_id,
            "amount": order.amount,
            "refunded": refunded,
            "currency": order.currency,
            "margin": order.margin,
            "items": [item.model_dump(mode="json", exclude_none=True) for item in order.items],
            "occurred_at": at,
        },
    )
    return OrderLine(order.order_id, at, order.amount, refunded, order.margin, event_id)


_INSERT_ORDER = insert(orders)


RefundBooking = Literal["booked", "unmatched", "duplicate"]


async def record_refund(
    session: AsyncSession, customer_id: str, event_id: str, refund: RefundPayload, at: datetime
) -> RefundBooking:
    """Keep the refund as its own record and book it on its order.

    ``unmatched``: the order is not known (yet), the caller keeps the refund aside until it
    arrives. ``duplicate``: a refund with the same ``refund_id`` was booked before (resent under a
    new event id), nothing is recorded.
    """
    if refund.refund_id is not None:
        known = await session.scalar(
            select(refunds.c.event_id).where(
                refunds.c.customer_id == customer_id,
                refunds.c.order_id == refund.order_id,
                refunds.c.refund_id == refund.refund_id,
            )
        )
        if known is not None:
            return "duplicate"
    await session.execute(
        insert(refunds).values(
            customer_id=customer_id,
            event_id=event_id,
            order_id=refund.order_id,
            refund_id=refund.refund_id,
            amount=refund.amount,
            reason=refund.reason,
            occurred_at=at,
        )
    )
    result = await session.execute(
        update(orders)
        .where(orders.c.customer_id == customer_id, orders.c.order_id == refund.order_id)
        .values(refunded=orders.c.refunded + refund.amount)
    )
    return "booked" if getattr(result, "rowcount", 0) else "unmatched"


_ORDER_LINES = select(
    orders.c.order_id, orders.c.occurred_at, orders.c.amount, orders.c.refunded, orders.c.margin, orders.c.event_id
).where(orders.c.customer_id == bindparam("owner"))


async def order_lines(session: AsyncSession, customer_id: str) -> list[OrderLine]:
    connection = await session.connection()
    rows = await connection.execute(_ORDER_LINES, {"owner": customer_id})
    return [OrderLine(r.order_id, r.occurred_at, r.amount, r.refunded, r.margin, r.event_id) for r in rows]


async def keep_first_event_id(session: AsyncSession, customer_id: str, order_id: str, event_id: str) -> None:
    """A resent order keeps the lowest of its event ids, so its provenance does not depend on arrival."""
    await session.execute(
        update(orders)
        .where(orders.c.customer_id == customer_id, orders.c.order_id == order_id, orders.c.event_id > event_id)
        .values(event_id=event_id)
    )


async def order_lines_for(session: AsyncSession, customer_ids: Sequence[str]) -> dict[str, list[OrderLine]]:
    rows = await session.execute(
        select(
            orders.c.customer_id,
            orders.c.order_id,
            orders.c.occurred_at,
            orders.c.amount,
            orders.c.refunded,
            orders.c.margin,
        ).where(orders.c.customer_id.in_(customer_ids))
    )
    found: dict[str, list[OrderLine]] = {cid: [] for cid in customer_ids}
    for r in rows:
        found[r.customer_id].append(OrderLine(r.order_id, r.occurred_at, r.amount, r.refunded, r.margin))
    return found


async def record_referral(session: AsyncSession, referrer_id: str, referred_id: str, at: datetime) -> int:
    """Remember who referred whom (earliest time wins); returns the referrer's distinct referrals."""
    known = await session.scalar(
        select(referrals.c.occurred_at).where(
            referrals.c.referrer_id == referrer_id, referrals.c.referred_customer_id == referred_id
        )
    )
    if known is None:
        await session.execute(
            insert(referrals).values(referrer_id=referrer_id, referred_customer_id=referred_id, occurred_at=at)
        )
    elif at < known:
        await session.execute(
            update(referrals)
            .where(referrals.c.referrer_id == referrer_id, referrals.c.referred_customer_id == referred_id)
            .values(occurred_at=at)
        )
    count = await session.scalar(
        select(func.count()).select_from(referrals).where(referrals.c.referrer_id == referrer_id)
    )
    return int(count or 0)


async def referred_by(session: AsyncSession, customer_id: str) -> str | None:
    """The first referrer of a customer (by event time, then id, so arrival order does not matter)."""
    connection = await session.connection()
    found = await connection.scalar(_REFERRED_BY, {"referred": customer_id})
    return None if found is None else str(found)


_REFERRED_BY = (
    select(referrals.c.referrer_id)
    .where(referrals.c.referred_customer_id == bindparam("referred"))
    .order_by(referrals.c.occurred_at, referrals.c.referrer_id)
    .limit(1)
)


async def referred_by_many(session: AsyncSession, customer_ids: Sequence[str]) -> dict[str, str]:
    rows = await session.execute(
        select(referrals.c.referred_customer_id, referrals.c.referrer_id, referrals.c.occurred_at)
        .where(referrals.c.referred_customer_id.in_(customer_ids))
        .order_by(referrals.c.referred_customer_id, referrals.c.occurred_at, referrals.c.referrer_id)
    )
    found: dict[str, str] = {}
    for row in rows:
        found.setdefault(row.referred_customer_id, row.referrer_id)
    return found


async def recent_orders(session: AsyncSession, customer_id: str, limit: int = 20) -> list[dict[str, Any]]:
    rows = (
        (
            await session.execute(
                select(
                    orders.c.order_id,
                    orders.c.amount,
                    orders.c.refunded,
                    orders.c.currency,
                    orders.c.margin,
                    orders.c["items"],  # .items is the collection's own method
                    orders.c.occurred_at,
                )
                .where(orders.c.customer_id == customer_id)
                .order_by(orders.c.occurred_at.desc(), orders.c.order_id.desc())
                .limit(limit)
            )
        )
        .mappings()
        .all()
    )
    return [dict(row) for row in rows]


# --- history ------------------------------------------------------------------------------------


async def append_history(
    session: AsyncSession,
    customer_id: str,
    changes: Sequence[FieldChange],
    cause: CustomerCause,
    as_of: datetime,
    now: datetime,
) -> None:
    if not changes:
        return
    connection = await session.connection()
    await connection.execute(
        _INSERT_HISTORY,
        [
            {
                "customer_id": customer_id,
                "field": change.field,
                "before": change.before,
                "after": change.after,
                "reason": change.reason,
                "cause_type": cause.type,
                "cause_event_id": cause.event_id,
                "as_of": as_of,
                "recorded_at": now,
            }
            for change in changes
        ],
    )


_INSERT_HISTORY = insert(score_history)


async def history(session: AsyncSession, customer_id: str, limit: int | None = None) -> list[dict[str, Any]]:
    query = (
        select(
            score_history.c.field,
            score_history.c.before,
            score_history.c.after,
            score_history.c.reason,
            score_history.c.cause_type,
            score_history.c.cause_event_id,
            score_history.c.as_of,
            score_history.c.recorded_at,
        )
        .where(score_history.c.customer_id == customer_id)
        .order_by(score_history.c.id.desc())
    )
    if limit is not None:
        query = query.limit(limit)
    return [dict(row) for row in (await session.execute(query)).mappings().all()]


# --- operator data: notes, tags, contacts -------------------------------------------------------


async def add_note(session: AsyncSession, customer_id: str, text: str, author: str | None, now: datetime) -> int:
    result = await session.execute(
        insert(notes).values(customer_id=customer_id, text=text, author=author, created_at=now).returning(notes.c.id)
    )
    return int(result.scalar_one())


async def delete_note(session: AsyncSession, customer_id: str, note_id: int) -> bool:
    result = await session.execute(delete(notes).where(notes.c.customer_id == customer_id, notes.c.id == note_id))
    return bool(getattr(result, "rowcount", 0))


async def list_notes(session: AsyncSession, customer_id: str) -> list[dict[str, Any]]:
    rows = await session.execute(
        select(notes.c.id, notes.c.text, notes.c.author, notes.c.created_at)
        .where(notes.c.customer_id == customer_id)
        .order_by(notes.c.id.desc())
    )
    return [dict(row) for row in rows.mappings().all()]


async def set_tags(
    session: AsyncSession, customer_id: str, before: Iterable[str], after: Iterable[str], now: datetime
) -> None:
    """Mirror the file's tags into the searchable tag table."""
    old, new = set(before), set(after)
    if old - new:
        await session.execute(
            delete(customer_tags).where(customer_tags.c.customer_id == customer_id, customer_tags.c.tag.in_(old - new))
        )
    if new - old:
        await session.execute(
            insert(customer_tags),
            [{"customer_id": customer_id, "tag": tag, "added_at": now} for tag in sorted(new - old)],
        )


async def add_contact(session: AsyncSession, customer_id: str, contact: dict[str, Any], now: datetime) -> None:
    if contact.get("is_primary"):
        await session.execute(update(contacts).where(contacts.c.customer_id == customer_id).values(is_primary=False))
    await session.execute(insert(contacts).values(customer_id=customer_id, created_at=now, **contact))


async def contact_exists(session: AsyncSession, customer_id: str, contact_id: str) -> bool:
    found = await session.scalar(
        select(contacts.c.contact_id).where(contacts.c.customer_id == customer_id, contacts.c.contact_id == contact_id)
    )
    return found is not None


async def delete_contact(session: AsyncSession, customer_id: str, contact_id: str) -> bool:
    result = await session.execute(
        delete(contacts).where(contacts.c.customer_id == customer_id, contacts.c.contact_id == contact_id)
    )
    return bool(getattr(result, "rowcount", 0))


async def list_contacts(session: AsyncSession, customer_id: str) -> list[dict[str, Any]]:
    rows = await session.execute(
        select(
            contacts.c.contact_id,
            contacts.c.name,
            contacts.c.email,
            contacts.c.phone,
            contacts.c.role,
            contacts.c.is_primary,
            contacts.c.created_at,
        )
        .where(contacts.c.customer_id == customer_id)
        .order_by(contacts.c.created_at, contacts.c.contact_id)
    )
    return [dict(row) for row in rows.mappings().all()]


async def count_contacts(session: AsyncSession, customer_id: str) -> int:
    count = await session.scalar(
        select(func.count()).select_from(contacts).where(contacts.c.customer_id == customer_id)
    )
    return int(count or 0)


# --- export and erasure ------------------------------------------------------------------------


async def export_rows(session: AsyncSession, customer_id: str) -> dict[str, list[dict[str, Any]]]:
    """Every row held about a customer, table by table."""
    found: dict[str, list[dict[str, Any]]] = {}
    for name, table, where in (
        ("orders", orders, orders.c.customer_id == customer_id),
        ("refunds", refunds, refunds.c.customer_id == customer_id),
        ("referrals_made", referrals, referrals.c.referrer_id == customer_id),
        ("referred_by", referrals, referrals.c.referred_customer_id == customer_id),
        ("notes", notes, notes.c.customer_id == customer_id),
        ("contacts", contacts, contacts.c.customer_id == customer_id),
        ("history", score_history, score_history.c.customer_id == customer_id),
    ):
        rows = await session.execute(select(table).where(where))
        found[name] = [dict(row) for row in rows.mappings().all()]
    return found


async def erase(session: AsyncSession, customer_id: str, pseudonym: str) -> None:
    """Delete everything held about a customer. A referral naming them stays with the referrer (it is
    the referrer's history) but under a pseudonym; undelivered announcements about them are dropped."""
    for table, column in (
        (orders, orders.c.customer_id),
        (refunds, refunds.c.customer_id),
        (referrals, referrals.c.referrer_id),
        (notes, notes.c.customer_id),
        (contacts, contacts.c.customer_id),
        (customer_tags, customer_tags.c.customer_id),
        (score_history, score_history.c.customer_id),
        (outbox, outbox.c.key),
        (customer_files, customer_files.c.customer_id),
    ):
        await session.execute(delete(table).where(column == customer_id))
    await session.execute(
        update(referrals).where(referrals.c.referred_customer_id == customer_id).values(referred_customer_id=pseudonym)
    )
    # The lapse sweep's claims name the customer (clock:<id>:<day>); other event ids are the source's.
    await session.execute(
        delete(processed_events).where(processed_events.c.event_id.startswith(f"clock:{customer_id}:", autoescape=True))
    )


# --- population ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class PopulationData:
    log: PurchaseLog
    customer_ids: list[str]


async def purchase_log(session: AsyncSession, as_of: datetime, tz: tzinfo, basis: TierBasis) -> PopulationData:
    """Every order up to ``as_of`` as purchase occasions (customer code, local day, net, tier value)."""
    result = await session.execute(
        select(orders.c.customer_id, orders.c.occurred_at, orders.c.amount, orders.c.refunded, orders.c.margin)
        .where(orders.c.occurred_at <= as_of)
        .order_by(orders.c.customer_id)
    )
    ids: list[str] = []
    codes: list[int] = []
    days: list[int] = []
    nets: list[float] = []
    values: list[float] = []
    previous = None
    for customer_id, occurred_at, amount, refunded, margin in result:
        if customer_id != previous:
            ids.append(customer_id)
            previous = customer_id
        line = OrderLine("", occurred_at, amount, refunded, margin)
        codes.append(len(ids) - 1)
        days.append(local_day(occurred_at, tz))
        nets.append(float(line.net))
        values.append(float(line.value(basis)))
    log = occasions_log(
        np.asarray(codes, dtype=np.int64),
        np.asarray(days, dtype=np.int64),
        np.asarray(nets, dtype=np.float64),
        np.asarray(values, dtype=np.float64),
    )
    return PopulationData(log, ids)


async def purchasing_population(session: AsyncSession) -> int:
    count = await session.scalar(
        select(func.count()).select_from(customer_files).where(customer_files.c.order_count > 0)
    )
    return int(count or 0)


async def save_model(session: AsyncSession, model: PopulationModel) -> int:
    result = await session.execute(
        insert(model_snapshots)
        .values(
            fitted_at=model.fitted_at,
            as_of=model.as_of,
            trigger=model.trigger,
            time_unit_days=model.time_unit_days,
            n_customers=model.n_customers,
            n_repeaters=model.n_repeaters,
            log_likelihood=model.log_likelihood,
            statistics=model.statistics_json(),
        )
        .returning(model_snapshots.c.id)
    )
    return int(result.scalar_one())


def _model_from_row(row: Any) -> PopulationModel:
    return PopulationModel.from_row(
        model_id=row["id"],
        fitted_at=row["fitted_at"],
        as_of=row["as_of"],
        trigger=row["trigger"],
        time_unit_days=row["time_unit_days"],
        n_customers=row["n_customers"],
        n_repeaters=row["n_repeaters"],
        statistics=row["statistics"],
    )


async def latest_model(session: AsyncSession) -> PopulationModel | None:
    row = (
        (await session.execute(select(model_snapshots).order_by(model_snapshots.c.id.desc()).limit(1)))
        .mappings()
        .first()
    )
    return None if row is None else _model_from_row(row)


async def latest_model_id(session: AsyncSession) -> int | None:
    found = await session.scalar(select(func.max(model_snapshots.c.id)))
    return None if found is None else int(found)


async def rescore_progress(session: AsyncSession, model_id: int) -> tuple[str | None, datetime | None]:
    row = (
        await session.execute(
            select(model_snapshots.c.rescore_cursor, model_snapshots.c.rescored_at).where(
                model_snapshots.c.id == model_id
            )
        )
    ).first()
    return (None, None) if row is None else (row.rescore_cursor, row.rescored_at)


async def set_rescore_progress(
    session: AsyncSession, model_id: int, cursor: str | None, done_at: datetime | None = None
) -> None:
    await session.execute(
        update(model_snapshots)
        .where(model_snapshots.c.id == model_id)
        .values(rescore_cursor=cursor, rescored_at=done_at)
    )


async def customers_after(session: AsyncSession, cursor: str | None, limit: int) -> list[str]:
    query = select(customer_files.c.customer_id).order_by(customer_files.c.customer_id).limit(limit)
    if cursor is not None:
        query = query.where(customer_files.c.customer_id > cursor)
    return list((await session.execute(query)).scalars())


async def due_customers(session: AsyncSession, as_of: datetime, limit: int, after: str | None = None) -> list[str]:
    """Files whose next check has come (or that were never scored), oldest check first."""
    due = or_(customer_files.c.next_check_at <= as_of, customer_files.c.scored_as_of.is_(None))
    query = select(customer_files.c.customer_id).where(due).order_by(customer_files.c.customer_id).limit(limit)
    if after is not None:
        query = query.where(customer_files.c.customer_id > after)
    return list((await session.execute(query)).scalars())


async def postpone_check(session: AsyncSession, customer_id: str, until: datetime) -> None:
    await session.execute(
        update(customer_files)
        .where(customer_files.c.customer_id == customer_id, customer_files.c.next_check_at < until)
        .values(next_check_at=until)
    )


# --- clock and leases -----------------------------------------------------------------------------

REPLAY_CLOCK = "replay"


async def replay_clock(session: AsyncSession) -> datetime | None:
    """Event time so far: the latest stored replay clock or the latest event any file has seen."""
    stored = await session.scalar(select(clock.c.at).where(clock.c.name == REPLAY_CLOCK))
    seen = await session.scalar(select(func.max(customer_files.c.last_event_at)))
    candidates = [t for t in (stored, seen) if t is not None]
    return max(candidates) if candidates else None


async def advance_replay_clock(session: AsyncSession, at: datetime) -> None:
    """Move the persisted replay clock forward (never back, even after an erasure)."""
    stored = await session.scalar(select(clock.c.at).where(clock.c.name == REPLAY_CLOCK))
    if stored is None:
        await session.execute(insert(clock).values(name=REPLAY_CLOCK, at=at))
    elif at > stored:
        await session.execute(update(clock).where(clock.c.name == REPLAY_CLOCK).values(at=at))


async def take_lease(session: AsyncSession, name: str, holder: str, now: datetime, ttl: timedelta) -> bool:
    """One replica at a time runs a periodic task: take or renew ``name`` until now + ttl."""
    result = await session.execute(
        update(leases)
        .where(leases.c.name == name, or_(leases.c.holder == holder, leases.c.expires_at < now))
        .values(holder=holder, expires_at=now + ttl)
    )
    if getattr(result, "rowcount", 0):
        return True
    exists = await session.scalar(select(leases.c.name).where(leases.c.name == name))
    if exists is not None:
        return False
    await session.execute(insert(leases).values(name=name, holder=holder, expires_at=now + ttl))
    return True


# --- search and reports ---------------------------------------------------------------------------

SORTABLE = {
    "customer_id": customer_files.c.customer_id,
    "clv_365": customer_files.c.clv_365,
    "revenue": customer_files.c.revenue,
    "order_count": customer_files.c.order_count,
    "last_purchase_at": customer_files.c.last_purchase_at,
    "first_purchase_at": customer_files.c.first_purchase_at,
    "p_alive": customer_files.c.p_alive,
    "loyalty_index": customer_files.c.loyalty_index,
    "expected_next_order_at": customer_files.c.expected_next_order_at,
    "updated_at": customer_files.c.updated_at,
}


@dataclass(frozen=True)
class CustomerQuery:
    value_tier: Sequence[str] = ()
    grade: Sequence[str] = ()
    stage: Sequence[str] = ()
    churn_band: Sequence[str] = ()
    tags: Sequence[str] = ()
    clv_min: Decimal | None = None
    clv_max: Decimal | None = None
    last_purchase_from: datetime | None = None
    last_purchase_to: datetime | None = None
    sort: str = "customer_id"
    descending: bool = False
    limit: int = 50
    offset: int = 0


async def search(session: AsyncSession, query: CustomerQuery) -> tuple[int, list[CustomerFile]]:
    c = customer_files.c
    conditions: list[Any] = []
    for column, wanted in (
        (c.value_tier, query.value_tier),
        (c.grade, query.grade),
        (c.stage, query.stage),
        (c.churn_band, query.churn_band),
    ):
        if wanted:
            conditions.append(column.in_(list(wanted)))
    for tag in query.tags:  # every tag given must be present
        conditions.append(
            select(customer_tags.c.tag)
            .where(customer_tags.c.customer_id == c.customer_id, customer_tags.c.tag == tag)
            .exists()
        )
    if query.clv_min is not None:
        conditions.append(c.clv_365 >= query.clv_min)
    if query.clv_max is not None:
        conditions.append(c.clv_365 <= query.clv_max)
    if query.last_purchase_from is not None:
        conditions.append(c.last_purchase_at >= query.last_purchase_from)
    if query.last_purchase_to is not None:
        conditions.append(c.last_purchase_at <= query.last_purchase_to)
    where = and_(true(), *conditions)
    total = await session.scalar(select(func.count()).select_from(customer_files).where(where))
    column = SORTABLE[query.sort]
    ordering = [column.desc().nulls_last() if query.descending else column.asc().nulls_last()]
    if query.sort != "customer_id":
        ordering.append(c.customer_id.asc())  # a stable order, so pages neither repeat nor skip
    rows = await session.execute(
        select(customer_files).where(where).order_by(*ordering).limit(query.limit).offset(query.offset)
    )
    return int(total or 0), [file_from_row(row) for row in rows.mappings().all()]


async def distribution(session: AsyncSession, column_name: str) -> list[tuple[str | None, int, Decimal, Decimal]]:
    """Customers, revenue and predicted CLV per value of one score column."""
    column = customer_files.c[column_name]
    c = customer_files.c
    rows = await session.execute(
        select(
            column,
            func.count(),
            type_coerce(func.coalesce(func.sum(c.revenue - c.refunded), 0), Money()),
            type_coerce(func.coalesce(func.sum(c.clv_365), 0), Money()),
        ).group_by(column)
    )
    return [(value, int(count), net, clv) for value, count, net, clv in rows]
