"""Outreach's database adapter: customer state, consents, touches, suppressions, operator tasks,
care plans and templates. Every function runs inside the caller's transaction."""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any
from uuid import NAMESPACE_URL, uuid5

from sqlalchemy import ColumnElement, and_, bindparam, delete, func, insert, or_, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncSession

from services.outreach.care import PlannedTouch
from services.outreach.tables import (
    care_plan_versions,
    care_plans,
    consents,
    customers,
    erasures,
    operator_tasks,
    suppressions,
    templates,
    touch_attempts,
    touches,
)
from shared.contracts import (
    Channel,
    CustomerSnapshot,
    Purpose,
    TouchEvent,
    TouchPayload,
    TouchStatus,
    to_wire,
)
from shared.db import row_dicts
from shared.kafka import Outgoing
from shared.topics import TOUCHES
from shared.tracing import kafka_headers

PENDING_APPROVAL = "pending_approval"
SENDING = "sending"
OPEN_STATUSES = (PENDING_APPROVAL, TouchStatus.SCHEDULED.value, SENDING)
ALL_STATUSES = (PENDING_APPROVAL, SENDING, *(s.value for s in TouchStatus))
# Touches whose offer does not count against its plan's budget.
NOT_SPENT = (TouchStatus.CANCELLED.value, TouchStatus.SUPPRESSED.value, TouchStatus.FAILED.value)


# --- customers --------------------------------------------------------------------------------


async def erased_version(session: AsyncSession, customer_id: str) -> int | None:
    return await session.scalar(select(erasures.c.version).where(erasures.c.customer_id == customer_id))


async def remember_customer(
    session: AsyncSession, customer_id: str, version: int, snapshot: CustomerSnapshot, now: datetime
) -> bool:
    """Keep the newest snapshot; an older version arriving late does not overwrite a newer one.
    Returns False when the update is older than what we hold (or than an erasure)."""
    # One statement, as every customer.updated pays for it: insert the snapshot unless a tombstone
    # covers this version, or overwrite the stored one only if it is older; nothing written ⇔ False.
    connection = await session.connection()
    dialect = connection.dialect.name
    if dialect not in ("postgresql", "sqlite"):  # pragma: no cover - only SQLite and PostgreSQL are supported
        return await _remember_customer_in_steps(session, customer_id, version, snapshot, now)
    values = {"customer": customer_id, "version": version, "snapshot": snapshot.model_dump(mode="json"), "now": now}
    statement = _REMEMBER_PG if dialect == "postgresql" else _REMEMBER_SQLITE
    result = await connection.execute(statement, values)
    return bool(getattr(result, "rowcount", 0))


def _remember_statement(insert_for: Any) -> Any:
    newest = select(
        bindparam("customer", type_=customers.c.customer_id.type),
        bindparam("version", type_=customers.c.version.type),
        bindparam("snapshot", type_=customers.c.snapshot.type),
        bindparam("now", type_=customers.c.updated_at.type),
    ).where(
        ~select(erasures.c.customer_id)
        .where(erasures.c.customer_id == bindparam("customer"), erasures.c.version >= bindparam("version"))
        .exists()
    )
    statement = insert_for(customers).from_select(["customer_id", "version", "snapshot", "updated_at"], newest)
    return statement.on_conflict_do_update(
        index_elements=[customers.c.customer_id],
        set_={
            "version": statement.excluded.version,
            "snapshot": statement.excluded.snapshot,
            "updated_at": statement.excluded.updated_at,
        },
        where=customers.c.version < statement.excluded.version,
    )


_REMEMBER_PG = _remember_statement(pg_insert)
_REMEMBER_SQLITE = _remember_statement(sqlite_insert)


async def _remember_customer_in_steps(
    session: AsyncSession, customer_id: str, version: int, snapshot: CustomerSnapshot, now: datetime
) -> bool:
    tombstone = await erased_version(session, customer_id)
    if tombstone is not None and version <= tombstone:
        return False
    data = snapshot.model_dump(mode="json")
    stored = await session.scalar(select(customers.c.version).where(customers.c.customer_id == customer_id))
    if stored is None:
        await session.execute(
            insert(customers).values(customer_id=customer_id, version=version, snapshot=data, updated_at=now)
        )
        return True
    if version > stored:
        await session.execute(
            update(customers)
            .where(customers.c.customer_id == customer_id)
            .values(version=version, snapshot=data, updated_at=now)
        )
        return True
    return False


