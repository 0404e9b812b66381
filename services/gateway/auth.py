"""API-key authentication, roles (admin > operator > viewer) and the per-key rate limit."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Annotated, Any

from fastapi import Depends, HTTPException, Request
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.gateway.ratelimit import RateLimiter
from services.gateway.tables import api_keys
from shared.keys import digest

CHALLENGE = {"WWW-Authenticate": 'Bearer realm="huitou"'}


class Role(StrEnum):
    VIEWER = "viewer"
    OPERATOR = "operator"
    ADMIN = "admin"

    @property
    def rank(self) -> int:
        return [Role.VIEWER, Role.OPERATOR, Role.ADMIN].index(self)

    def admits(self, caller: Role) -> bool:
        return caller.rank >= self.rank


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
    if key is None:
        raise HTTPException(
            401, {"error": "send your API key as 'Authorization: Bearer <key>' or X-API-Key"}, CHALLENGE
        )
    sessions: async_sessionmaker[AsyncSession] = request.app.state.runtime.sessions
    async with sessions() as session:
        row = (
            await session.execute(
                select(api_keys.c.name, api_keys.c.role, api_keys.c.enabled).where(api_keys.c.key_hash == digest(key))
            )
        ).first()
    if row is None:
        raise HTTPException(401, {"error": "unknown API key"}, CHALLENGE)
    if not row.enabled:
        raise HTTPException(403, {"error": f"API key {row.name!r} is disabled; ask an admin to enable it"})
    caller = Caller(row.name, Role(row.role))
    limit(request.app.state.rate_limiter, f"key:{caller.name}")
    return caller


def limit(limiter: RateLimiter, who: str) -> None:
    """Take one token for ``who``, or refuse with 429 and when to come back."""
    verdict = limiter.take(who)
    if not verdict.allowed:
        raise HTTPException(
            429,
            {
                "error": f"rate limit exceeded ({limiter.rate:g} requests/s, bursts of {limiter.burst}); "
                f"retry after {verdict.retry_after_header} s"
            },
            {"Retry-After": verdict.retry_after_header},
        )


def require(role: Role) -> Any:
    """A route dependency admitting ``role`` and the roles above it; it yields the :class:`Caller`."""

    async def check(caller: Annotated[Caller, Depends(authenticate)]) -> Caller:
        if not role.admits(caller.role):
            raise HTTPException(403, {"error": f"this needs the {role} role; key {caller.name!r} is {caller.role}"})
        return caller

    return Depends(check)


async def limit_public(request: Request) -> None:
    """Routes without a key (unsubscribe links) are limited per client address instead."""
    client = request.client.host if request.client else "unknown"
    limit(request.app.state.public_rate_limiter, f"ip:{client}")


Viewer = Annotated[Caller, require(Role.VIEWER)]
Operator = Annotated[Caller, require(Role.OPERATOR)]
Admin = Annotated[Caller, require(Role.ADMIN)]
