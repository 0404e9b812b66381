"""Scoring's database adapter: customer files, their orders, refunds, referrals, history, notes,
tags and contacts, model snapshots, the replay clock and task leases."""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, tzinfo
from decimal import Decimal
from enum import Enum
from typing import Any, Literal

import numpy as np
from sqlalchemy import (
    JSON,
    Float,
    String,
    Table,
    and_,
    bindparam,
    delete,
    func,
    insert,
    or_,
    select,
    true,
    type_coerce,
    update,
)
from sqlalchemy.dialects import sqlite
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.types import TypeDecorator

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
from shared.db import Money, UTCDateTime, json_text, json_value
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


def as_stored(file: CustomerFile) -> CustomerFile:
    """``file`` as reading it back after saving it gives it: money in the stored 1/10,000 units,
    times in UTC, JSON through its text. A file kept in memory from one event to the next must
    be the one the next event would have read, or announcements would depend on how events were
    batched (``49.80`` where a re-read file says ``49.8``, a shop's +08:00 where it says UTC)."""
    row = _file_columns(file)
    _read_back(row, _FILE_COLUMNS)
    return file_from_row({**row, "customer_id": file.customer_id, "referred_by": file.referred_by})


def _read_back(row: dict[str, Any], columns: _ColumnKinds) -> None:
    """Turn ``row``'s values into what reading them from ``columns`` gives."""
    for name, settle in columns.custom.items():  # Money, UTCDateTime
        value = row.get(name)
        if value is not None:
            row[name] = settle(value)
    documents = {name: row[name] for name in columns.json if name in row}
    if documents:
        row.update(json_value(json_text(documents)))  # one round trip for all of them, as stored
    for name in columns.floats:
        if row.get(name) is not None:
            row[name] = float(row[name])
    for name in columns.texts:
        if isinstance(value := row.get(name), Enum):
            row[name] = value.value


@dataclass(frozen=True)
class _ColumnKinds:
    """A table's columns by what storing and reading a value back does to it."""

    custom: dict[str, Callable[[Any], Any]]
    """Our own column types, each with what storing and reading a value back gives."""
    json: tuple[str, ...]
    floats: tuple[str, ...]
    texts: tuple[str, ...]

    @classmethod
    def of(cls, table: Table) -> _ColumnKinds:
        columns = list(table.columns)
        return cls(
            custom={c.name: _settle(c.type) for c in columns if isinstance(c.type, TypeDecorator)},
            json=tuple(c.name for c in columns if isinstance(c.type, JSON)),
            floats=tuple(c.name for c in columns if isinstance(c.type, Float)),
            texts=tuple(c.name for c in columns if isinstance(c.type, String)),
        )


def _settle(kind: TypeDecorator[Any]) -> Callable[[Any], Any]:
    def settle(value: Any) -> Any:
        return kind.process_result_value(kind.process_bind_param(value, _SQLITE), _SQLITE)

    if not isinstance(kind, UTCDateTime):
        return settle

    def settle_time(value: datetime) -> datetime:
        # An aware time comes back as the same instant in UTC: most are in UTC already (a file
        # settles ~10 of them per event), and converting only the others is what the round trip does.
        return value if value.tzinfo is UTC else settle(value)

    return settle_time


_SQLITE = sqlite.dialect()
"""For our own column types' conversions, which give the same values back on every backend."""
_FILE_COLUMNS = _ColumnKinds.of(customer_files)
_ORDER_COLUMNS = _ColumnKinds.of(orders)


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


@dataclass(frozen=True)
class FileWrite:
    """One file to store: its new state, whether it is new, and when it changed."""

    file: CustomerFile
    is_new: bool
    at: datetime
    engagement_only: bool = False
    """Only the engagement changed (care received): no other column is written."""


async def save_files(session: AsyncSession, writes: Sequence[FileWrite]) -> None:
    """Store files: new ones in one INSERT, known ones in one UPDATE (each run as executemany);
    a file whose engagement alone changed has only that column (and updated_at) written."""
    inserts: dict[tuple[str, ...], list[dict[str, Any]]] = {}
    updates: dict[tuple[str, ...], list[dict[str, Any]]] = {}
    for write in writes:
        if write.engagement_only and not write.is_new:
            # Not the whole row: a touch would otherwise rewrite every large JSON column.
            row = {"file_id": write.file.customer_id, "engagement": write.file.engagement, "updated_at": write.at}
            updates.setdefault(tuple(row), []).append(row)
            continue
        values = {**_file_columns(write.file), "updated_at": write.at}
        if write.is_new:
            row = {"customer_id": write.file.customer_id, "created_at": write.at, **values}
            inserts.setdefault(tuple(row), []).append(row)
        else:
            row = {"file_id": write.file.customer_id, **values}
            updates.setdefault(tuple(row), []).append(row)
    # Grouped by the columns given: an unscored file sets fewer score columns, and executemany
    # compiles one statement for the keys of its first row.
    connection = await session.connection()
    for rows in inserts.values():
        await connection.execute(_INSERT_FILE, rows)
    for rows in updates.values():
        await connection.execute(_UPDATE_FILE, rows)


