"""Privacy: export everything held about a customer, and erase a customer across every service.

Erasure fans out to each service that keeps customer data (each erases its own part and is
idempotent, so a partial failure is fixed by calling again) and redacts the personal data the
gateway's own audit log holds about the customer, keeping who did what and when.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, HTTPException, Query, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from services.gateway import audit
from services.gateway.auth import Admin
from services.gateway.context import Gateway, GatewayDep
from services.gateway.downstream import DownstreamFailure, ServiceRefused
from services.gateway.routing import API_PREFIX, encode_segment, error_responses

router = APIRouter(prefix=f"{API_PREFIX}/customers", tags=["privacy"], responses=error_responses(write=True))
ADMIN_ONLY = {"x-required-role": "admin"}

# Services holding data about a customer, and where each erases and exports it.
HOLDERS = ("scoring", "outreach")
ERASE_PATH = "/internal/v1/customers/{customer_id}"
EXPORT_PATH = "/internal/v1/customers/{customer_id}/export"
# ingest keeps only event ids (its dedupe window), which say nothing about the customer.
NOTHING_HELD = {"ingest": "keeps only event ids for deduplication, no customer data"}


class ServiceErasure(BaseModel):
    status: Literal["erased", "nothing held", "failed"]
    detail: Any = None


class ErasureReport(BaseModel):
    """Per-service outcome of an erasure. ``complete`` is false until every service has erased."""

    customer_id: str
    complete: bool
    services: dict[str, ServiceErasure]


class CustomerExport(BaseModel):
    """Everything Huitou holds about one customer, by the service that holds it."""

    customer_id: str
    exported_at: datetime
    services: dict[str, Any] = Field(description="each service's own export; null where it holds nothing")


@router.delete(
    "/{customer_id}",
    summary="Erase a customer across every service",
    description="Each service erases its part (scoring publishes a tombstone on the keyed topics); "
    "the gateway's audit log keeps who did what but drops the personal data. A 502 answer lists "
    "which service failed; calling again is safe. Requires the **admin** role. Recorded in the audit log.",
    response_model=ErasureReport,
    responses={502: {"model": ErasureReport, "description": "some service could not erase; call again"}},
    openapi_extra=ADMIN_ONLY,
)
async def erase_customer(
    customer_id: str,
    caller: Admin,
    gateway: GatewayDep,
    request: Request,
    reason: Annotated[
        str, Query(min_length=1, max_length=500, description="kept with the tombstone")
    ] = "erasure request",
) -> JSONResponse:
    erasures = (_erase(gateway, service, customer_id, reason) for service in HOLDERS)
    results = dict(zip(HOLDERS, await asyncio.gather(*erasures), strict=True))
    redacted = await audit.redact_customer(gateway.sessions, customer_id)
    results["gateway"] = ServiceErasure(status="erased", detail={"audit_entries_redacted": redacted})
    for service, why in NOTHING_HELD.items():
        results[service] = ServiceErasure(status="nothing held", detail=why)
    report = ErasureReport(
        customer_id=customer_id, complete=all(r.status != "failed" for r in results.values()), services=results
    )
    status = 200 if report.complete else 502
    body = report.model_dump(mode="json")
    await audit.record(
        gateway.sessions,
        actor=caller.name,
        action=f"DELETE {API_PREFIX}/customers/{{customer_id}}",
        target=request.url.path,
        status=status,
        customer_id=customer_id,
        after={s: r["status"] for s, r in body["services"].items()},
    )
    return JSONResponse(body, status)


@router.get(
    "/{customer_id}/export",
    summary="Export everything held about a customer",
    description="Merges each service's export with the gateway's audit entries about the customer. "
    "Requires the **admin** role. The export itself is recorded in the audit log.",
    response_model=CustomerExport,
    openapi_extra=ADMIN_ONLY,
)
async def export_customer(customer_id: str, caller: Admin, gateway: GatewayDep, request: Request) -> CustomerExport:
    path = EXPORT_PATH.format(customer_id=encode_segment(customer_id))
    parts = await asyncio.gather(*(_export(gateway, service, path) for service in HOLDERS))
    entries = await audit.about_customer(gateway.sessions, customer_id)
    services: dict[str, Any] = dict(zip(HOLDERS, parts, strict=True))
    if all(part is None for part in parts) and not entries:
        raise HTTPException(404, {"error": f"Huitou holds nothing about customer {customer_id!r}"})
    services["gateway"] = {"audit": [entry.model_dump(mode="json") for entry in entries]}
    await audit.record(
        gateway.sessions,
        actor=caller.name,
        action=f"GET {API_PREFIX}/customers/{{customer_id}}/export",
        target=request.url.path,
        status=200,
        customer_id=customer_id,
    )
    return CustomerExport(customer_id=customer_id, exported_at=datetime.now(UTC), services=services)


async def _erase(gateway: Gateway, service: str, customer_id: str, reason: str) -> ServiceErasure:
    path = ERASE_PATH.format(customer_id=encode_segment(customer_id))
    try:
        # Erasure is idempotent, so retrying it is safe.
        reply = await gateway.downstream.call("DELETE", service, path, params={"reason": reason}, idempotent=True)
    except DownstreamFailure as failure:
        return ServiceErasure(status="failed", detail=failure.message)
    if reply.status == 404:
        return ServiceErasure(status="nothing held", detail=reply.json())
    if reply.status >= 400:
        return ServiceErasure(status="failed", detail=reply.error_body())
    return ServiceErasure(status="erased", detail=reply.json())


async def _export(gateway: Gateway, service: str, path: str) -> Any:
    try:
        return await gateway.downstream.get(service, path)
    except ServiceRefused as refused:
        if refused.status == 404:
            return None
        raise
