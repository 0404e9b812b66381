"""Outreach's process: the internal touch API and, in its lifespan, the care-plan consumer."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Depends, FastAPI
from pydantic import BaseModel

from services.outreach import repository
from services.outreach.settings import OutreachSettings
from services.outreach.tables import outbox
from services.outreach.worker import OutreachHandler
from shared.contracts import TouchStatus
from shared.observability import ServiceMetrics
from shared.runtime import Runtime, get_runtime, open_runtime, start_pipeline
from shared.service import install_common, require_internal_token
from shared.topics import CUSTOMERS

MIGRATIONS = Path(__file__).parent / "migrations"


class TouchView(BaseModel):
    """A care touch: one planned contact with one customer."""

    touch_id: str
    customer_id: str
    plan: str
    channel: str | None
    status: TouchStatus
    due_at: datetime
    reason: str | None
    created_at: datetime
    updated_at: datetime


RuntimeDep = Annotated[Runtime, Depends(get_runtime)]
router = APIRouter(prefix="/internal/v1", dependencies=[Depends(require_internal_token)], tags=["internal"])


@router.get("/customers/{customer_id}/touches", response_model=list[TouchView])
async def list_customer_touches(customer_id: str, runtime: RuntimeDep) -> list[TouchView]:
    async with runtime.sessions() as session:
        rows = await repository.customer_touches(session, customer_id)
    return [TouchView.model_validate(row, from_attributes=False) for row in rows]


def create_app(settings: OutreachSettings | None = None) -> FastAPI:
    settings = settings or OutreachSettings()
    metrics = ServiceMetrics()
    readiness: dict[str, Any] = {}

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        runtime = await open_runtime(settings, MIGRATIONS, metrics)
        consumer = start_pipeline(
            runtime,
            outbox=outbox,
            topics=[CUSTOMERS],
            group_id=settings.consumer_group,
            make_handler=lambda relay: OutreachHandler(
                runtime.sessions, relay, metrics, follow_up_delay=settings.follow_up_delay
            ),
        )
        readiness.update(runtime.readiness(), consumer=consumer.check)
        app.state.runtime = runtime
        try:
            yield
        finally:
            await runtime.close()

    app = FastAPI(title="Huitou outreach (internal)", version="1", lifespan=lifespan)
    app.state.settings = settings
    install_common(app, service="outreach", metrics=metrics, readiness=readiness)
    app.include_router(router)
    return app
