"""The gateway answers 502/504 quickly when a service is down or hangs — never a hang itself."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from services.gateway.api import create_app
from services.gateway.settings import GatewaySettings
from tests.support import free_port

ADMIN = "hk_gateway_test_admin_key_123456"


@dataclass
class Silent:
    port: int
    request_lines: list[str] = field(default_factory=list)


@pytest.fixture
async def silent_server() -> AsyncIterator[Silent]:
    """Accepts connections, reads the request line, and never answers."""
    held: list[asyncio.StreamWriter] = []
    silent = Silent(0)

    async def hold(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)
        silent.request_lines.append((await reader.readline()).decode().strip())

    server = await asyncio.start_server(hold, "127.0.0.1", 0)
    silent.port = server.sockets[0].getsockname()[1]
    yield silent
    for writer in held:
        writer.close()
    server.close()


@pytest.fixture
async def gateway(tmp_path: Path, silent_server: Silent) -> AsyncIterator[httpx.AsyncClient]:
    settings = GatewaySettings(
        database_url=f"sqlite+aiosqlite:///{tmp_path / 'gateway.db'}",
        admin_key=ADMIN,
        scoring_url=f"http://127.0.0.1:{free_port()}",  # nothing listens here
        outreach_url=f"http://127.0.0.1:{silent_server.port}",  # accepts, never answers
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


async def test_a_write_to_a_hanging_service_is_a_504_that_says_it_may_have_happened(
    gateway: httpx.AsyncClient, silent_server: Silent
) -> None:
    started = time.monotonic()
    response = await gateway.post("/api/v1/operator-tasks/task-1/resolve", json={"resolution": "called back"})
    assert response.status_code == 504
    assert response.json() == {
        "error": "outreach did not answer within 0.5s; the change may or may not have been applied, "
        "check before trying again"
    }
    assert time.monotonic() - started < 0.5 + 1.5
    assert silent_server.request_lines == ["POST /internal/v1/tasks/task-1/resolve HTTP/1.1"]  # not retried
    audit = (await gateway.get("/api/v1/audit", params={"target": "/api/v1/operator-tasks/task-1/resolve"})).json()
    assert [entry["status"] for entry in audit["items"]] == [504]  # recorded: it may have happened


async def test_a_write_whose_before_state_cannot_be_read_is_not_sent(
    gateway: httpx.AsyncClient, silent_server: Silent
) -> None:
    response = await gateway.post("/api/v1/touches/t-1/cancel", json={"reason": "asked to stop"})
    assert response.status_code == 504
    assert response.json() == {"error": "outreach did not answer in time; try again shortly"}
    assert silent_server.request_lines == ["GET /internal/v1/touches/t-1 HTTP/1.1"] * 2  # the GET, retried; no POST
    audit = (await gateway.get("/api/v1/audit", params={"target": "/api/v1/touches/t-1/cancel"})).json()
    assert [(entry["status"], entry["before"]) for entry in audit["items"]] == [(504, None)]


async def test_a_write_to_a_stopped_service_is_a_502_and_audited(gateway: httpx.AsyncClient) -> None:
    response = await gateway.post("/api/v1/customers/c-1/tags", json={"tags": ["x"]})
    assert response.status_code == 502
    assert response.json() == {"error": "scoring is unavailable; try again shortly"}
    audit = (await gateway.get("/api/v1/audit", params={"customer_id": "c-1"})).json()
    assert [(e["action"], e["status"]) for e in audit["items"]] == [("POST /api/v1/customers/{customer_id}/tags", 502)]


async def test_an_erasure_reports_which_services_could_not_erase(gateway: httpx.AsyncClient) -> None:
    started = time.monotonic()
    response = await gateway.delete("/api/v1/customers/c-1")
    assert response.status_code == 502
    report = response.json()
    assert report["complete"] is False
    assert report["services"]["scoring"] == {"status": "failed", "detail": "scoring is unavailable; try again shortly"}
    assert report["services"]["outreach"]["status"] == "failed"
    assert report["services"]["gateway"]["status"] == "erased"
    assert time.monotonic() - started < 0.5 * 2 + 2  # both in parallel, each within its timeout


async def test_the_gateway_stays_ready_while_a_service_is_down(gateway: httpx.AsyncClient) -> None:
    ready = await gateway.get("/readyz")
    assert ready.status_code == 200 and ready.json()["checks"] == {"database": "ok"}
