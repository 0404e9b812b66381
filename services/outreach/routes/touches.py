"""Touches: list and filter, one touch with its attempts, approve and cancel."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from fastapi import APIRouter, Depends, Query
from pydantic import BaseModel, Field

from services.outreach import repository
from services.outreach.routes.deps import (
    Actor,
    OutreachDep,
    PageDep,
    RuntimeDep,
    conflict,
    not_found,
    period,
    unprocessable,
)
from services.outreach.tables import outbox
from shared.contracts import TouchStatus
from shared.db import transaction
from shared.ledger import enqueue
from shared.service import require_internal_token

STATUS_HELP = "pending_approval, scheduled, sending, sent, suppressed, failed, cancelled, converted"


class TouchView(BaseModel):
    """A care touch: one planned contact with one customer."""

    touch_id: str
    customer_id: str
    plan: str
    plan_version: int | None = None
    channel: str | None
    status: str = Field(description=STATUS_HELP)
    due_at: datetime
    reason: str | None
    purpose: str = "marketing"
    priority: int = 50
    holdout: bool = False
    expires_at: datetime | None = None
    attempts: int = 0
    locale: str | None = None
    offer: dict[str, Any] | None = None
    message_id: str | None = None
    sent_at: datetime | None = None
    converted_at: datetime | None = None
    converted_order_id: str | None = None
    revenue: Decimal | None = None
    approved_by: str | None = None
    created_at: datetime
    updated_at: datetime


class AttemptView(BaseModel):
    attempt_id: str
    number: int
    channel: str
    state: str = Field(description="preparing, sending, sent, failed, abandoned, unknown")
    started_at: datetime
    finished_at: datetime | None
    detail: str | None


class TouchDetail(TouchView):
    context: dict[str, Any] | None = None
    attempt_log: list[AttemptView] = Field(default_factory=list)


class TouchPage(BaseModel):
    total: int
    limit: int
    offset: int
    items: list[TouchView]


class CancelRequest(Actor):
    reason: str = Field("cancelled by an operator", min_length=1, max_length=400)


def touch_view(row: dict[str, Any]) -> TouchView:
    return TouchView.model_validate(row)


router = APIRouter(prefix="/internal/v1/touches", dependencies=[Depends(require_internal_token)], tags=["touches"])


@router.get("", response_model=TouchPage, summary="Touches, filtered and paginated (newest due first)")
async def list_touches(
    runtime: RuntimeDep,
    paging: PageDep,
    status: list[str] = Query(default_factory=list, description=STATUS_HELP),
    plan: list[str] = Query(default_factory=list),
    customer_id: str | None = None,
    due_from: datetime | None = Query(None, description="inclusive, with a time zone"),
    due_until: datetime | None = Query(None, description="exclusive, with a time zone"),
) -> TouchPage:
    unknown = [s for s in status if s not in repository.ALL_STATUSES]
    if unknown:
        unprocessable("invalid filter", [f"status: {s!r} is not one of {STATUS_HELP}" for s in unknown])
    period(due_from, due_until)
    async with runtime.sessions() as session:
        total, rows = await repository.list_touches(
            session,
            status=status,
            plan=plan,
            customer_id=customer_id,
            due_from=due_from,
            due_until=due_until,
            limit=paging.limit,
            offset=paging.offset,
        )
    return TouchPage(total=total, limit=paging.limit, offset=paging.offset, items=[touch_view(r) for r in rows])


@router.get("/{touch_id}", response_model=TouchDetail, summary="One touch with its send attempts")
async def get_touch(touch_id: str, runtime: RuntimeDep) -> TouchDetail:
    async with runtime.sessions() as session:
        row = await repository.get_touch(session, touch_id)
        if row is None:
            not_found(f"touch {touch_id}")
        attempts = await repository.touch_attempts_of(session, [touch_id])
    return TouchDetail.model_validate({**row, "attempt_log": attempts})


@router.post("/{touch_id}/approve", response_model=TouchView, summary="Approve a touch whose offer needs approval")
async def approve_touch(touch_id: str, body: Actor, runtime: RuntimeDep, outreach: OutreachDep) -> TouchView:
    now = datetime.now(UTC)
    async with transaction(runtime.sessions) as session:
        row = await repository.get_touch(session, touch_id, lock=True)
        if row is None:
            not_found(f"touch {touch_id}")
        if row["status"] != repository.PENDING_APPROVAL:
            conflict(f"touch {touch_id} is {row['status']}; only pending_approval touches can be approved")
        await repository.set_touch(
            session,
            touch_id,
            now,
            status=TouchStatus.SCHEDULED.value,
            approved_by=body.by,
            reason=f"offer approved by {body.by}",
        )
        await enqueue(
            session,
            outbox,
            repository.touch_lifecycle(row, TouchStatus.SCHEDULED, now, reason=f"offer approved by {body.by}"),
        )
        updated = await repository.get_touch(session, touch_id)
    outreach.dispatcher.notify()
    assert updated is not None
    return touch_view(updated)


@router.post("/{touch_id}/cancel", response_model=TouchView, summary="Cancel a touch that has not been sent")
async def cancel_touch(touch_id: str, body: CancelRequest, runtime: RuntimeDep) -> TouchView:
    now = datetime.now(UTC)
    async with transaction(runtime.sessions) as session:
        row = await repository.get_touch(session, touch_id, lock=True)
        if row is None:
            not_found(f"touch {touch_id}")
        if row["status"] not in (repository.PENDING_APPROVAL, TouchStatus.SCHEDULED.value):
            conflict(
                f"touch {touch_id} is {row['status']}; only pending_approval or scheduled touches can be cancelled"
            )
        reason = f"{body.reason} ({body.by})"
        await repository.set_touch(
            session,
            touch_id,
            now,
            status=TouchStatus.CANCELLED.value,
            reason=reason,
            lease_until=None,
            lease_owner=None,
        )
        await enqueue(
            session,
            outbox,
            repository.touch_lifecycle(row, TouchStatus.CANCELLED, now, reason=reason),
        )
        updated = await repository.get_touch(session, touch_id)
    assert updated is not None
    return touch_view(updated)