async def load_snapshot(session: AsyncSession, customer_id: str, *, lock: bool = False) -> CustomerSnapshot | None:
    query = select(customers.c.snapshot).where(customers.c.customer_id == customer_id)
    if lock:
        # Serialises dispatchers on one customer (PostgreSQL), so caps hold across replicas.
        query = query.with_for_update()
    data = await session.scalar(query)
    return CustomerSnapshot.model_validate(data) if data is not None else None


async def customers_after(session: AsyncSession, after: str | None, limit: int) -> list[tuple[str, CustomerSnapshot]]:
    query = select(customers.c.customer_id, customers.c.snapshot).order_by(customers.c.customer_id).limit(limit)
    if after is not None:
        query = query.where(customers.c.customer_id > after)
    rows = (await session.execute(query)).all()
    return [(row.customer_id, CustomerSnapshot.model_validate(row.snapshot)) for row in rows]


async def erase_customer(session: AsyncSession, customer_id: str, now: datetime, version: int = 0) -> dict[str, int]:
    """Delete everything held about the customer; keep only a tombstone (id, when, version) so
    a late event cannot bring the data back.

    The customer's row is locked first (PostgreSQL): a consumer batch holding it (see
    ``stored_customers``) commits before this deletes anything, so what it wrote goes too."""
    stored = await session.scalar(
        select(customers.c.version).where(customers.c.customer_id == customer_id).with_for_update()
    )
    counts: dict[str, int] = {}
    touch_ids = select(touches.c.touch_id).where(touches.c.customer_id == customer_id)
    result = await session.execute(delete(touch_attempts).where(touch_attempts.c.touch_id.in_(touch_ids)))
    counts["attempts"] = _rowcount(result)
    for name, table in (
        ("touches", touches),
        ("consents", consents),
        ("suppressions", suppressions),
        ("operator_tasks", operator_tasks),
        ("customers", customers),
    ):
        result = await session.execute(delete(table).where(table.c.customer_id == customer_id))
        counts[name] = _rowcount(result)
    tombstone = max(version, stored or 0)
    existing = await erased_version(session, customer_id)
    if existing is None:
        await session.execute(insert(erasures).values(customer_id=customer_id, version=tombstone, erased_at=now))
    else:
        await session.execute(
            update(erasures)
            .where(erasures.c.customer_id == customer_id)
            .values(version=max(existing, tombstone), erased_at=now)
        )
    return counts


def _rowcount(result: Any) -> int:
    return int(getattr(result, "rowcount", 0) or 0)


# --- consents ---------------------------------------------------------------------------------


def consent_channels(channel: str) -> list[str]:
    """The channels a consent decision covers: "all" is every channel."""
    return [c.value for c in Channel] if channel == "all" else [channel]


def decision_stands(occurred_at: datetime, stored_at: datetime | None) -> bool:
    """A consent decision replaces the stored one unless that one happened later (event time)."""
    return stored_at is None or occurred_at >= stored_at


async def record_consent(
    session: AsyncSession,
    customer_id: str,
    channel: str,
    purpose: str,
    granted: bool,
    occurred_at: datetime,
    source: str,
    event_id: str | None,
) -> bool:
    """Keep the latest decision per (channel, purpose) by event time; "all" covers every channel.
    Returns True if anything changed."""
    changed = False
    for one in consent_channels(channel):
        key = and_(consents.c.customer_id == customer_id, consents.c.channel == one, consents.c.purpose == purpose)
        stored = (await session.execute(select(consents.c.occurred_at).where(key))).first()
        values = {"granted": granted, "occurred_at": occurred_at, "source": source, "event_id": event_id}
        if stored is None:
            await session.execute(
                insert(consents).values(customer_id=customer_id, channel=one, purpose=purpose, **values)
            )
            changed = True
        elif decision_stands(occurred_at, stored.occurred_at):
            await session.execute(update(consents).where(key).values(**values))
            changed = True
    return changed


async def explicit_consents(session: AsyncSession, customer_id: str) -> dict[tuple[str, str], bool]:
    rows = (
        await session.execute(
            select(consents.c.channel, consents.c.purpose, consents.c.granted).where(
                consents.c.customer_id == customer_id
            )
        )
    ).all()
    return {(row.channel, row.purpose): bool(row.granted) for row in rows}


async def customer_consents(session: AsyncSession, customer_id: str) -> list[dict[str, Any]]:
    rows = (await session.execute(select(consents).where(consents.c.customer_id == customer_id))).mappings().all()
    return [dict(row) for row in rows]


