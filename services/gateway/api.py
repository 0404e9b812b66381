"""Gateway's process: the versioned operator API composed from the other services."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
from fastapi import APIRouter, FastAPI, Request

from services.gateway.auth import Role, register_key, require
from services.gateway.downstream import Downstream
from services.gateway.settings import GatewaySettings
from shared.keys import new_key
from shared.observability import ServiceMetrics
from shared.runtime import open_runtime
from shared.service import install_common

MIGRATIONS = Path(__file__).parent / "migrations"
log = logging.getLogger("huitou.gateway")

customers = APIRouter(prefix="/api/v1/customers", tags=["customers"])


def _downstream(request: Request) -> Downstream:
    downstream: Downstream = request.app.state.downstream
    return downstream


@customers.get("/{customer_id}", dependencies=[require(Role.VIEWER)], summary="The customer file")
async def get_customer(customer_id: str, request: Request) -> Any:
    return await _downstream(request).get("scoring", f"/internal/v1/customers/{quote(customer_id, safe='')}")


@customers.get("/{customer_id}/touches", dependencies=[require(Role.VIEWER)], summary="A customer's care touches")
async def get_customer_touches(customer_id: str, request: Request) -> Any:
    return await _downstream(request).get("outreach", f"/internal/v1/customers/{quote(customer_id, safe='')}/touches")


def create_app(settings: GatewaySettings | None = None) -> FastAPI:
    settings = settings or GatewaySettings()
    metrics = ServiceMetrics()
    readiness: dict[str, Any] = {}

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        runtime = await open_runtime(settings, MIGRATIONS, metrics, with_producer=False)
        key = settings.admin_key
        if key is None and settings.env == "dev":
            key = new_key("hk")
            log.warning("no admin key configured; generated one: %s", key)
        if key is not None:
            await register_key(runtime.sessions, "admin", key, Role.ADMIN)
        client = httpx.AsyncClient(timeout=httpx.Timeout(settings.downstream_timeout_seconds))
        app.state.downstream = Downstream(
            client,
            {"scoring": settings.scoring_url, "outreach": settings.outreach_url, "ingest": settings.ingest_url},
            settings.internal_token,
            settings.downstream_retries,
        )
        readiness.update(runtime.readiness())
        app.state.runtime = runtime
        try:
            yield
        finally:
            await client.aclose()
            await runtime.close()

    app = FastAPI(title="Huitou gateway", version="1", lifespan=lifespan)
    app.state.settings = settings
    install_common(app, service="gateway", metrics=metrics, readiness=readiness)
    app.include_router(customers)
    return app
