"""Who may call what: the authorization matrix on every route, API-key management, the audit of
key changes, and rate limits — on the real gateway app with a real SQLite database.

The other services are deliberately absent here (nothing listens at their addresses): an
authorized call gets past the gateway and ends in a clear 502, a refused one never leaves it.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from services.gateway.api import create_app
from services.gateway.settings import GatewaySettings
from tests.support import free_port

ADMIN = "hk_access_test_admin_key_0123456789"
RANKS = {"viewer": 0, "operator": 1, "admin": 2}


@dataclass
class Gateway:
    app: FastAPI
    client: httpx.AsyncClient
    keys: dict[str, str]  # role (or "disabled") -> secret

    def auth(self, who: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.keys[who]}"}


def _settings(tmp_path: Path, **overrides: Any) -> GatewaySettings:
    nowhere = f"http://127.0.0.1:{free_port()}"
    values: dict[str, Any] = {
        "database_url": f"sqlite+aiosqlite:///{tmp_path / 'gateway.db'}",
        "admin_key": ADMIN,
        "scoring_url": nowhere,
        "outreach_url": nowhere,
        "ingest_url": nowhere,
        "downstream_timeout_seconds": 0.5,
        "downstream_retries": 0,
        "rate_limit_per_second": 1000,
        "rate_limit_burst": 10_000,
        **overrides,
    }
    return GatewaySettings(**values)


@pytest.fixture
async def gateway(tmp_path: Path) -> AsyncIterator[Gateway]:
    app = create_app(_settings(tmp_path))
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gateway") as client,
    ):
        keys = {"admin": ADMIN}
        for role in ("viewer", "operator"):
            keys[role] = await _new_key(client, f"{role}-key", role)
        keys["disabled"] = await _new_key(client, "disabled-key", "admin")
        disabled = await client.post("/api/v1/keys/disabled-key/disable", headers=_bearer(ADMIN))
        assert disabled.status_code == 200, disabled.text
        yield Gateway(app, client, keys)


def _bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


async def _new_key(client: httpx.AsyncClient, name: str, role: str) -> str:
    response = await client.post("/api/v1/keys", json={"name": name, "role": role}, headers=_bearer(ADMIN))
    assert response.status_code == 201, response.text
    return str(response.json()["key"])


def operator_routes(app: FastAPI) -> list[tuple[str, str, str, bool]]:
    """(method, concrete path, required role, has body) for every route in the OpenAPI document."""
    found = []
    for template, operations in app.openapi()["paths"].items():
        path = re.sub(r"\{[^}]+\}", "x-1", template)
        for method, operation in operations.items():
            found.append((method.upper(), path, operation.get("x-required-role"), "requestBody" in operation))
    return found


def test_every_route_documents_its_role(gateway: Gateway) -> None:
    routes = operator_routes(gateway.app)
    assert len(routes) > 40
    for method, path, role, _ in routes:
        assert role in {*RANKS, "none"}, f"{method} {path} does not say which role it needs"
        assert (role == "none") == path.startswith("/public/"), f"{method} {path}: only public routes go keyless"


async def _call(gateway: Gateway, method: str, path: str, has_body: bool, headers: dict[str, str]) -> httpx.Response:
    return await gateway.client.request(method, path, json={} if has_body else None, headers=headers)


async def test_authorization_matrix_on_every_route(gateway: Gateway) -> None:
    checked = 0
    for method, path, role, has_body in operator_routes(gateway.app):
        if role == "none":
            continue
        where = f"{method} {path}"
        missing = await _call(gateway, method, path, has_body, {})
        assert missing.status_code == 401, where
        assert "API key" in missing.json()["error"] and missing.headers["www-authenticate"].startswith("Bearer")
        unknown = await _call(gateway, method, path, has_body, _bearer("hk_not_a_key"))
        assert unknown.status_code == 401, where
        disabled = await _call(gateway, method, path, has_body, gateway.auth("disabled"))
        assert disabled.status_code == 403 and "disabled" in disabled.json()["error"], where
        for who, rank in RANKS.items():
            response = await _call(gateway, method, path, has_body, gateway.auth(who))
            if rank < RANKS[role]:
                assert response.status_code == 403, f"{where} as {who}: {response.text}"
                assert f"needs the {role} role" in response.json()["error"]
            else:
                assert response.status_code not in (401, 403), f"{where} as {who}: {response.text}"
        checked += 1
    assert checked > 40


async def test_public_unsubscribe_needs_no_key_and_reports_the_missing_service(gateway: Gateway) -> None:
    response = await gateway.client.get("/public/v1/unsubscribe/some-token")
    assert response.status_code == 502
    assert response.json() == {"error": "outreach is unavailable; try again shortly"}


async def test_me_tells_the_console_who_is_logged_in(gateway: Gateway) -> None:
    response = await gateway.client.get("/api/v1/me", headers=gateway.auth("operator"))
    assert response.json() == {"name": "operator-key", "role": "operator"}


async def test_created_key_is_shown_once_and_listed_without_its_secret(gateway: Gateway) -> None:
    created = await gateway.client.post(
        "/api/v1/keys",
        json={"name": "crm-desk", "role": "viewer", "description": "front desk"},
        headers=gateway.auth("admin"),
    )
    assert created.status_code == 201
    secret = created.json()["key"]
    assert secret.startswith("hk_") and len(secret) > 40
    assert created.json()["key_prefix"] == secret[:10]
    listing = await gateway.client.get("/api/v1/keys", headers=gateway.auth("admin"))
    assert secret not in listing.text and "key_hash" not in listing.text
    desk = next(k for k in listing.json() if k["name"] == "crm-desk")
    assert desk == desk | {"role": "viewer", "enabled": True, "created_by": "admin", "description": "front desk"}
    assert "key" not in desk
    one = await gateway.client.get("/api/v1/keys/crm-desk", headers=gateway.auth("admin"))
    assert one.json()["name"] == "crm-desk" and "key" not in one.json()
    me = await gateway.client.get("/api/v1/me", headers=_bearer(secret))
    assert me.json() == {"name": "crm-desk", "role": "viewer"}


async def test_rotation_retires_the_old_secret_at_once(gateway: Gateway) -> None:
    old = gateway.keys["operator"]
    rotated = await gateway.client.post("/api/v1/keys/operator-key/rotate", headers=gateway.auth("admin"))
    assert rotated.status_code == 200
    new = rotated.json()["key"]
    assert new != old and rotated.json()["rotated_at"]
    assert (await gateway.client.get("/api/v1/me", headers=_bearer(old))).status_code == 401
    assert (await gateway.client.get("/api/v1/me", headers=_bearer(new))).json()["role"] == "operator"


async def test_disable_and_enable(gateway: Gateway) -> None:
    viewer = gateway.auth("viewer")
    disabled = await gateway.client.post("/api/v1/keys/viewer-key/disable", headers=gateway.auth("admin"))
    assert disabled.json()["enabled"] is False
    refused = await gateway.client.get("/api/v1/me", headers=viewer)
    assert refused.status_code == 403 and "viewer-key" in refused.json()["error"]
    enabled = await gateway.client.post("/api/v1/keys/viewer-key/enable", headers=gateway.auth("admin"))
    assert enabled.json()["enabled"] is True
    assert (await gateway.client.get("/api/v1/me", headers=viewer)).status_code == 200


async def test_key_management_refusals_say_what_to_do(gateway: Gateway) -> None:
    admin = gateway.auth("admin")
    taken = await gateway.client.post("/api/v1/keys", json={"name": "viewer-key", "role": "viewer"}, headers=admin)
    assert taken.status_code == 409 and "choose another name" in taken.json()["error"]
    reserved = await gateway.client.post("/api/v1/keys", json={"name": "admin", "role": "admin"}, headers=admin)
    assert reserved.status_code == 409 and "reserved" in reserved.json()["error"]
    bad_role = await gateway.client.post("/api/v1/keys", json={"name": "x", "role": "root"}, headers=admin)
    assert bad_role.status_code == 422 and any("role" in p for p in bad_role.json()["problems"])
    bad_name = await gateway.client.post("/api/v1/keys", json={"name": "a b", "role": "viewer"}, headers=admin)
    assert bad_name.status_code == 422 and any("name" in p for p in bad_name.json()["problems"])
    unknown = await gateway.client.post("/api/v1/keys/nobody/disable", headers=admin)
    assert unknown.status_code == 404 and "GET /api/v1/keys" in unknown.json()["error"]
    for verb in ("disable", "rotate"):
        protected = await gateway.client.post(f"/api/v1/keys/admin/{verb}", headers=admin)
        assert protected.status_code == 409 and "HUITOU_GATEWAY_ADMIN_KEY" in protected.json()["error"], verb
    assert (await gateway.client.get("/api/v1/me", headers=admin)).status_code == 200


async def test_key_changes_are_audited_without_secrets(gateway: Gateway) -> None:
    admin = gateway.auth("admin")
    created = await gateway.client.post("/api/v1/keys", json={"name": "auditor", "role": "viewer"}, headers=admin)
    rotated = await gateway.client.post("/api/v1/keys/auditor/rotate", headers=admin)
    await gateway.client.post("/api/v1/keys/auditor/disable", headers=admin)
    page = (await gateway.client.get("/api/v1/audit", params={"target": "/api/v1/keys/auditor"}, headers=admin)).json()
    actions = [entry["action"] for entry in page["items"]]
    assert actions == ["POST /api/v1/keys/{name}/disable", "POST /api/v1/keys/{name}/rotate"]
    disable = page["items"][0]
    assert disable["actor"] == "admin" and disable["status"] == 200
    assert disable["before"]["enabled"] is True and disable["after"]["enabled"] is False
    everything = (await gateway.client.get("/api/v1/audit", params={"limit": 500}, headers=admin)).text
    assert created.json()["key"] not in everything and rotated.json()["key"] not in everything
    created_entry = (
        await gateway.client.get("/api/v1/audit", params={"action": "POST /api/v1/keys", "limit": 500}, headers=admin)
    ).json()["items"]
    assert any(e["target"] == "/api/v1/keys" and e["after"]["name"] == "auditor" for e in created_entry)


async def test_audit_filters_and_pages(gateway: Gateway) -> None:
    admin = gateway.auth("admin")
    for n in range(3):
        await gateway.client.post("/api/v1/keys", json={"name": f"k{n}", "role": "viewer"}, headers=admin)
    first = (await gateway.client.get("/api/v1/audit", params={"limit": 2}, headers=admin)).json()
    second = (await gateway.client.get("/api/v1/audit", params={"limit": 2, "offset": 2}, headers=admin)).json()
    assert first["total"] == second["total"] >= 6  # 3 set-up writes + 3 here
    assert [e["id"] for e in first["items"]] == sorted((e["id"] for e in first["items"]), reverse=True)
    assert first["items"][-1]["id"] > second["items"][0]["id"]
    by_actor = (await gateway.client.get("/api/v1/audit", params={"actor": "nobody"}, headers=admin)).json()
    assert by_actor == {"items": [], "total": 0, "limit": 50, "offset": 0}
    naive = await gateway.client.get("/api/v1/audit", params={"since": "2030-01-01T00:00:00"}, headers=admin)
    assert naive.status_code == 422 and "since" in naive.json()["problems"][0]
    future = await gateway.client.get("/api/v1/audit", params={"since": "2030-01-01T00:00:00Z"}, headers=admin)
    assert future.json()["total"] == 0


async def test_rate_limit_per_key_answers_429_with_retry_after(tmp_path: Path) -> None:
    app = create_app(_settings(tmp_path, rate_limit_per_second=0.5, rate_limit_burst=3))
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gateway") as client,
    ):
        other = await _new_key(client, "other", "viewer")  # the admin key's first request
        codes = [(await client.get("/api/v1/me", headers=_bearer(ADMIN))).status_code for _ in range(3)]
        assert codes == [200, 200, 429]
        limited = await client.get("/api/v1/me", headers=_bearer(ADMIN))
        assert limited.status_code == 429
        assert int(limited.headers["retry-after"]) >= 1
        assert "rate limit exceeded" in limited.json()["error"]
        assert (await client.get("/api/v1/me", headers=_bearer(other))).status_code == 200  # its own bucket


async def test_public_routes_are_limited_per_client_address(tmp_path: Path) -> None:
    app = create_app(_settings(tmp_path, public_rate_limit_per_second=0.1, public_rate_limit_burst=2))
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gateway") as client,
    ):
        codes = [(await client.get("/public/v1/unsubscribe/t")).status_code for _ in range(3)]
    assert codes == [502, 502, 429]
