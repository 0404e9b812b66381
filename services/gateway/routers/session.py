"""/api/v1/me: who the presented key belongs to (the console's login check)."""

from __future__ import annotations

from fastapi import APIRouter
from pydantic import BaseModel

from services.gateway.auth import Role, Viewer
from services.gateway.routing import API_PREFIX, error_responses

router = APIRouter(prefix=API_PREFIX, tags=["session"], responses=error_responses())


class Me(BaseModel):
    name: str
    role: Role


@router.get(
    "/me", summary="The API key making this call", response_model=Me, openapi_extra={"x-required-role": "viewer"}
)
async def me(caller: Viewer) -> Me:
    return Me(name=caller.name, role=caller.role)