# --- touches ----------------------------------------------------------------------------------


def touch_id_for(idempotency_key: str) -> str:
    return str(uuid5(NAMESPACE_URL, f"huitou:touch/{idempotency_key}"))


async def existing_touch_keys(session: AsyncSession, idempotency_keys: Sequence[str]) -> set[str]:
    """Which of these keys already have a touch: one look-up for all the touches an event plans."""
    if not idempotency_keys:
        return set()
    found = await session.scalars(
        select(touches.c.idempotency_key).where(touches.c.idempotency_key.in_(set(idempotency_keys)))
    )
    return set(found)


async def get_touch(session: AsyncSession, touch_id: str, *, lock: bool = False) -> dict[str, Any] | None:
    query = select(touches).where(touches.c.touch_id == touch_id)
    if lock:
        query = query.with_for_update()
    row = (await session.execute(query)).mappings().first()
    return dict(row) if row else None


async def set_touch(session: AsyncSession, touch_id: str, now: datetime, **values: Any) -> None:
    await session.execute(update(touches).where(touches.c.touch_id == touch_id).values(updated_at=now, **values))


async def customer_touches(session: AsyncSession, customer_id: str) -> list[dict[str, Any]]:
    rows = (
        (await session.execute(select(touches).where(touches.c.customer_id == customer_id).order_by(touches.c.due_at)))
        .mappings()
        .all()
    )
    return [dict(row) for row in rows]


async def list_touches(
    session: AsyncSession,
    *,
    status: Sequence[str] = (),
    plan: Sequence[str] = (),
    customer_id: str | None = None,
    due_from: datetime | None = None,
    due_until: datetime | None = None,
    limit: int = 50,
    offset: int = 0,
) -> tuple[int, list[dict[str, Any]]]:
    conditions: list[ColumnElement[bool]] = []
    if status:
        conditions.append(touches.c.status.in_(list(status)))
    if plan:
        conditions.append(touches.c.plan.in_(list(plan)))
    if customer_id:
        conditions.append(touches.c.customer_id == customer_id)
    if due_from:
        conditions.append(touches.c.due_at >= due_from)
    if due_until:
        conditions.append(touches.c.due_at < due_until)
    total = await session.scalar(select(func.count()).select_from(touches).where(*conditions))
    rows = (
        (
            await session.execute(
                select(touches)
                .where(*conditions)
                .order_by(touches.c.due_at.desc(), touches.c.touch_id)
                .limit(limit)
                .offset(offset)
            )
        )
        .mappings()
        .all()
    )
    return int(total or 0), [dict(row) for row in rows]


async def touch_attempts_of(session: AsyncSession, touch_ids: Sequence[str]) -> list[dict[str, Any]]:
    if not touch_ids:
        return []
    rows = (
        (
            await session.execute(
                select(touch_attempts)
                .where(touch_attempts.c.touch_id.in_(list(touch_ids)))
                .order_by(touch_attempts.c.touch_id, touch_attempts.c.number)
            )
        )
        .mappings()
        .all()
    )
    return [dict(row) for row in rows]


def lifecycle_message(
    *,
    customer_id: str,
    touch_id: str,
    plan: str,
    status: TouchStatus,
    now: datetime,
    channel: str | None = None,
    due_at: datetime | None = None,
    reason: str | None = None,
    revenue: Decimal | None = None,
    event_suffix: str | None = None,
    trace_id: str | None = None,
) -> Outgoing:
    """The huitou.touches message for one lifecycle step. Its id is derived from the touch and the
    step, so a republished outbox row is recognised downstream; its ``traceparent`` header
    carries the trace of the event that planned the touch."""
    message = TouchEvent(
        event_id=f"{touch_id}:{event_suffix or status.value}",
        customer_id=customer_id,
        occurred_at=now,
        received_at=now,
        source="outreach",
        trace_id=trace_id,
        payload=TouchPayload(
            touch_id=touch_id,
            plan=plan,
            status=status,
            channel=Channel(channel) if channel else None,
            due_at=due_at,
            reason=reason[:500] if reason else None,
            revenue=revenue,
        ),
    )
    return Outgoing(TOUCHES, customer_id, to_wire(message), kafka_headers(trace_id))


