"""Operator edits of a customer file: tags, the tier override, B2B contacts and staff notes."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Path, Query, Response

from services.scoring.deps import ContextDep
from services.scoring.operations import Conflict, CustomerNotFound, ItemNotFound
from services.scoring.views import (
    ContactRequest,
    ContactView,
    NoteRequest,
    NoteView,
    ScoresView,
    TagsRequest,
    TierOverrideRequest,
    scores_view,
)
from shared.service import require_internal_token

router = APIRouter(prefix="/internal/v1/customers", dependencies=[Depends(require_internal_token)], tags=["edits"])

Reason = Annotated[str, Query(min_length=3, max_length=500, description="why; kept in the file's history")]


def _errors(error: Exception) -> HTTPException:
    if isinstance(error, CustomerNotFound | ItemNotFound):
        return HTTPException(404, {"error": str(error)})
    if isinstance(error, Conflict):
        return HTTPException(409, {"error": str(error)})
    raise error


@router.post("/{customer_id}/tags", response_model=list[str], summary="Add tags")
async def add_tags(customer_id: str, body: TagsRequest, context: ContextDep) -> list[str]:
    try:
        file = await context.operations.add_tags(customer_id, body.tags, body.reason)
    except (CustomerNotFound, ItemNotFound, Conflict) as error:
        raise _errors(error) from None
    return list(file.tags)


@router.delete("/{customer_id}/tags/{tag}", status_code=204, summary="Remove a tag")
async def remove_tag(
    customer_id: str,
    tag: str,
    context: ContextDep,
    reason: Annotated[str | None, Query(max_length=500)] = None,
) -> Response:
    try:
        await context.operations.remove_tag(customer_id, tag, reason)
    except (CustomerNotFound, ItemNotFound, Conflict) as error:
        raise _errors(error) from None
    return Response(status_code=204)


@router.put("/{customer_id}/tier-override", response_model=ScoresView, summary="Override the value tier")
async def set_tier_override(customer_id: str, body: TierOverrideRequest, context: ContextDep) -> ScoresView:
    try:
        file = await context.operations.set_tier_override(customer_id, body.tier, body.reason)
    except (CustomerNotFound, ItemNotFound, Conflict) as error:
        raise _errors(error) from None
    return scores_view(file)


@router.delete("/{customer_id}/tier-override", response_model=ScoresView, summary="Clear the tier override")
async def clear_tier_override(customer_id: str, context: ContextDep, reason: Reason) -> ScoresView:
    try:
        file = await context.operations.clear_tier_override(customer_id, reason)
    except (CustomerNotFound, ItemNotFound, Conflict) as error:
        raise _errors(error) from None
    return scores_view(file)


@router.post("/{customer_id}/contacts", response_model=ContactView, status_code=201, summary="Add a B2B contact")
async def add_contact(customer_id: str, body: ContactRequest, context: ContextDep) -> ContactView:
    values = body.model_dump(exclude={"primary"}) | {"is_primary": body.primary}
    try:
        stored = await context.operations.add_contact(customer_id, values)
    except (CustomerNotFound, ItemNotFound, Conflict) as error:
        raise _errors(error) from None
    return ContactView(**stored)


@router.delete("/{customer_id}/contacts/{contact_id}", status_code=204, summary="Remove a B2B contact")
async def remove_contact(customer_id: str, contact_id: str, context: ContextDep) -> Response:
    try:
        await context.operations.remove_contact(customer_id, contact_id)
    except (CustomerNotFound, ItemNotFound, Conflict) as error:
        raise _errors(error) from None
    return Response(status_code=204)


@router.post("/{customer_id}/notes", response_model=NoteView, status_code=201, summary="Add a staff note")
async def add_note(customer_id: str, body: NoteRequest, context: ContextDep) -> NoteView:
    try:
        note = await context.operations.add_note(customer_id, body.text, body.author)
    except (CustomerNotFound, ItemNotFound, Conflict) as error:
        raise _errors(error) from None
    return NoteView(**note)


@router.delete("/{customer_id}/notes/{note_id}", status_code=204, summary="Delete a staff note")
async def remove_note(customer_id: str, note_id: Annotated[int, Path(ge=1)], context: ContextDep) -> Response:
    try:
        await context.operations.remove_note(customer_id, note_id)
    except (CustomerNotFound, ItemNotFound, Conflict) as error:
        raise _errors(error) from None
    return Response(status_code=204)
