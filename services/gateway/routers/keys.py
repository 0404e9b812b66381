"""/api/v1/keys: the gateway's API keys (admin only). A new or rotated secret is shown once."""

from __future__ import annotations

from fastapi import APIRouter, Request

from services.gateway import api_keys, audit
from services.gateway.api_keys import IssuedKey, KeyView, NewKey
from services.gateway.auth import Admin
from services.gateway.context import GatewayDep
from services.gateway.routing import API_PREFIX, error_responses

router = APIRouter(prefix=f"{API_PREFIX}/keys", tags=["keys"], responses=error_responses(write=True))
ADMIN_ONLY = {"x-required-role": "admin"}


@router.get("", summary="List API keys (never their secrets)", response_model=list[KeyView], openapi_extra=ADMIN_ONLY)
async def list_keys(_caller: Admin, gateway: GatewayDep) -> list[KeyView]:
    return await api_keys.list_keys(gateway.sessions)


@router.post(
    "",
    status_code=201,
    summary="Create an API key with a role; the answer holds the secret, this once",
    response_model=IssuedKey,
    openapi_extra=ADMIN_ONLY,
)
async def create_key(new: NewKey, caller: Admin, gateway: GatewayDep, request: Request) -> IssuedKey:
    issued = await api_keys.create_key(gateway.sessions, new, by=caller.name)
    await _audit(gateway, caller.name, "POST", "", request, None, _public(issued))
    return issued


@router.get("/{name}", summary="One API key", response_model=KeyView, openapi_extra=ADMIN_ONLY)
async def get_key(name: str, _caller: Admin, gateway: GatewayDep) -> KeyView:
    return await api_keys.get_key(gateway.sessions, name)


@router.post(
    "/{name}/rotate",
    summary="Give a key a new secret (the old one stops working at once); the answer holds it, this once",
    response_model=IssuedKey,
    openapi_extra=ADMIN_ONLY,
)
async def rotate_key(name: str, caller: Admin, gateway: GatewayDep, request: Request) -> IssuedKey:
    before = await api_keys.get_key(gateway.sessions, name)
    issued = await api_keys.rotate_key(gateway.sessions, name)
    await _audit(gateway, caller.name, "POST", "/{name}/rotate", request, _public(before), _public(issued))
    return issued


@router.post("/{name}/disable", summary="Disable a key", response_model=KeyView, openapi_extra=ADMIN_ONLY)
async def disable_key(name: str, caller: Admin, gateway: GatewayDep, request: Request) -> KeyView:
    return await _set_enabled(name, False, caller.name, gateway, request)


@router.post("/{name}/enable", summary="Enable a disabled key", response_model=KeyView, openapi_extra=ADMIN_ONLY)
async def enable_key(name: str, caller: Admin, gateway: GatewayDep, request: Request) -> KeyView:
    return await _set_enabled(name, True, caller.name, gateway, request)


async def _set_enabled(name: str, enabled: bool, actor: str, gateway: GatewayDep, request: Request) -> KeyView:
    before = await api_keys.get_key(gateway.sessions, name)
    after = await api_keys.set_enabled(gateway.sessions, name, enabled)
    verb = "enable" if enabled else "disable"
    await _audit(gateway, actor, "POST", f"/{{name}}/{verb}", request, _public(before), _public(after))
    return after


def _public(key: KeyView) -> dict[str, object]:
    """What the audit log keeps of a key: everything but the secret."""
    return KeyView.model_validate(key.model_dump()).model_dump(mode="json")


async def _audit(
    gateway: GatewayDep, actor: str, method: str, path: str, request: Request, before: object, after: object
) -> None:
    await audit.record(
        gateway.sessions,
        actor=actor,
        action=f"{method} {API_PREFIX}/keys{path}",
        target=request.url.path,
        status=200,
        before=before,
        after=after,
    )