def touch_lifecycle(
    touch: Mapping[str, Any],
    status: TouchStatus,
    now: datetime,
    *,
    reason: str | None = None,
    channel: str | None = None,
    revenue: Decimal | None = None,
) -> Outgoing:
    """``lifecycle_message`` for a stored touch row (its customer, plan, channel and due time)."""
    return lifecycle_message(
        customer_id=touch["customer_id"],
        touch_id=touch["touch_id"],
        plan=touch["plan"],
        status=status,
        now=now,
        channel=channel or touch["channel"],
        due_at=touch["due_at"],
        reason=reason,
        revenue=revenue,
        trace_id=touch.get("trace_id"),
    )


async def record_suppression(
    session: AsyncSession, *, touch_id: str | None, customer_id: str, plan: str, reason: str, now: datetime
) -> None:
    await session.execute(
        insert(suppressions).values(touch_id=touch_id, customer_id=customer_id, plan=plan, reason=reason[:500], at=now)
    )


async def list_suppressions(
    session: AsyncSession,
    *,
    customer_id: str | None,
    plan: str | None,
    reason: str | None,
    since: datetime | None,
    limit: int,
    offset: int,
) -> tuple[int, list[dict[str, Any]]]:
    conditions: list[ColumnElement[bool]] = []
    if customer_id:
        conditions.append(suppressions.c.customer_id == customer_id)
    if plan:
        conditions.append(suppressions.c.plan == plan)
    if reason:
        conditions.append(suppressions.c.reason.like(f"{reason}%"))
    if since:
        conditions.append(suppressions.c.at >= since)
    total = await session.scalar(select(func.count()).select_from(suppressions).where(*conditions))
    rows = (
        (
            await session.execute(
                select(suppressions)
                .where(*conditions)
                .order_by(suppressions.c.at.desc(), suppressions.c.id.desc())
                .limit(limit)
                .offset(offset)
            )
        )
        .mappings()
        .all()
    )
    return int(total or 0), [dict(row) for row in rows]


# --- conversion -------------------------------------------------------------------------------


def convertible() -> ColumnElement[bool]:
    """Touches a purchase can still convert: sent, or suppressed in the holdout (the would-have-been
    touches lift is measured against), and not converted yet."""
    return and_(
        touches.c.converted_at.is_(None),
        or_(
            touches.c.status == TouchStatus.SENT.value,
            and_(touches.c.status == TouchStatus.SUPPRESSED.value, touches.c.holdout.is_(True)),
        ),
    )


async def attribute_purchase(
    session: AsyncSession,
    customer_id: str,
    order_id: str | None,
    amount: Decimal | None,
    occurred_at: datetime,
    now: datetime,
) -> list[dict[str, Any]]:
    """Mark touches this purchase converts: sent touches whose attribution window (from the send)
    holds the purchase, and the holdout's would-have-been touches (window from their due time),
    so lift can be compared. Each touch converts once; the same order seen twice is a no-op.
    Returns the treated touches that turned converted (they are announced on huitou.touches)."""
    candidates = (
        (await session.execute(select(touches).where(touches.c.customer_id == customer_id, convertible())))
        .mappings()
        .all()
    )
    converted = []
    for row in candidates:
        start = row["sent_at"] if row["status"] == TouchStatus.SENT.value else row["due_at"]
        if start is None or not (start <= occurred_at <= start + timedelta(seconds=row["attribution_seconds"])):
            continue
        values: dict[str, Any] = {"converted_at": occurred_at, "converted_order_id": order_id, "revenue": amount}
        if row["status"] == TouchStatus.SENT.value:
            values["status"] = TouchStatus.CONVERTED.value
            converted.append({**dict(row), **values})
        await set_touch(session, row["touch_id"], now, **values)
    return converted


# --- operator tasks ---------------------------------------------------------------------------


async def list_tasks(
    session: AsyncSession, *, status: str | None, customer_id: str | None, limit: int, offset: int
) -> tuple[int, list[dict[str, Any]]]:
    conditions: list[ColumnElement[bool]] = []
    if status:
        conditions.append(operator_tasks.c.status == status)
    if customer_id:
        conditions.append(operator_tasks.c.customer_id == customer_id)
    total = await session.scalar(select(func.count()).select_from(operator_tasks).where(*conditions))
    rows = (
        (
            await session.execute(
                select(operator_tasks)
                .where(*conditions)
                .order_by(operator_tasks.c.resolve_by, operator_tasks.c.task_id)
                .limit(limit)
                .offset(offset)
            )
        )
        .mappings()
        .all()
    )
    return int(total or 0), [dict(row) for row in rows]