async def claim(session: AsyncSession, event_id: str) -> bool:
    """Record that ``event_id`` is being applied; False if it was applied before (rolls back with
    the caller's transaction)."""
    return await claim_event(session, processed_events, event_id)


# --- orders, refunds, referrals -----------------------------------------------------------------


def order_row(
    customer_id: str, event_id: str, order: PurchasePayload, at: datetime, refunded: Decimal = ZERO
) -> dict[str, Any]:
    """A new order as stored; ``refunded`` carries refunds that arrived before it."""
    return {
        "customer_id": customer_id,
        "order_id": order.order_id,
        "event_id": event_id,
        "amount": order.amount,
        "refunded": refunded,
        "currency": order.currency,
        "margin": order.margin,
        "items": [item.model_dump(mode="json", exclude_none=True) for item in order.items],
        "occurred_at": at,
    }


def order_line(row: dict[str, Any]) -> OrderLine:
    """An order row (:func:`order_row`) as :func:`order_lines` reads it back."""
    line = {name: row[name] for name in _ORDER_LINE}
    _read_back(line, _ORDER_COLUMNS)
    return OrderLine(**line)


_ORDER_LINE = ("order_id", "occurred_at", "amount", "refunded", "margin", "event_id")


async def insert_orders(session: AsyncSession, rows: Sequence[dict[str, Any]]) -> None:
    """Store new orders (the caller has checked their ids against the customers' orders)."""
    if rows:
        connection = await session.connection()
        await connection.execute(_INSERT_ORDER, list(rows))


_INSERT_ORDER = insert(orders)


async def add_refunded(session: AsyncSession, amounts: dict[tuple[str, str], Decimal]) -> None:
    """Book refunds on stored orders: ``amounts`` by (customer id, order id)."""
    if amounts:
        connection = await session.connection()
        await connection.execute(
            _ADD_REFUNDED,
            [{"owner": owner, "order": order, "booked": amount} for (owner, order), amount in amounts.items()],
        )


_ADD_REFUNDED = (
    update(orders)
    .where(orders.c.customer_id == bindparam("owner"), orders.c.order_id == bindparam("order"))
    .values(refunded=orders.c.refunded + bindparam("booked", type_=Money()))
)


async def keep_first_event_ids(session: AsyncSession, first: dict[tuple[str, str], str]) -> None:
    """A resent order keeps the lowest of its event ids, so its provenance does not depend on
    arrival; ``first`` by (customer id, order id)."""
    if first:
        connection = await session.connection()
        await connection.execute(
            _KEEP_FIRST_EVENT_ID,
            [{"owner": owner, "order": order, "first": event_id} for (owner, order), event_id in first.items()],
        )


_KEEP_FIRST_EVENT_ID = (
    update(orders)
    .where(
        orders.c.customer_id == bindparam("owner"),
        orders.c.order_id == bindparam("order"),
        orders.c.event_id > bindparam("first"),
    )
    .values(event_id=bindparam("first"))
)


RefundBooking = Literal["booked", "unmatched", "duplicate"]
"""``unmatched``: the order is not known (yet), the refund is kept aside until it arrives.
``duplicate``: a refund with the same ``refund_id`` was booked before (resent under a new event
id), nothing is recorded."""

RefundKey = tuple[str, str, str]
"""(customer id, order id, the shop's refund id): a refund is counted once however often it is resent."""


async def refund_keys(session: AsyncSession, customer_ids: Collection[str]) -> set[RefundKey]:
    """The shop refund ids already booked for these customers."""
    if not customer_ids:
        return set()
    rows = await session.execute(
        select(refunds.c.customer_id, refunds.c.order_id, refunds.c.refund_id).where(
            refunds.c.customer_id.in_(list(customer_ids)), refunds.c.refund_id.is_not(None)
        )
    )
    return {(customer_id, order_id, refund_id) for customer_id, order_id, refund_id in rows.all()}


