"""Care plans: list, read, version history, create, update (a new version), delete, preview
with a real customer, and test-send to a given address."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, Body, Depends, HTTPException, Query, Response
from pydantic import BaseModel, Field

from services.outreach import repository
from services.outreach.care import sample_facts
from services.outreach.channels import OutboundMessage, SendError, message_id
from services.outreach.dispatcher import unsubscribe_url
from services.outreach.plans import CarePlan, PlanError, parse_plan
from services.outreach.render import Rendered, RenderError, TemplateSpec, build_context, render
from services.outreach.routes.deps import (
    Outreach,
    OutreachDep,
    RuntimeDep,
    conflict,
    not_found,
    unprocessable,
)
from services.outreach.routes.templates import validated_template
from shared.contracts import Channel, CustomerSnapshot, Purpose
from shared.db import transaction
from shared.service import require_internal_token


class PlanView(BaseModel):
    name: str
    version: int
    origin: str = Field(description="default (shipped, refreshed on start) or operator (edited)")
    updated_at: datetime
    updated_by: str | None
    definition: dict[str, Any]


class PlanVersionView(BaseModel):
    version: int
    action: str
    created_at: datetime
    created_by: str | None
    definition: dict[str, Any]


class PreviewRequest(BaseModel):
    customer_id: str = Field(min_length=1, max_length=200, description="a customer whose file outreach holds")
    locale: str | None = Field(None, pattern=r"^[a-z]{2}(-[A-Z]{2})?$", description="default: the customer's")
    channel: Channel | None = None
    draft_locales: dict[str, Any] | None = Field(
        None,
        description="the plan's template texts as being edited, in the template's `locales` form: rendered "
        "instead of the saved template and not stored, so an editor can see a change before saving it",
    )


class PreviewView(BaseModel):
    plan: str
    customer_id: str
    locale: str
    tone: str | None
    subject: str
    body: str


class TestSendRequest(BaseModel):
    to: str = Field(min_length=3, max_length=320, description="email address or phone number to send the test to")
    channel: Channel = Channel.EMAIL
    customer_id: str | None = Field(None, description="render with this customer's file (default: sample data)")
    locale: str | None = Field(None, pattern=r"^[a-z]{2}(-[A-Z]{2})?$")


class TestSendView(PreviewView):
    message_id: str
    channel: Channel
    to: str


def _view(row: dict[str, Any]) -> PlanView:
    return PlanView.model_validate(row)


router = APIRouter(
    prefix="/internal/v1/care-plans", dependencies=[Depends(require_internal_token)], tags=["care plans"]
)


@router.get("", response_model=list[PlanView], summary="Care plans in force")
async def list_plans(runtime: RuntimeDep, include_deleted: bool = False) -> list[PlanView]:
    async with runtime.sessions() as session:
        rows = await repository.stored_plans(session, include_deleted=include_deleted)
    return [_view(r) for r in rows]


@router.get("/{name}", response_model=PlanView)
async def get_plan(name: str, runtime: RuntimeDep) -> PlanView:
    async with runtime.sessions() as session:
        row = await repository.stored_plan(session, name)
    if row is None or row["deleted"]:
        not_found(f"care plan {name}")
    return _view(row)


@router.get("/{name}/versions", response_model=list[PlanVersionView], summary="Every version, newest first")
async def plan_versions(name: str, runtime: RuntimeDep) -> list[PlanVersionView]:
    async with runtime.sessions() as session:
        rows = await repository.plan_history(session, name)
    if not rows:
        not_found(f"care plan {name}")
    return [PlanVersionView.model_validate(r) for r in rows]


async def _validated(definition: dict[str, Any], outreach: Outreach) -> CarePlan:
    try:
        plan = parse_plan(definition)
    except PlanError as error:
        unprocessable("invalid care plan", error.problems)
    catalog = await outreach.catalog.current()
    problems = []
    if plan.template not in catalog.templates:
        problems.append(f"template: {plan.template!r} does not exist; create it under /internal/v1/templates first")
    if plan.trigger.calendar is not None:
        unknown = [h for h in plan.trigger.calendar.holidays if h not in outreach.catalog.holidays]
        if unknown:
            known = ", ".join(sorted(outreach.catalog.holidays))
            problems.append(f"trigger.calendar.holidays: unknown {', '.join(unknown)}; known: {known}")
    if problems:
        unprocessable("invalid care plan", problems)
    return plan


@router.post("", response_model=PlanView, status_code=201, summary="Create a care plan")
async def create_plan(
    runtime: RuntimeDep, outreach: OutreachDep, definition: dict[str, Any] = Body(...), by: str = Query("operator")
) -> PlanView:
    plan = await _validated(definition, outreach)
    async with transaction(runtime.sessions) as session:
        existing = await repository.stored_plan(session, plan.name)
        if existing is not None and not existing["deleted"]:
            conflict(f"care plan {plan.name} exists; PUT /internal/v1/care-plans/{plan.name} to change it")
        await repository.save_plan(
            session,
            plan.name,
            plan.version_payload(),
            origin="operator",
            action="created",
            by=by,
            now=datetime.now(UTC),
        )
        row = await repository.stored_plan(session, plan.name)
    outreach.catalog.invalidate()
    assert row is not None
    return _view(row)


@router.put("/{name}", response_model=PlanView, summary="Replace a care plan (stored as a new version)")
async def update_plan(
    name: str,
    runtime: RuntimeDep,
    outreach: OutreachDep,
    definition: dict[str, Any] = Body(...),
    by: str = Query("operator"),
) -> PlanView:
    if definition.get("name", name) != name:
        unprocessable("invalid care plan", [f"name: the body says {definition.get('name')!r}, the path {name!r}"])
    plan = await _validated({**definition, "name": name}, outreach)
    async with transaction(runtime.sessions) as session:
        existing = await repository.stored_plan(session, name)
        if existing is None or existing["deleted"]:
            not_found(f"care plan {name}")
        await repository.save_plan(
            session, name, plan.version_payload(), origin="operator", action="updated", by=by, now=datetime.now(UTC)
        )
        row = await repository.stored_plan(session, name)
    outreach.catalog.invalidate()
    assert row is not None
    return _view(row)


@router.delete("/{name}", status_code=204, summary="Delete a care plan (its history is kept)")
async def delete_plan(name: str, runtime: RuntimeDep, outreach: OutreachDep, by: str = Query("operator")) -> Response:
    async with transaction(runtime.sessions) as session:
        existing = await repository.stored_plan(session, name)
        if existing is None or existing["deleted"]:
            not_found(f"care plan {name}")
        await repository.save_plan(
            session,
            name,
            existing["definition"],
            origin="operator",
            action="deleted",
            by=by,
            now=datetime.now(UTC),
            deleted=True,
        )
    outreach.catalog.invalidate()
    return Response(status_code=204)


async def _render_for(
    outreach: Outreach,
    runtime: Any,
    name: str,
    customer_id: str | None,
    locale: str | None,
    channel: Channel | None,
    draft_locales: dict[str, Any] | None = None,
) -> tuple[CarePlan, Rendered, str]:
    catalog = await outreach.catalog.current()
    active = catalog.book.get(name)
    if active is None:
        not_found(f"care plan {name}")
    plan = active.plan
    snapshot = CustomerSnapshot(name="示例客户 Sample", first_name="Sample", order_count=1)
    if customer_id is not None:
        async with runtime.sessions() as session:
            stored = await repository.load_snapshot(session, customer_id)
        if stored is None:
            not_found(f"customer {customer_id} (outreach has no customer file for this id yet)")
        snapshot = stored
    settings = outreach.settings
    wanted = locale or snapshot.locale or settings.default_locale
    if draft_locales is not None:  # checked as a save would check it, but only rendered
        template: TemplateSpec | None = validated_template(plan.template, {"locales": draft_locales})
    else:
        template = catalog.templates.get(plan.template)
    if template is None:
        unprocessable("cannot render", [f"template {plan.template!r} does not exist"])
    terms = plan.offer.by_tier.get(snapshot.value_tier) if plan.offer and snapshot.value_tier else None
    chosen = channel or plan.channels[0]
    link = None
    if plan.purpose is Purpose.MARKETING:
        link = unsubscribe_url(settings, customer_id or "preview", chosen)
    context = build_context(
        customer_id=customer_id or "preview",
        snapshot=snapshot,
        locale=wanted,
        plan=name,
        channel=chosen,
        facts=sample_facts(plan, snapshot, catalog.book.holidays, wanted),
        offer=terms,
        tier_benefits=catalog.book.tier_benefits,
        unsubscribe_url=link,
    )
    try:
        rendered = render(
            template,
            context,
            locale=wanted,
            default_locale=settings.default_locale,
            tone=snapshot.communication_style.value if snapshot.communication_style else None,
        )
    except RenderError as error:
        unprocessable("template error", [str(error)])
    return plan, rendered, customer_id or "preview"


@router.post("/{name}/preview", response_model=PreviewView, summary="Render the plan's template for a customer")
async def preview(name: str, body: PreviewRequest, runtime: RuntimeDep, outreach: OutreachDep) -> PreviewView:
    _, rendered, customer_id = await _render_for(
        outreach, runtime, name, body.customer_id, body.locale, body.channel, body.draft_locales
    )
    return PreviewView(
        plan=name,
        customer_id=customer_id,
        locale=rendered.locale,
        tone=rendered.tone,
        subject=rendered.subject,
        body=rendered.body,
    )


@router.post("/{name}/test-send", response_model=TestSendView, summary="Send the rendered touch to a test address")
async def test_send(name: str, body: TestSendRequest, runtime: RuntimeDep, outreach: OutreachDep) -> TestSendView:
    adapter = outreach.adapters.get(body.channel)
    if adapter is None:
        unprocessable("channel not configured", [f"channel: {body.channel.value} has no endpoint in this deployment"])
    if body.channel is Channel.EMAIL and "@" not in body.to:
        unprocessable("invalid test address", ["to: an email test needs an address like name@example.com"])
    plan, rendered, customer_id = await _render_for(
        outreach, runtime, name, body.customer_id, body.locale, body.channel
    )
    touch_id = f"test-{uuid.uuid4()}"
    message = OutboundMessage(
        touch_id=touch_id,
        customer_id=customer_id,
        channel=body.channel,
        address=body.to,
        subject=f"[TEST] {rendered.subject}",
        body=rendered.body,
        plan=plan.name,
        purpose=plan.purpose,
        locale=rendered.locale,
    )
    try:
        prepared = await adapter.prepare(message)
        await prepared.commit()
    except SendError as error:
        raise HTTPException(502, {"error": f"test send failed: {error}"}) from None
    return TestSendView(
        plan=plan.name,
        customer_id=customer_id,
        locale=rendered.locale,
        tone=rendered.tone,
        subject=message.subject,
        body=rendered.body,
        channel=body.channel,
        to=body.to,
        message_id=message_id(touch_id, outreach.settings.message_id_domain)
        if body.channel is Channel.EMAIL
        else touch_id,
    )