async def get_task(session: AsyncSession, task_id: str) -> dict[str, Any] | None:
    row = (await session.execute(select(operator_tasks).where(operator_tasks.c.task_id == task_id))).mappings().first()
    return dict(row) if row else None


async def resolve_task(session: AsyncSession, task_id: str, *, by: str, resolution: str, now: datetime) -> None:
    await session.execute(
        update(operator_tasks)
        .where(operator_tasks.c.task_id == task_id)
        .values(status="resolved", resolved_at=now, resolved_by=by, resolution=resolution)
    )


async def customer_tasks(session: AsyncSession, customer_id: str) -> list[dict[str, Any]]:
    rows = (
        (await session.execute(select(operator_tasks).where(operator_tasks.c.customer_id == customer_id)))
        .mappings()
        .all()
    )
    return [dict(row) for row in rows]


# --- care plans and templates -----------------------------------------------------------------


async def stored_plans(session: AsyncSession, *, include_deleted: bool = False) -> list[dict[str, Any]]:
    query = select(care_plans).order_by(care_plans.c.name)
    if not include_deleted:
        query = query.where(care_plans.c.deleted.is_(False))
    return [dict(row) for row in (await session.execute(query)).mappings().all()]


async def stored_plan(session: AsyncSession, name: str) -> dict[str, Any] | None:
    row = (await session.execute(select(care_plans).where(care_plans.c.name == name))).mappings().first()
    return dict(row) if row else None


async def save_plan(
    session: AsyncSession,
    name: str,
    definition: dict[str, Any],
    *,
    origin: str,
    action: str,
    by: str | None,
    now: datetime,
    deleted: bool = False,
) -> int:
    """Write a new version of a plan (and its history row); returns the version number."""
    current = await stored_plan(session, name)
    version = (current["version"] + 1) if current else 1
    values = {
        "version": version,
        "definition": definition,
        "origin": origin,
        "deleted": deleted,
        "updated_at": now,
        "updated_by": by,
    }
    if current is None:
        await session.execute(insert(care_plans).values(name=name, **values))
    else:
        await session.execute(update(care_plans).where(care_plans.c.name == name).values(**values))
    await session.execute(
        insert(care_plan_versions).values(
            name=name, version=version, definition=definition, action=action, created_at=now, created_by=by
        )
    )
    return version


async def plan_history(session: AsyncSession, name: str) -> list[dict[str, Any]]:
    rows = (
        (
            await session.execute(
                select(care_plan_versions)
                .where(care_plan_versions.c.name == name)
                .order_by(care_plan_versions.c.version.desc())
            )
        )
        .mappings()
        .all()
    )
    return [dict(row) for row in rows]


async def plans_stamp(session: AsyncSession) -> tuple[Any, ...]:
    """Cheap fingerprint of plans and templates: a replica reloads when it changes."""
    plans_row = (await session.execute(select(func.count(), func.max(care_plans.c.updated_at)))).one()
    templates_row = (await session.execute(select(func.count(), func.max(templates.c.updated_at)))).one()
    return (*plans_row, *templates_row)


async def stored_templates(session: AsyncSession) -> list[dict[str, Any]]:
    rows = (await session.execute(select(templates).order_by(templates.c.name))).mappings().all()
    return [dict(row) for row in rows]


async def stored_template(session: AsyncSession, name: str) -> dict[str, Any] | None:
    row = (await session.execute(select(templates).where(templates.c.name == name))).mappings().first()
    return dict(row) if row else None


async def save_template(
    session: AsyncSession, name: str, locales: dict[str, Any], *, origin: str, by: str | None, now: datetime
) -> int:
    current = await stored_template(session, name)
    version = (current["version"] + 1) if current else 1
    values = {"version": version, "locales": locales, "origin": origin, "updated_at": now, "updated_by": by}
    if current is None:
        await session.execute(insert(templates).values(name=name, **values))
    else:
        await session.execute(update(templates).where(templates.c.name == name).values(**values))
    return version


async def delete_template(session: AsyncSession, name: str) -> None:
    await session.execute(delete(templates).where(templates.c.name == name))


# --- reports ----------------------------------------------------------------------------------


