"""A customer's touches, and privacy: export everything outreach holds, or erase it."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, Depends
from pydantic import BaseModel

from services.outreach import repository
from services.outreach.routes.deps import RuntimeDep
from services.outreach.routes.touches import TouchView, touch_view
from shared.db import transaction
from shared.service import require_internal_token


class ErasureView(BaseModel):
    customer_id: str
    erased_at: datetime
    deleted: dict[str, int]


class ExportView(BaseModel):
    customer_id: str
    exported_at: datetime
    snapshot: dict[str, Any] | None
    consents: list[dict[str, Any]]
    touches: list[dict[str, Any]]
    attempts: list[dict[str, Any]]
    suppressions: list[dict[str, Any]]
    tasks: list[dict[str, Any]]


router = APIRouter(prefix="/internal/v1/customers", dependencies=[Depends(require_internal_token)], tags=["customers"])


@router.get("/{customer_id}/touches", response_model=list[TouchView], summary="A customer's touches, by due time")
async def list_customer_touches(customer_id: str, runtime: RuntimeDep) -> list[TouchView]:
    async with runtime.sessions() as session:
        rows = await repository.customer_touches(session, customer_id)
    return [touch_view(row) for row in rows]


@router.get("/{customer_id}/export", response_model=ExportView, summary="Everything outreach holds about a customer")
async def export_customer(customer_id: str, runtime: RuntimeDep) -> ExportView:
    async with runtime.sessions() as session:
        snapshot = await repository.load_snapshot(session, customer_id)
        touches = await repository.customer_touches(session, customer_id)
        attempts = await repository.touch_attempts_of(session, [t["touch_id"] for t in touches])
        _, suppressions = await repository.list_suppressions(
            session, customer_id=customer_id, plan=None, reason=None, since=None, limit=100_000, offset=0
        )
        consents = await repository.customer_consents(session, customer_id)
        tasks = await repository.customer_tasks(session, customer_id)
    return ExportView(
        customer_id=customer_id,
        exported_at=datetime.now(UTC),
        snapshot=snapshot.model_dump(mode="json") if snapshot else None,
        consents=consents,
        touches=touches,
        attempts=attempts,
        suppressions=suppressions,
        tasks=tasks,
    )


@router.delete("/{customer_id}", response_model=ErasureView, summary="Erase everything outreach holds (privacy)")
async def erase_customer(customer_id: str, runtime: RuntimeDep) -> ErasureView:
    now = datetime.now(UTC)
    async with transaction(runtime.sessions) as session:
        deleted = await repository.erase_customer(session, customer_id, now)
    return ErasureView(customer_id=customer_id, erased_at=now, deleted=deleted)