def refund_row(customer_id: str, event_id: str, refund: RefundPayload, at: datetime) -> dict[str, Any]:
    return {
        "customer_id": customer_id,
        "event_id": event_id,
        "order_id": refund.order_id,
        "refund_id": refund.refund_id,
        "amount": refund.amount,
        "reason": refund.reason,
        "occurred_at": at,
    }


async def insert_refunds(session: AsyncSession, rows: Sequence[dict[str, Any]]) -> None:
    """Keep refunds as records of their own (booking them on their orders is :func:`add_refunded`)."""
    if rows:
        await session.execute(insert(refunds), list(rows))


_ORDER_LINES = select(
    orders.c.order_id, orders.c.occurred_at, orders.c.amount, orders.c.refunded, orders.c.margin, orders.c.event_id
).where(orders.c.customer_id == bindparam("owner"))


async def order_lines(session: AsyncSession, customer_id: str) -> list[OrderLine]:
    connection = await session.connection()
    rows = await connection.execute(_ORDER_LINES, {"owner": customer_id})
    return [OrderLine(*values) for values in rows.all()]


async def order_lines_for(session: AsyncSession, customer_ids: Collection[str]) -> dict[str, list[OrderLine]]:
    """The stored orders of several customers in one query (every given id gets a list)."""
    found: dict[str, list[OrderLine]] = {cid: [] for cid in customer_ids}
    if not found:
        return found
    connection = await session.connection()
    rows = await connection.execute(_ORDER_LINES_FOR, {"owners": list(found)})
    # Unpacked as tuples: a Row's attribute access costs ~1.5 µs a name, and a batch reads
    # every order of its customers.
    for customer_id, order_id, occurred_at, amount, refunded, margin, event_id in rows.all():
        found[customer_id].append(OrderLine(order_id, occurred_at, amount, refunded, margin, event_id))
    return found


_ORDER_LINES_FOR = select(
    orders.c.customer_id,
    orders.c.order_id,
    orders.c.occurred_at,
    orders.c.amount,
    orders.c.refunded,
    orders.c.margin,
    orders.c.event_id,
).where(orders.c.customer_id.in_(bindparam("owners", expanding=True)))


Referral = tuple[str, str, datetime]
"""(referrer id, referred customer id, when the referral first happened)."""


async def referrals_among(
    session: AsyncSession, referrers: Collection[str], referred: Collection[str]
) -> list[Referral]:
    """Every referral made by one of ``referrers`` or naming one of ``referred``."""
    if not referrers and not referred:
        return []
    connection = await session.connection()
    rows = await connection.execute(_REFERRALS_AMONG, {"referrers": list(referrers), "referred": list(referred)})
    return [(row.referrer_id, row.referred_customer_id, row.occurred_at) for row in rows]


_REFERRALS_AMONG = select(referrals.c.referrer_id, referrals.c.referred_customer_id, referrals.c.occurred_at).where(
    or_(
        referrals.c.referrer_id.in_(bindparam("referrers", expanding=True)),
        referrals.c.referred_customer_id.in_(bindparam("referred", expanding=True)),
    )
)


async def save_referrals(session: AsyncSession, new: Sequence[Referral], earlier: Sequence[Referral]) -> None:
    """Store ``new`` referrals and move known ones to an ``earlier`` time (the earliest time wins)."""
    connection = await session.connection()
    if new:
        await connection.execute(
            _INSERT_REFERRAL, [{"referrer_id": r, "referred_customer_id": d, "occurred_at": at} for r, d, at in new]
        )
    if earlier:
        await connection.execute(_MOVE_REFERRAL, [{"referrer": r, "referred": d, "at": at} for r, d, at in earlier])


_INSERT_REFERRAL = insert(referrals)
_MOVE_REFERRAL = (
    update(referrals)
    .where(
        referrals.c.referrer_id == bindparam("referrer"),
        referrals.c.referred_customer_id == bindparam("referred"),
        referrals.c.occurred_at > bindparam("at", type_=UTCDateTime()),
    )
    .values(occurred_at=bindparam("at", type_=UTCDateTime()))
)


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
    await insert_history(session, history_rows(customer_id, changes, cause, as_of, now))


def history_rows(
    customer_id: str, changes: Sequence[FieldChange], cause: CustomerCause, as_of: datetime, now: datetime
) -> list[dict[str, Any]]:
    return [
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
    ]


async def insert_history(session: AsyncSession, rows: Sequence[dict[str, Any]]) -> None:
    if rows:
        connection = await session.connection()
        await connection.execute(_INSERT_HISTORY, list(rows))


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
