"""/api/v1/reports/touches-per-day: composed by the gateway from outreach's touches report, one
call per day, so the dashboard can draw touches over time in the operator's own time zone."""

from __future__ import annotations

import asyncio
from datetime import date, datetime, time, timedelta
from typing import Annotated
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from fastapi import APIRouter, HTTPException, Query
from pydantic import BaseModel, Field

from services.gateway.auth import Viewer
from services.gateway.context import Gateway, GatewayDep
from services.gateway.routing import API_PREFIX, error_responses

router = APIRouter(prefix=f"{API_PREFIX}/reports", tags=["reports"], responses=error_responses())
TOUCHES_REPORT = "/internal/v1/reports/touches"


class DayOfTouches(BaseModel):
    day: date
    total: int = Field(description="touches due that day")
    by_status: dict[str, int]


@router.get(
    "/touches-per-day",
    summary="Touches per day (by due time), by status",
    description="Requires the **viewer** role (or higher).",
    response_model=list[DayOfTouches],
    openapi_extra={"x-required-role": "viewer"},
)
async def touches_per_day(
    _caller: Viewer,
    gateway: GatewayDep,
    days: Annotated[int, Query(ge=1, le=92, description="how many days, ending with `until`")] = 14,
    until: Annotated[date | None, Query(description="the last day (default: today)")] = None,
    timezone: Annotated[str, Query(max_length=64, description="IANA zone the days are counted in")] = "UTC",
) -> list[DayOfTouches]:
    try:
        zone = ZoneInfo(timezone)
    except (ZoneInfoNotFoundError, ValueError):
        raise HTTPException(
            422,
            {
                "error": "invalid request",
                "problems": [f"timezone: unknown zone {timezone!r}; use an IANA name such as Asia/Shanghai"],
            },
        ) from None
    last = until or datetime.now(zone).date()
    wanted = [last - timedelta(days=n) for n in reversed(range(days))]
    return list(await asyncio.gather(*(_one_day(gateway, day, zone) for day in wanted)))


async def _one_day(gateway: Gateway, day: date, zone: ZoneInfo) -> DayOfTouches:
    start = datetime.combine(day, time(), zone)
    end = datetime.combine(day + timedelta(days=1), time(), zone)
    rows = await gateway.downstream.get(
        "outreach", TOUCHES_REPORT, {"since": start.isoformat(), "until": end.isoformat()}
    )
    by_status: dict[str, int] = {}
    for row in rows:
        by_status[row["status"]] = by_status.get(row["status"], 0) + int(row["count"])
    return DayOfTouches(day=day, total=sum(by_status.values()), by_status=by_status)