async def touches_by_plan_and_status(
    session: AsyncSession, since: datetime | None, until: datetime | None
) -> list[dict[str, Any]]:
    conditions = _period(since, until)
    rows = (
        await session.execute(
            select(touches.c.plan, touches.c.status, func.count().label("n"))
            .where(*conditions)
            .group_by(touches.c.plan, touches.c.status)
            .order_by(touches.c.plan, touches.c.status)
        )
    ).all()
    return [{"plan": r.plan, "status": r.status, "count": int(r.n)} for r in rows]


async def lift_rows(session: AsyncSession, since: datetime | None, until: datetime | None) -> list[dict[str, Any]]:
    """Per plan: treated (sent, converted) and holdout touches, their conversions and revenue."""
    conditions = [
        *_period(since, until),
        touches.c.purpose == Purpose.MARKETING.value,
        or_(
            touches.c.status.in_([TouchStatus.SENT.value, TouchStatus.CONVERTED.value]),
            and_(touches.c.status == TouchStatus.SUPPRESSED.value, touches.c.holdout.is_(True)),
        ),
    ]
    rows = (
        await session.execute(
            select(
                touches.c.plan,
                touches.c.holdout,
                func.count().label("touches"),
                func.count(touches.c.converted_at).label("conversions"),
                func.sum(touches.c.revenue).label("revenue"),
            )
            .where(*conditions)
            .group_by(touches.c.plan, touches.c.holdout)
        )
    ).all()
    return [
        {
            "plan": r.plan,
            "holdout": bool(r.holdout),
            "touches": int(r.touches),
            "conversions": int(r.conversions),
            "revenue": Decimal(r.revenue or 0),
        }
        for r in rows
    ]


def _period(since: datetime | None, until: datetime | None) -> list[Any]:
    conditions: list[ColumnElement[bool]] = []
    if since is not None:
        conditions.append(touches.c.due_at >= since)
    if until is not None:
        conditions.append(touches.c.due_at < until)
    return conditions


# --- many customers at once: the consumer's batched transactions ------------------------------
# A batch transaction reads what its events need in one query per kind and writes at its end in
# one statement per table (see planning.PlanningState): per-event round trips dominated planning.

# What planning and conversion read of a touch; not its context or offer (large, never read back).
HELD_TOUCH_COLUMNS = (
    touches.c.touch_id,
    touches.c.customer_id,
    touches.c.plan,
    touches.c.channel,
    touches.c.status,
    touches.c.due_at,
    touches.c.idempotency_key,
    touches.c.holdout,
    touches.c.sent_at,
    touches.c.converted_at,
    touches.c.attribution_seconds,
    touches.c.offer_value,
    touches.c.created_at,
    touches.c.trace_id,
)


async def stored_customers(
    session: AsyncSession, customer_ids: Sequence[str], *, lock: bool = False
) -> dict[str, tuple[int, Any]]:
    """(version, snapshot as stored) per customer we hold.

    ``lock``: the rows are locked for the transaction (PostgreSQL; SQLite serialises writers), in
    customer-id order so two batches naming the same customers queue rather than deadlock. An
    operator's erasure (``erase_customer``) locks the row first, so it waits for the batch."""
    if not customer_ids:
        return {}
    query = (
        select(customers.c.customer_id, customers.c.version, customers.c.snapshot)
        .where(customers.c.customer_id.in_(set(customer_ids)))
        .order_by(customers.c.customer_id)
    )
    if lock:
        query = query.with_for_update()
    rows = await session.execute(query)
    return {customer_id: (version, snapshot) for customer_id, version, snapshot in rows.all()}


async def tombstones(session: AsyncSession, customer_ids: Sequence[str]) -> dict[str, int]:
    if not customer_ids:
        return {}
    rows = await session.execute(
        select(erasures.c.customer_id, erasures.c.version).where(erasures.c.customer_id.in_(set(customer_ids)))
    )
    return {customer_id: version for customer_id, version in rows.all()}


async def consents_of(session: AsyncSession, customer_ids: Sequence[str]) -> dict[str, dict[tuple[str, str], Any]]:
    """Explicit consent rows per customer, by (channel, purpose)."""
    held: dict[str, dict[tuple[str, str], Any]] = {}
    if not customer_ids:
        return held
    result = await session.execute(select(consents).where(consents.c.customer_id.in_(set(customer_ids))))
    for row in row_dicts(result):
        held.setdefault(row["customer_id"], {})[(row["channel"], row["purpose"])] = row
    return held


