"""The gateway's API keys: created with a role, shown once, stored only as a digest.

The key named ``admin`` is the bootstrap key: it follows ``HUITOU_GATEWAY_ADMIN_KEY`` and is
re-installed at every start-up, so the API refuses to rotate or disable it (the change would
silently revert); change the secret and restart instead. So there is always one admin key.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, Field
from sqlalchemy import insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.gateway.auth import Role
from services.gateway.tables import api_keys
from shared.keys import digest, new_key

BOOTSTRAP_NAME = "admin"
KEY_PREFIX = "hk"
KeyName = Field(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9][A-Za-z0-9._@-]*$")


class KeyManagementError(Exception):
    """Base for key-management errors; the message tells the admin what to do."""

    status = 400


class UnknownKey(KeyManagementError):
    status = 404


class KeyNameTaken(KeyManagementError):
    status = 409


class KeyProtected(KeyManagementError):
    status = 409


class NewKey(BaseModel):
    name: str = KeyName
    role: Role
    description: str | None = Field(None, max_length=300)


class KeyView(BaseModel):
    """An API key as listed: never its secret, only the first characters to recognise it by."""

    name: str
    role: Role
    enabled: bool
    key_prefix: str | None = Field(description="the key's first characters, to tell keys apart")
    description: str | None
    created_at: datetime
    created_by: str | None
    rotated_at: datetime | None
    updated_at: datetime | None
    bootstrap: bool = Field(description="true for the key installed from HUITOU_GATEWAY_ADMIN_KEY")


class IssuedKey(KeyView):
    key: str = Field(description="the secret; shown this once and never again")


def _prefix(key: str) -> str:
    return key[:10]


def _view(row: Any) -> KeyView:
    data = dict(row._mapping)
    data.pop("key_hash", None)
    return KeyView(**data, bootstrap=data["name"] == BOOTSTRAP_NAME)


async def register_key(sessions: async_sessionmaker[AsyncSession], name: str, key: str, role: Role) -> None:
    """Create or re-key ``name`` (used to install the bootstrap admin key at start-up)."""
    now = datetime.now(UTC)
    values = {"key_hash": digest(key), "key_prefix": _prefix(key), "role": role, "enabled": True, "updated_at": now}
    async with sessions() as session, session.begin():
        exists = await session.scalar(select(api_keys.c.name).where(api_keys.c.name == name))
        if exists:
            await session.execute(update(api_keys).where(api_keys.c.name == name).values(**values))
        else:
            await session.execute(
                insert(api_keys).values(name=name, created_at=now, created_by="configuration", **values)
            )


async def list_keys(sessions: async_sessionmaker[AsyncSession]) -> list[KeyView]:
    async with sessions() as session:
        rows = (await session.execute(select(api_keys).order_by(api_keys.c.name))).all()
    return [_view(row) for row in rows]


async def get_key(sessions: async_sessionmaker[AsyncSession], name: str) -> KeyView:
    async with sessions() as session:
        return _view(await _row(session, name))


async def create_key(sessions: async_sessionmaker[AsyncSession], new: NewKey, *, by: str) -> IssuedKey:
    if new.name == BOOTSTRAP_NAME:
        raise KeyNameTaken(f"the name {BOOTSTRAP_NAME!r} is reserved for the bootstrap key; choose another name")
    key = new_key(KEY_PREFIX)
    now = datetime.now(UTC)
    try:
        async with sessions() as session, session.begin():
            await session.execute(
                insert(api_keys).values(
                    name=new.name,
                    key_hash=digest(key),
                    key_prefix=_prefix(key),
                    role=new.role,
                    enabled=True,
                    description=new.description,
                    created_at=now,
                    created_by=by,
                    updated_at=now,
                )
            )
    except IntegrityError:
        raise KeyNameTaken(f"a key named {new.name!r} exists; choose another name or rotate that key") from None
    view = await get_key(sessions, new.name)
    return IssuedKey(**view.model_dump(), key=key)


async def rotate_key(sessions: async_sessionmaker[AsyncSession], name: str) -> IssuedKey:
    """A new secret for the same name and role; the old secret stops working at once."""
    _refuse_bootstrap(name, "rotate")
    key = new_key(KEY_PREFIX)
    now = datetime.now(UTC)
    async with sessions() as session, session.begin():
        await _row(session, name)
        await session.execute(
            update(api_keys)
            .where(api_keys.c.name == name)
            .values(key_hash=digest(key), key_prefix=_prefix(key), rotated_at=now, updated_at=now)
        )
    view = await get_key(sessions, name)
    return IssuedKey(**view.model_dump(), key=key)


async def set_enabled(sessions: async_sessionmaker[AsyncSession], name: str, enabled: bool) -> KeyView:
    if not enabled:
        _refuse_bootstrap(name, "disable")
    async with sessions() as session, session.begin():
        await _row(session, name)
        await session.execute(
            update(api_keys).where(api_keys.c.name == name).values(enabled=enabled, updated_at=datetime.now(UTC))
        )
    return await get_key(sessions, name)


async def _row(session: AsyncSession, name: str) -> Any:
    row = (await session.execute(select(api_keys).where(api_keys.c.name == name))).first()
    if row is None:
        raise UnknownKey(f"no API key named {name!r}; GET /api/v1/keys lists them")
    return row


def _refuse_bootstrap(name: str, verb: str) -> None:
    if name == BOOTSTRAP_NAME:
        raise KeyProtected(
            f"the {BOOTSTRAP_NAME!r} key follows HUITOU_GATEWAY_ADMIN_KEY and is re-installed at start-up; "
            f"to {verb} it, change that setting and restart the gateway"
        )
