"""API-key authentication and roles (admin > operator > viewer)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated, Any

from fastapi import Depends, HTTPException, Request
from sqlalchemy import insert, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.gateway.tables import api_keys
from shared.keys import digest


class Role(StrEnum):
    VIEWER = "viewer"
    OPERATOR = "operator"
    ADMIN = "admin"

    @property
    def rank(self) -> int:
        return [Role.VIEWER, Role.OPERATOR, Role.ADMIN].index(self)


@dataclass(frozen=True)
class Caller:
    name: str
    role: Role


def presented_key(request: Request) -> str | None:
    header = request.headers.get("authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    return request.headers.get("x-api-key") or None


async def authenticate(request: Request) -> Caller:
    key = presented_key(request)
    challenge = {"WWW-Authenticate": 'Bearer realm="huitou"'}
    if key is None:
        raise HTTPException(
            401, {"error": "send your API key as 'Authorization: Bearer <key>' or X-API-Key"}, challenge
        )
    sessions: async_sessionmaker[AsyncSession] = request.app.state.runtime.sessions
    async with sessions() as session:
        row = (
            await session.execute(
                select(api_keys.c.name, api_keys.c.role, api_keys.c.enabled).where(api_keys.c.key_hash == digest(key))
            )
        ).first()
    if row is None:
        raise HTTPException(401, {"error": "unknown API key"}, challenge)
    if not row.enabled:
        raise HTTPException(403, {"error": f"API key {row.name!r} is disabled"})
    return Caller(row.name, Role(row.role))


def require(role: Role) -> Any:
    """A route dependency admitting ``role`` and the roles above it."""

    async def check(caller: Annotated[Caller, Depends(authenticate)]) -> Caller:
        if caller.role.rank < role.rank:
            raise HTTPException(403, {"error": f"this needs the {role} role; key {caller.name!r} is {caller.role}"})
        return caller

    return Depends(check)


async def register_key(sessions: async_sessionmaker[AsyncSession], name: str, key: str, role: Role) -> None:
    """Create or re-key ``name`` (used to install the first admin key)."""
    async with sessions() as session, session.begin():
        exists = await session.scalar(select(api_keys.c.name).where(api_keys.c.name == name))
        if exists:
            await session.execute(
                update(api_keys).where(api_keys.c.name == name).values(key_hash=digest(key), role=role, enabled=True)
            )
        else:
            await session.execute(
                insert(api_keys).values(
                    name=name, key_hash=digest(key), role=role, enabled=True, created_at=datetime.now(UTC)
                )
            )
