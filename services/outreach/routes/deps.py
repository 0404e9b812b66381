"""What routes share: the runtime, outreach's own long-lived parts, paging and error helpers."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any, NoReturn

from fastapi import Depends, HTTPException, Query, Request
from pydantic import BaseModel, Field

from services.outreach.calendar_planner import CalendarPlanner
from services.outreach.channels import ChannelAdapter
from services.outreach.dispatcher import Dispatcher
from services.outreach.planning import PlanCatalog
from services.outreach.settings import OutreachSettings
from shared.contracts import Channel
from shared.runtime import Runtime, get_runtime


@dataclass
class Outreach:
    """Outreach's parts built in the lifespan (app.state.outreach)."""

    settings: OutreachSettings
    catalog: PlanCatalog
    adapters: dict[Channel, ChannelAdapter]
    dispatcher: Dispatcher
    calendar: CalendarPlanner


def get_outreach(request: Request) -> Outreach:
    outreach: Outreach = request.app.state.outreach
    return outreach


RuntimeDep = Annotated[Runtime, Depends(get_runtime)]
OutreachDep = Annotated[Outreach, Depends(get_outreach)]


class Page(BaseModel):
    limit: int = Field(50, ge=1, le=500)
    offset: int = Field(0, ge=0)


def page(limit: int = Query(50, ge=1, le=500), offset: int = Query(0, ge=0)) -> Page:
    return Page(limit=limit, offset=offset)


PageDep = Annotated[Page, Depends(page)]


class Actor(BaseModel):
    """Who asks: the gateway passes the operator's key name."""

    by: str = Field("operator", min_length=1, max_length=200, description="operator (API key name) acting")


def not_found(what: str) -> NoReturn:
    raise HTTPException(404, {"error": f"{what} not found"})


def conflict(message: str, **extra: Any) -> NoReturn:
    raise HTTPException(409, {"error": message, **extra})


def unprocessable(message: str, problems: list[str]) -> NoReturn:
    raise HTTPException(422, {"error": message, "problems": problems})


def period(since: datetime | None, until: datetime | None) -> None:
    for name, value in (("since", since), ("until", until)):
        if value is not None and value.tzinfo is None:
            unprocessable("invalid period", [f"{name}: give a time zone, e.g. 2026-11-01T00:00:00Z"])
    if since is not None and until is not None and since >= until:
        unprocessable("invalid period", ["since must be before until"])
