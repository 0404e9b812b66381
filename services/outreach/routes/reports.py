"""Suppressions and reports: touches by plan and status; conversion and lift per plan versus the
holdout."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal

from fastapi import APIRouter, Depends
from pydantic import BaseModel, Field

from services.outreach import repository
from services.outreach.routes.deps import PageDep, RuntimeDep, period
from shared.service import require_internal_token


class SuppressionView(BaseModel):
    id: int
    touch_id: str | None
    customer_id: str
    plan: str
    reason: str
    at: datetime


class SuppressionPage(BaseModel):
    total: int
    limit: int
    offset: int
    items: list[SuppressionView]


class PlanStatusCount(BaseModel):
    plan: str
    status: str
    count: int


class GroupResult(BaseModel):
    touches: int
    conversions: int
    conversion_rate: float | None
    revenue: Decimal


class PlanLift(BaseModel):
    plan: str
    treated: GroupResult = Field(description="marketing touches sent (converted ones included)")
    holdout: GroupResult = Field(description="the holdout's would-have-been touches (suppressed, reason holdout)")
    lift: float | None = Field(description="treated minus holdout conversion rate, in percentage points / 100")
    relative_lift: float | None = Field(description="lift divided by the holdout's rate")


suppressions = APIRouter(
    prefix="/internal/v1/suppressions", dependencies=[Depends(require_internal_token)], tags=["suppressions"]
)
reports = APIRouter(prefix="/internal/v1/reports", dependencies=[Depends(require_internal_token)], tags=["reports"])


@suppressions.get("", response_model=SuppressionPage, summary="Every suppression with its reason, newest first")
async def list_suppressions(
    runtime: RuntimeDep,
    paging: PageDep,
    customer_id: str | None = None,
    plan: str | None = None,
    reason: str | None = None,
    since: datetime | None = None,
) -> SuppressionPage:
    period(since, None)
    async with runtime.sessions() as session:
        total, rows = await repository.list_suppressions(
            session,
            customer_id=customer_id,
            plan=plan,
            reason=reason,
            since=since,
            limit=paging.limit,
            offset=paging.offset,
        )
    return SuppressionPage(
        total=total, limit=paging.limit, offset=paging.offset, items=[SuppressionView.model_validate(r) for r in rows]
    )


@reports.get("/touches", response_model=list[PlanStatusCount], summary="Touches by plan and status (by due time)")
async def touches_report(
    runtime: RuntimeDep, since: datetime | None = None, until: datetime | None = None
) -> list[PlanStatusCount]:
    period(since, until)
    async with runtime.sessions() as session:
        rows = await repository.touches_by_plan_and_status(session, since, until)
    return [PlanStatusCount.model_validate(r) for r in rows]


@reports.get("/lift", response_model=list[PlanLift], summary="Conversion and lift per plan versus the holdout")
async def lift_report(
    runtime: RuntimeDep, since: datetime | None = None, until: datetime | None = None
) -> list[PlanLift]:
    period(since, until)
    async with runtime.sessions() as session:
        rows = await repository.lift_rows(session, since, until)
    by_plan: dict[str, dict[bool, GroupResult]] = {}
    for row in rows:
        rate = row["conversions"] / row["touches"] if row["touches"] else None
        by_plan.setdefault(row["plan"], {})[row["holdout"]] = GroupResult(
            touches=row["touches"], conversions=row["conversions"], conversion_rate=rate, revenue=row["revenue"]
        )
    empty = GroupResult(touches=0, conversions=0, conversion_rate=None, revenue=Decimal(0))
    result = []
    for plan in sorted(by_plan):
        treated = by_plan[plan].get(False, empty)
        holdout = by_plan[plan].get(True, empty)
        lift = relative = None
        if treated.conversion_rate is not None and holdout.conversion_rate is not None:
            lift = treated.conversion_rate - holdout.conversion_rate
            relative = lift / holdout.conversion_rate if holdout.conversion_rate else None
        result.append(PlanLift(plan=plan, treated=treated, holdout=holdout, lift=lift, relative_lift=relative))
    return result
