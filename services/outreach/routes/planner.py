"""Run the calendar planner now (it also runs on its own every HUITOU_OUTREACH_CALENDAR_SCAN_INTERVAL)."""

from __future__ import annotations

from fastapi import APIRouter, Depends
from pydantic import BaseModel

from services.outreach.routes.deps import OutreachDep
from shared.service import require_internal_token


class ScanResult(BaseModel):
    scheduled: int


router = APIRouter(prefix="/internal/v1/planner", dependencies=[Depends(require_internal_token)], tags=["planner"])


@router.post("/calendar-scan", response_model=ScanResult, summary="Scan every customer file for calendar moments now")
async def calendar_scan(outreach: OutreachDep) -> ScanResult:
    return ScanResult(scheduled=await outreach.calendar.scan_once())
