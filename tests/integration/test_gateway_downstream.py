"""The gateway answers 502/504 quickly when a service is down or hangs — never a hang itself."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from services.gateway.api import create_app
from services.gateway.settings import GatewaySettings
from tests.support import free_port

ADMIN = "hk_gateway_test_admin_key_123456"


@pytest.fixture
async def silent_server() -> AsyncIterator[int]:
    """Accepts connections and never answers."""
    held: list[asyncio.StreamWriter] = []

    async def hold(_reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)

    server = await asyncio.start_server(hold, "127.0.0.1", 0)
    yield server.sockets[0].getsockname()[1]
    for writer in held:
        writer.close()
    server.close()


@pytest.fixture
async def gateway(tmp_path: Path, silent_server: int) -> AsyncIterator[httpx.AsyncClient]:
    settings = GatewaySettings(
        database_url=f"sqlite+aiosqlite:///{tmp_path / 'gateway.db'}",
        admin_key=ADMIN,
        scoring_url=f"http://127.0.0.1:{free_port()}",  # nothing listens here
        outreach_url=f"http://127.0.0.1:{silent_server}",  # accepts, never answers
        downstream_timeout_seconds=0.5,
        downstream_retries=1,
    )
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(
            transport=transport, base_url="http://gateway", headers={"Authorization": f"Bearer {ADMIN}"}
        ) as client:
            yield client


async def test_service_down_is_a_clear_502(gateway: httpx.AsyncClient) -> None:
    started = time.monotonic()
    response = await gateway.get("/api/v1/customers/c-1")
    assert response.status_code == 502
    assert response.json() == {"error": "scoring is unavailable; try again shortly"}
    assert time.monotonic() - started < 5


async def test_service_hanging_is_a_504_within_the_timeout(gateway: httpx.AsyncClient) -> None:
    started = time.monotonic()
    response = await gateway.get("/api/v1/customers/c-1/touches")
    assert response.status_code == 504
    assert "did not answer in time" in response.json()["error"]
    assert time.monotonic() - started < 0.5 * 2 + 2  # two attempts of 0.5 s, plus slack


async def test_no_key_and_unknown_key_are_401_before_any_downstream_call(gateway: httpx.AsyncClient) -> None:
    assert (await gateway.get("/api/v1/customers/c-1", headers={"Authorization": ""})).status_code == 401
    assert (await gateway.get("/api/v1/customers/c-1", headers={"Authorization": "Bearer x"})).status_code == 401
