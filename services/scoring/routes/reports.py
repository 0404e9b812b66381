"""Dashboard reports for the gateway: distributions of the scores over all customer files."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

from fastapi import APIRouter, Depends

from services.scoring import repository
from services.scoring.deps import ContextDep
from services.scoring.views import BucketView, ReportView
from shared.contracts import ChurnBand, LifecycleStage, ValueTier
from shared.service import require_internal_token

router = APIRouter(prefix="/internal/v1/reports", dependencies=[Depends(require_internal_token)], tags=["reports"])

FUNNEL = [
    s.value
    for s in (
        LifecycleStage.PROSPECT,
        LifecycleStage.NEW,
        LifecycleStage.ACTIVE,
        LifecycleStage.WON_BACK,
        LifecycleStage.AT_RISK,
        LifecycleStage.LAPSED,
    )
]
ORDERS: dict[str, list[str]] = {
    "value_tier": [t.value for t in ValueTier],
    "stage": FUNNEL,
    "churn_band": [b.value for b in ChurnBand],
    "grade": ["vip", "gold", "silver", "regular"],
    "loyalty_quadrant": ["evangelist", "captive", "profit_seeker", "destroyer"],
    "relationship_type": ["partnership", "proactive", "accountable", "reactive", "basic"],
}


async def _report(context: ContextDep, name: str, column: str) -> ReportView:
    async with context.sessions() as session:
        rows = await repository.distribution(session, column)
    found = {value: (count, net, clv) for value, count, net, clv in rows}
    total = sum(count for count, _, _ in found.values())
    wanted: list[str | None] = [*ORDERS[column], *sorted(v for v in found if v is not None and v not in ORDERS[column])]
    wanted.append(None)  # files without this score yet (prospects, no model…)
    buckets = []
    for value in wanted:
        count, net, clv = found.get(value, (0, Decimal(0), Decimal(0)))
        if value is None and not count:
            continue
        buckets.append(
            BucketView(
                value=value,
                customers=count,
                share=round(count / total, 4) if total else 0.0,
                net_revenue=net,
                clv_365=clv,
            )
        )
    return ReportView(report=name, generated_at=datetime.now(UTC), total=total, buckets=buckets)


@router.get("/tiers", response_model=ReportView, summary="Customers, revenue and CLV per value tier")
async def tiers(context: ContextDep) -> ReportView:
    return await _report(context, "tiers", "value_tier")


@router.get("/grades", response_model=ReportView, summary="Customers per membership grade")
async def grades(context: ContextDep) -> ReportView:
    return await _report(context, "grades", "grade")


@router.get("/stages", response_model=ReportView, summary="The lifecycle funnel")
async def stages(context: ContextDep) -> ReportView:
    return await _report(context, "stages", "stage")


@router.get("/churn-bands", response_model=ReportView, summary="Customers and CLV at risk per churn band")
async def churn_bands(context: ContextDep) -> ReportView:
    return await _report(context, "churn-bands", "churn_band")


@router.get("/quadrants", response_model=ReportView, summary="The satisfaction × loyalty quadrant")
async def quadrants(context: ContextDep) -> ReportView:
    return await _report(context, "quadrants", "loyalty_quadrant")


@router.get("/relationships", response_model=ReportView, summary="Relationship types (Kotler)")
async def relationships(context: ContextDep) -> ReportView:
    return await _report(context, "relationships", "relationship_type")
