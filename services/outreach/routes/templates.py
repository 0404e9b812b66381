"""Templates: list, read, create, replace (new version), delete (refused while a plan uses it)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, Body, Depends, Query, Response
from pydantic import BaseModel, ValidationError

from services.outreach import repository
from services.outreach.render import TemplateSpec, check_syntax
from services.outreach.routes.deps import OutreachDep, RuntimeDep, conflict, not_found, unprocessable
from shared.contracts import explain
from shared.db import transaction
from shared.service import require_internal_token


class TemplateView(BaseModel):
    name: str
    version: int
    origin: str
    updated_at: datetime
    updated_by: str | None
    locales: dict[str, Any]


router = APIRouter(prefix="/internal/v1/templates", dependencies=[Depends(require_internal_token)], tags=["templates"])


def validated_template(name: str, body: dict[str, Any]) -> TemplateSpec:
    """A template from a request body, checked as a save checks it: a 422 says what to fix."""
    if body.get("name", name) != name:
        unprocessable("invalid template", [f"name: the body says {body.get('name')!r}, the path {name!r}"])
    try:
        template = TemplateSpec.model_validate({"name": name, "locales": body.get("locales")})
    except ValidationError as error:
        unprocessable("invalid template", explain(error))
    problems = check_syntax(template)
    if problems:
        unprocessable("template syntax error", problems)
    return template


@router.get("", response_model=list[TemplateView])
async def list_templates(runtime: RuntimeDep) -> list[TemplateView]:
    async with runtime.sessions() as session:
        rows = await repository.stored_templates(session)
    return [TemplateView.model_validate(r) for r in rows]


@router.get("/{name}", response_model=TemplateView)
async def get_template(name: str, runtime: RuntimeDep) -> TemplateView:
    async with runtime.sessions() as session:
        row = await repository.stored_template(session, name)
    if row is None:
        not_found(f"template {name}")
    return TemplateView.model_validate(row)


@router.post("", response_model=TemplateView, status_code=201, summary="Create a template")
async def create_template(
    runtime: RuntimeDep, outreach: OutreachDep, body: dict[str, Any] = Body(...), by: str = Query("operator")
) -> TemplateView:
    name = str(body.get("name") or "")
    template = validated_template(name, body)
    async with transaction(runtime.sessions) as session:
        if await repository.stored_template(session, template.name) is not None:
            conflict(f"template {template.name} exists; PUT /internal/v1/templates/{template.name} to change it")
        await repository.save_template(
            session, template.name, _locales(template), origin="operator", by=by, now=datetime.now(UTC)
        )
        row = await repository.stored_template(session, template.name)
    outreach.catalog.invalidate()
    return TemplateView.model_validate(row)


@router.put("/{name}", response_model=TemplateView, summary="Replace a template's texts (a new version)")
async def update_template(
    name: str,
    runtime: RuntimeDep,
    outreach: OutreachDep,
    body: dict[str, Any] = Body(...),
    by: str = Query("operator"),
) -> TemplateView:
    template = validated_template(name, body)
    async with transaction(runtime.sessions) as session:
        if await repository.stored_template(session, name) is None:
            not_found(f"template {name}")
        await repository.save_template(
            session, name, _locales(template), origin="operator", by=by, now=datetime.now(UTC)
        )
        row = await repository.stored_template(session, name)
    outreach.catalog.invalidate()
    return TemplateView.model_validate(row)


@router.delete("/{name}", status_code=204)
async def delete_template(name: str, runtime: RuntimeDep, outreach: OutreachDep) -> Response:
    catalog = await outreach.catalog.current()
    users = sorted(p.plan.name for p in catalog.book.plans if p.plan.template == name)
    if users:
        conflict(f"template {name} is used by care plans: {', '.join(users)}; change or delete them first", plans=users)
    async with transaction(runtime.sessions) as session:
        if await repository.stored_template(session, name) is None:
            not_found(f"template {name}")
        await repository.delete_template(session, name)
    outreach.catalog.invalidate()
    return Response(status_code=204)


def _locales(template: TemplateSpec) -> dict[str, Any]:
    locales: dict[str, Any] = template.model_dump(mode="json")["locales"]
    return locales
