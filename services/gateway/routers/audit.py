"""/api/v1/audit: who changed what, when (admin only)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query
from pydantic import AwareDatetime

from services.gateway import audit
from services.gateway.audit import AuditFilter, AuditPage
from services.gateway.auth import Admin
from services.gateway.context import GatewayDep
from services.gateway.routing import API_PREFIX, error_responses

router = APIRouter(prefix=f"{API_PREFIX}/audit", tags=["audit"], responses=error_responses())


@router.get(
    "",
    summary="Search the audit log, newest first",
    response_model=AuditPage,
    openapi_extra={"x-required-role": "admin"},
)
async def search_audit(
    _caller: Admin,
    gateway: GatewayDep,
    actor: Annotated[str | None, Query(description="API key name")] = None,
    action: Annotated[str | None, Query(description="prefix of 'METHOD /api/v1/route', e.g. 'POST'")] = None,
    target: Annotated[str | None, Query(description="a resource path and everything below it")] = None,
    customer_id: Annotated[str | None, Query(description="writes concerning this customer")] = None,
    status: Annotated[int | None, Query(ge=100, le=599, description="HTTP status the caller received")] = None,
    since: Annotated[AwareDatetime | None, Query(description="at or after (ISO 8601 with zone)")] = None,
    until: Annotated[AwareDatetime | None, Query(description="before (ISO 8601 with zone)")] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    offset: Annotated[int, Query(ge=0, le=1_000_000)] = 0,
) -> AuditPage:
    where = AuditFilter(actor, action, target, customer_id, status, since, until)
    return await audit.search(gateway.sessions, where, limit=limit, offset=offset)
