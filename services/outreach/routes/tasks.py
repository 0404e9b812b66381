"""Operator tasks opened by care plans (complaint recovery escalates to a human)."""

from __future__ import annotations

from datetime import UTC, datetime

from fastapi import APIRouter, Depends, Query
from pydantic import BaseModel, Field

from services.outreach import repository
from services.outreach.routes.deps import Actor, PageDep, RuntimeDep, conflict, not_found
from shared.db import transaction
from shared.service import require_internal_token


class TaskView(BaseModel):
    task_id: str
    customer_id: str
    touch_id: str | None
    kind: str
    status: str = Field(description="open or resolved")
    summary: str
    acknowledge_by: datetime
    resolve_by: datetime
    created_at: datetime
    resolved_at: datetime | None
    resolved_by: str | None
    resolution: str | None


class TaskPage(BaseModel):
    total: int
    limit: int
    offset: int
    items: list[TaskView]


class ResolveRequest(Actor):
    resolution: str = Field(min_length=1, max_length=5000, description="what was done for the customer")


router = APIRouter(prefix="/internal/v1/tasks", dependencies=[Depends(require_internal_token)], tags=["operator tasks"])


@router.get("", response_model=TaskPage, summary="Operator tasks, most urgent first")
async def list_tasks(
    runtime: RuntimeDep,
    paging: PageDep,
    status: str | None = Query(None, pattern="^(open|resolved)$"),
    customer_id: str | None = None,
) -> TaskPage:
    async with runtime.sessions() as session:
        total, rows = await repository.list_tasks(
            session, status=status, customer_id=customer_id, limit=paging.limit, offset=paging.offset
        )
    return TaskPage(
        total=total, limit=paging.limit, offset=paging.offset, items=[TaskView.model_validate(r) for r in rows]
    )


@router.post("/{task_id}/resolve", response_model=TaskView)
async def resolve_task(task_id: str, body: ResolveRequest, runtime: RuntimeDep) -> TaskView:
    async with transaction(runtime.sessions) as session:
        task = await repository.get_task(session, task_id)
        if task is None:
            not_found(f"task {task_id}")
        if task["status"] != "open":
            conflict(f"task {task_id} was already resolved by {task['resolved_by']}")
        await repository.resolve_task(session, task_id, by=body.by, resolution=body.resolution, now=datetime.now(UTC))
        task = await repository.get_task(session, task_id)
    return TaskView.model_validate(task)
