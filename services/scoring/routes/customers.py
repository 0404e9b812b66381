"""Customer files: read one, search many, export everything held, erase."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Query

from services.scoring import repository
from services.scoring.deps import ContextDep
from services.scoring.operations import CustomerNotFound
from services.scoring.views import (
    CustomerFileView,
    CustomerPage,
    ErasureView,
    file_view,
    summary_view,
)
from shared.contracts import ChurnBand, LifecycleStage, ValueTier
from shared.service import require_internal_token

router = APIRouter(prefix="/internal/v1/customers", dependencies=[Depends(require_internal_token)], tags=["customers"])

RECENT_ORDERS = 20
HISTORY_ENTRIES = 100


def not_found(customer_id: str) -> HTTPException:
    return HTTPException(404, {"error": str(CustomerNotFound(customer_id))})


@router.get("", response_model=CustomerPage, summary="Search customer files")
async def search_customers(
    context: ContextDep,
    value_tier: Annotated[list[ValueTier] | None, Query(description="repeatable: A, B, C, D")] = None,
    grade: Annotated[list[str] | None, Query(description="repeatable: regular, silver, gold, vip")] = None,
    stage: Annotated[list[LifecycleStage] | None, Query()] = None,
    churn_band: Annotated[list[ChurnBand] | None, Query()] = None,
    tag: Annotated[list[str] | None, Query(description="repeatable; every tag must be present")] = None,
    clv_min: Annotated[Decimal | None, Query(ge=0)] = None,
    clv_max: Annotated[Decimal | None, Query(ge=0)] = None,
    last_purchase_from: datetime | None = None,
    last_purchase_to: datetime | None = None,
    sort: Annotated[str, Query(description="a field, '-' first for descending, e.g. -clv_365")] = "customer_id",
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    offset: Annotated[int, Query(ge=0, le=10_000_000)] = 0,
) -> CustomerPage:
    field = sort.removeprefix("-")
    if field not in repository.SORTABLE:
        raise HTTPException(
            400,
            {
                "error": f"cannot sort by {field!r}; sort by one of {', '.join(sorted(repository.SORTABLE))} "
                "(prefix '-' for descending)"
            },
        )
    for name, value in (("last_purchase_from", last_purchase_from), ("last_purchase_to", last_purchase_to)):
        if value is not None and value.tzinfo is None:
            raise HTTPException(400, {"error": f"{name} needs a time zone, e.g. 2026-01-01T00:00:00Z"})
    if clv_min is not None and clv_max is not None and clv_min > clv_max:
        raise HTTPException(400, {"error": f"clv_min {clv_min} is above clv_max {clv_max}"})
    if last_purchase_from and last_purchase_to and last_purchase_from > last_purchase_to:
        raise HTTPException(400, {"error": "last_purchase_from is after last_purchase_to"})
    query = repository.CustomerQuery(
        value_tier=[t.value for t in value_tier or []],
        grade=grade or [],
        stage=[s.value for s in stage or []],
        churn_band=[b.value for b in churn_band or []],
        tags=tag or [],
        clv_min=clv_min,
        clv_max=clv_max,
        last_purchase_from=last_purchase_from,
        last_purchase_to=last_purchase_to,
        sort=field,
        descending=sort.startswith("-"),
        limit=limit,
        offset=offset,
    )
    async with context.sessions() as session:
        total, files = await repository.search(session, query)
    following = offset + len(files)
    return CustomerPage(
        total=total,
        limit=limit,
        offset=offset,
        next_offset=following if following < total else None,
        sort=sort,
        items=[summary_view(f) for f in files],
    )


async def _file_view(context: ContextDep, customer_id: str, history_limit: int | None) -> CustomerFileView:
    async with context.sessions() as session:
        file = await repository.load_file(session, customer_id)
        if file is None:
            raise not_found(customer_id)
        return file_view(
            file,
            referred_by=file.referred_by,
            history=await repository.history(session, customer_id, history_limit),
            notes=await repository.list_notes(session, customer_id),
            contacts=await repository.list_contacts(session, customer_id),
            orders=await repository.recent_orders(session, customer_id, RECENT_ORDERS),
        )


@router.get("/{customer_id}", response_model=CustomerFileView, summary="The customer file")
async def get_customer_file(customer_id: str, context: ContextDep) -> CustomerFileView:
    return await _file_view(context, customer_id, HISTORY_ENTRIES)


def _plain(value: Any) -> Any:
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


@router.get("/{customer_id}/export", summary="Everything held about a customer (data-subject access)")
async def export_customer(customer_id: str, context: ContextDep) -> dict[str, Any]:
    view = await _file_view(context, customer_id, None)
    async with context.sessions() as session:
        rows = await repository.export_rows(session, customer_id)
    return {
        "customer_id": customer_id,
        "exported_at": datetime.now(UTC).isoformat(),
        "file": view.model_dump(mode="json"),
        "records": _plain(rows),
    }


@router.delete("/{customer_id}", response_model=ErasureView, summary="Erase a customer (right to be forgotten)")
async def erase_customer(
    customer_id: str,
    context: ContextDep,
    reason: Annotated[str, Query(min_length=1, max_length=500)] = "erasure request",
) -> ErasureView:
    try:
        erased_at = await context.operations.erase(customer_id, reason)
    except CustomerNotFound:
        raise not_found(customer_id) from None
    return ErasureView(customer_id=customer_id, erased_at=erased_at)