async def touches_of(
    session: AsyncSession,
    customer_ids: Sequence[str],
    *,
    since: datetime | None = None,
    windowed_plans: Collection[str] | None = None,
) -> dict[str, list[dict[str, Any]]]:
    """The touches of these customers (``HELD_TOUCH_COLUMNS``), per customer: every one, or with
    ``since`` only those due or sent since then (what a dedupe window or an attribution window
    reaching back no further than ``since`` can see).

    ``windowed_plans``: only the touches a planning rule can look at — those of these plans (the
    ones with a dedupe window, which compares any touch of its plan) and those a purchase can
    still convert (sent, or suppressed in the holdout, and not converted yet). The rest are
    only keys to planning (:func:`touch_keys_of`); in a soak they were most of the rows read,
    scheduled follow-ups of plans that dedupe by key alone."""
    held: dict[str, list[dict[str, Any]]] = {}
    if not customer_ids:
        return held
    query = select(*HELD_TOUCH_COLUMNS).where(touches.c.customer_id.in_(set(customer_ids)))
    if since is not None:
        query = query.where(or_(touches.c.due_at >= since, touches.c.sent_at >= since))
    if windowed_plans is not None:
        query = query.where(or_(touches.c.plan.in_(sorted(windowed_plans)), convertible()))
    for row in row_dicts(await session.execute(query)):
        held.setdefault(row["customer_id"], []).append(row)
    return held


async def touch_keys_of(
    session: AsyncSession, customer_ids: Sequence[str], *, before: datetime | None = None
) -> dict[str, list[str]]:
    """The idempotency keys of these customers' touches, per customer: one narrow column, for a
    key is taken forever, however old its touch. With ``before``, only those :func:`touches_of`
    with ``since=before`` (and every plan) leaves out — due and sent (if at all) before then: the
    newer touches' keys come with their rows, and reading them here too doubled the rows a
    planning batch read. Without, every key (the rows read were only some)."""
    held: dict[str, list[str]] = {}
    if not customer_ids:
        return held
    query = select(touches.c.customer_id, touches.c.idempotency_key).where(touches.c.customer_id.in_(set(customer_ids)))
    if before is not None:
        query = query.where(touches.c.due_at < before, or_(touches.c.sent_at.is_(None), touches.c.sent_at < before))
    rows = await session.execute(query)
    for customer_id, key in rows.all():  # as tuples: a Row's attribute access costs ~1.5 µs a name
        held.setdefault(customer_id, []).append(key)
    return held


async def offer_spent(session: AsyncSession, plan: str, since: datetime, excluding: Sequence[str] = ()) -> Decimal:
    """What the plan's offers committed since ``since``; not counting the touches of the customers
    ``excluding`` (erased earlier in the transaction, their rows not deleted yet)."""
    conditions: list[ColumnElement[bool]] = [
        touches.c.plan == plan,
        touches.c.created_at >= since,
        touches.c.offer_value.is_not(None),
        touches.c.status.not_in(NOT_SPENT),
    ]
    if excluding:
        conditions.append(touches.c.customer_id.not_in(list(excluding)))
    total = await session.scalar(select(func.sum(touches.c.offer_value)).where(*conditions))
    # sum() keeps the Money column type, so the result is already a Decimal.
    return Decimal(total or 0)


def _upsert_for(session: AsyncSession) -> Any:
    dialect = session.get_bind().dialect.name
    if dialect == "postgresql":
        return pg_insert
    if dialect == "sqlite":
        return sqlite_insert
    raise NotImplementedError(f"only SQLite and PostgreSQL are supported, not {dialect}")  # pragma: no cover


async def erase_many(session: AsyncSession, erased: Mapping[str, tuple[int, datetime]]) -> None:
    """``erase_customer`` for several customers: customer -> (tombstone version, erased at), the
    versions already worked out by the caller."""
    if not erased:
        return
    ids = list(erased)
    touch_ids = select(touches.c.touch_id).where(touches.c.customer_id.in_(ids))
    await session.execute(delete(touch_attempts).where(touch_attempts.c.touch_id.in_(touch_ids)))
    for table in (touches, consents, suppressions, operator_tasks, customers):
        await session.execute(delete(table).where(table.c.customer_id.in_(ids)))
    statement = _upsert_for(session)(erasures)
    statement = statement.on_conflict_do_update(
        index_elements=[erasures.c.customer_id],
        set_={"version": statement.excluded.version, "erased_at": statement.excluded.erased_at},
    )
    await session.execute(
        statement, [{"customer_id": c, "version": v, "erased_at": at} for c, (v, at) in erased.items()]
    )


