"""Scoring's process: the internal customer-file API and, in its lifespan, the event consumer."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Depends, FastAPI, HTTPException
from pydantic import BaseModel

from services.scoring import repository
from services.scoring.customer_file import display_name
from services.scoring.settings import ScoringSettings
from services.scoring.tables import outbox
from services.scoring.worker import ScoringHandler
from shared.observability import ServiceMetrics
from shared.runtime import Runtime, get_runtime, open_runtime, start_pipeline
from shared.service import install_common, require_internal_token
from shared.topics import EVENTS

MIGRATIONS = Path(__file__).parent / "migrations"


class OrderView(BaseModel):
    order_id: str
    amount: Decimal
    refunded: Decimal
    currency: str
    margin: Decimal | None
    items: list[dict[str, Any]]
    occurred_at: datetime


class PurchaseBehaviour(BaseModel):
    order_count: int
    revenue: Decimal
    refunded: Decimal
    net_revenue: Decimal
    average_order_value: Decimal | None
    first_purchase_at: datetime | None
    last_purchase_at: datetime | None


class CustomerFileView(BaseModel):
    """The customer file (客户档案) as served to the gateway."""

    customer_id: str
    version: int
    name: str | None
    profile: dict[str, Any]
    consents: dict[str, dict[str, Any]]
    interactions: dict[str, int]
    purchases: PurchaseBehaviour
    recent_orders: list[OrderView]


RuntimeDep = Annotated[Runtime, Depends(get_runtime)]
router = APIRouter(prefix="/internal/v1", dependencies=[Depends(require_internal_token)], tags=["internal"])


@router.get("/customers/{customer_id}", response_model=CustomerFileView)
async def get_customer_file(customer_id: str, runtime: RuntimeDep) -> CustomerFileView:
    async with runtime.sessions() as session:
        file = await repository.load_file(session, customer_id)
        if file is None:
            raise HTTPException(404, {"error": f"no customer file for {customer_id!r}"})
        orders = await repository.recent_orders(session, customer_id)
    totals = file.totals
    return CustomerFileView(
        customer_id=file.customer_id,
        version=file.version,
        name=display_name(file.profile),
        profile={name: entry["value"] for name, entry in file.profile.items()},
        consents=file.consents,
        interactions=file.interactions,
        purchases=PurchaseBehaviour(
            order_count=totals.order_count,
            revenue=totals.revenue,
            refunded=totals.refunded,
            net_revenue=totals.net_revenue,
            average_order_value=totals.average_order_value,
            first_purchase_at=totals.first_purchase_at,
            last_purchase_at=totals.last_purchase_at,
        ),
        recent_orders=[OrderView(**row) for row in orders],
    )


def create_app(settings: ScoringSettings | None = None) -> FastAPI:
    settings = settings or ScoringSettings()
    metrics = ServiceMetrics()
    readiness: dict[str, Any] = {}

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        runtime = await open_runtime(settings, MIGRATIONS, metrics)
        consumer = start_pipeline(
            runtime,
            outbox=outbox,
            topics=[EVENTS],
            group_id=settings.consumer_group,
            make_handler=lambda relay: ScoringHandler(runtime.sessions, relay, metrics),
        )
        readiness.update(runtime.readiness(), consumer=consumer.check)
        app.state.runtime = runtime
        try:
            yield
        finally:
            await runtime.close()

    app = FastAPI(title="Huitou scoring (internal)", version="1", lifespan=lifespan)
    app.state.settings = settings
    install_common(app, service="scoring", metrics=metrics, readiness=readiness)
    app.include_router(router)
    return app
