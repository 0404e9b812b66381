"""The audit log: who changed what, when, with the state before and after.

Every write that passes authorization is recorded, whether the owning service accepted it or
not (``status`` says which). A write that timed out is recorded with 504: it may have happened.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, Field
from sqlalchemy import ColumnElement, and_, func, insert, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.gateway.tables import audit_log

log = logging.getLogger("huitou.gateway.audit")

MAX_STATE_BYTES = 64 * 1024
ERASED = {"redacted": "customer erased"}
# Secrets shown once to the caller (new API keys, write keys) never enter the audit log.
SECRET_FIELDS = frozenset({"key", "write_key", "secret", "token", "api_key"})


class AuditEntry(BaseModel):
    """One recorded write."""

    id: int
    at: datetime
    actor: str = Field(description="name of the API key that made the change")
    action: str = Field(description="method and route, e.g. 'POST /api/v1/customers/{customer_id}/notes'")
    target: str = Field(description="the resource path that was changed")
    status: int | None = Field(description="HTTP status the caller received")
    customer_id: str | None
    before: Any = None
    after: Any = None


class AuditPage(BaseModel):
    items: list[AuditEntry]
    total: int
    limit: int
    offset: int


@dataclass(frozen=True)
class AuditFilter:
    actor: str | None = None
    action: str | None = None
    target: str | None = None
    customer_id: str | None = None
    status: int | None = None
    since: datetime | None = None
    until: datetime | None = None

    def conditions(self) -> list[ColumnElement[bool]]:
        c = audit_log.c
        where: list[ColumnElement[bool]] = []
        if self.actor:
            where.append(c.actor == self.actor)
        if self.action:
            where.append(c.action.startswith(self.action, autoescape=True))
        if self.target:
            where.append(
                or_(c.target == self.target, c.target.startswith(self.target.rstrip("/") + "/", autoescape=True))
            )
        if self.customer_id:
            where.append(c.customer_id == self.customer_id)
        if self.status is not None:
            where.append(c.status == self.status)
        if self.since:
            where.append(c.at >= self.since)
        if self.until:
            where.append(c.at < self.until)
        return where


def scrub(state: Any) -> Any:
    """The state with every secret-bearing field replaced."""
    if isinstance(state, dict):
        return {k: "[secret]" if k in SECRET_FIELDS and v is not None else scrub(v) for k, v in state.items()}
    if isinstance(state, list):
        return [scrub(item) for item in state]
    return state


def bounded(state: Any) -> Any:
    """Keep the audit row small and free of secrets: a huge body is summarised rather than stored."""
    if state is None:
        return None
    state = scrub(state)
    size = len(json.dumps(state, default=str))
    if size > MAX_STATE_BYTES:
        return {"truncated": True, "bytes": size}
    return state


async def record(
    sessions: async_sessionmaker[AsyncSession],
    *,
    actor: str,
    action: str,
    target: str,
    status: int,
    customer_id: str | None = None,
    before: Any = None,
    after: Any = None,
) -> None:
    row = {
        "at": datetime.now(UTC),
        "actor": actor,
        "action": action[:100],
        "target": target[:300],
        "status": status,
        "customer_id": customer_id[:200] if customer_id else None,
        "before": bounded(before),
        "after": bounded(after),
    }
    try:
        async with sessions() as session, session.begin():
            await session.execute(insert(audit_log).values(**row))
    except Exception:
        # The change has already happened in the owning service: failing the call now would only
        # invite a retry that applies it twice. Losing the row must be loud instead.
        log.exception("could not record audit entry %s", {k: row[k] for k in ("actor", "action", "target", "status")})


async def search(
    sessions: async_sessionmaker[AsyncSession], where: AuditFilter, *, limit: int, offset: int
) -> AuditPage:
    conditions = where.conditions()
    async with sessions() as session:
        total = await session.scalar(select(func.count()).select_from(audit_log).where(and_(True, *conditions)))
        rows = (
            await session.execute(
                select(audit_log)
                .where(and_(True, *conditions))
                .order_by(audit_log.c.id.desc())
                .limit(limit)
                .offset(offset)
            )
        ).mappings()
        items = [AuditEntry.model_validate(dict(row)) for row in rows]
    return AuditPage(items=items, total=total or 0, limit=limit, offset=offset)


async def about_customer(sessions: async_sessionmaker[AsyncSession], customer_id: str) -> Sequence[AuditEntry]:
    """Every recorded write concerning one customer, oldest first (for the privacy export)."""
    async with sessions() as session:
        rows = (
            await session.execute(
                select(audit_log).where(audit_log.c.customer_id == customer_id).order_by(audit_log.c.id)
            )
        ).mappings()
        return [AuditEntry.model_validate(dict(row)) for row in rows]


async def redact_customer(sessions: async_sessionmaker[AsyncSession], customer_id: str) -> int:
    """Erasure: keep who did what and when, drop the personal data the states carried."""
    async with sessions() as session, session.begin():
        result = await session.execute(
            update(audit_log).where(audit_log.c.customer_id == customer_id).values(before=ERASED, after=ERASED)
        )
    return int(getattr(result, "rowcount", 0) or 0)