async def remember_many(session: AsyncSession, rows: Sequence[Mapping[str, Any]]) -> None:
    """Write snapshots (``customer_id``, ``version``, ``snapshot``, ``updated_at``): the statement
    of ``remember_customer``, once per row in one executemany, so each is written only over an
    older stored version and never under a tombstone covering it (an erasure committed since the
    caller read)."""
    if not rows:
        return
    connection = await session.connection()
    statement = _REMEMBER_PG if connection.dialect.name == "postgresql" else _REMEMBER_SQLITE
    await connection.execute(
        statement,
        [
            {"customer": r["customer_id"], "version": r["version"], "snapshot": r["snapshot"], "now": r["updated_at"]}
            for r in rows
        ],
    )


async def save_consents(session: AsyncSession, rows: Sequence[Mapping[str, Any]]) -> None:
    """Write consent rows (the latest decision per customer, channel and purpose); a decision
    stored meanwhile (an unsubscribe link) is overwritten only by a later one, as in
    ``record_consent``."""
    if not rows:
        return
    statement = _upsert_for(session)(consents)
    statement = statement.on_conflict_do_update(
        index_elements=[consents.c.customer_id, consents.c.channel, consents.c.purpose],
        set_={name: statement.excluded[name] for name in ("granted", "occurred_at", "source", "event_id")},
        where=consents.c.occurred_at <= statement.excluded.occurred_at,
    )
    await session.execute(statement, list(rows))


def touch_row(
    planned: PlannedTouch,
    *,
    cause_event_id: str,
    status: str,
    reason: str | None,
    holdout: bool,
    now: datetime,
    trace_id: str | None = None,
) -> dict[str, Any]:
    """The ``touches`` row of a planned touch (what ``insert_touch`` writes)."""
    offer = planned.offer
    return {
        "touch_id": touch_id_for(planned.idempotency_key),
        "customer_id": planned.customer_id,
        "plan": planned.plan,
        "plan_version": planned.plan_version,
        "channel": planned.channel.value if planned.channel else None,
        "status": status,
        "due_at": planned.due_at,
        "expires_at": planned.expires_at,
        "idempotency_key": planned.idempotency_key,
        "cause_event_id": cause_event_id,
        "reason": reason,
        "purpose": planned.purpose.value,
        "priority": planned.priority,
        "holdout": holdout,
        "attribution_seconds": int(planned.attribution_window.total_seconds()),
        "context": planned.context,
        "offer": offer.model_dump(mode="json") if offer else None,
        "offer_value": offer.value if offer else None,
        "trace_id": trace_id,
        "created_at": now,
        "updated_at": now,
        # Unset on a new touch; present so conversion reads it as it reads a loaded one.
        "sent_at": None,
        "converted_at": None,
        "converted_order_id": None,
        "revenue": None,
    }


async def insert_touches(session: AsyncSession, rows: Sequence[Mapping[str, Any]]) -> None:
    if rows:
        await session.execute(insert(touches), [dict(row) for row in rows])


async def update_touches(session: AsyncSession, changes: Mapping[str, Mapping[str, Any]]) -> None:
    """Set columns of stored touches, by touch id: one executemany per set of columns changed."""
    by_columns: dict[tuple[str, ...], list[dict[str, Any]]] = {}
    for touch_id, values in changes.items():
        by_columns.setdefault(tuple(sorted(values)), []).append({"b_touch_id": touch_id, **values})
    for columns, rows in by_columns.items():
        statement = (
            update(touches)
            .where(touches.c.touch_id == bindparam("b_touch_id"))
            .values({name: bindparam(name) for name in columns})
        )
        await session.execute(statement, rows)


async def insert_suppressions(session: AsyncSession, rows: Sequence[Mapping[str, Any]]) -> None:
    if rows:
        await session.execute(insert(suppressions), [dict(row) for row in rows])


async def open_tasks(session: AsyncSession, rows: Sequence[Mapping[str, Any]]) -> None:
    """``open_task`` for several touches: a task already open for its touch is kept as it is."""
    if rows:
        statement = _upsert_for(session)(operator_tasks).on_conflict_do_nothing(
            index_elements=[operator_tasks.c.task_id]
        )
        await session.execute(statement, [dict(row) for row in rows])


def task_id_for(touch_id: str) -> str:
    return str(uuid5(NAMESPACE_URL, f"huitou:task/{touch_id}"))
