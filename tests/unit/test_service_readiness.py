"""/readyz: gating checks decide 200/503; reported ones (ingest's broker) are shown, never gating."""

from __future__ import annotations

import asyncio
import time

import httpx
from fastapi import FastAPI

from shared.observability import ServiceMetrics
from shared.service import ReadinessCheck, install_common


async def ok() -> None:
    return None


async def down() -> None:
    raise ConnectionError("refused")


async def hangs() -> None:
    await asyncio.sleep(60)


def app_with(database: ReadinessCheck, broker: ReadinessCheck, *, broker_gates: bool = False) -> FastAPI:
    app, metrics = FastAPI(), ServiceMetrics()
    if broker_gates:  # scoring, outreach: no use serving without the broker
        install_common(app, service="scoring", metrics=metrics, readiness={"database": database, "broker": broker})
    else:  # as ingest wires it
        gating, reported = {"database": database}, {"broker": broker}
        install_common(app, service="ingest", metrics=metrics, readiness=gating, reported=reported)
    return app


async def readyz(app: FastAPI) -> httpx.Response:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://service") as client:
        return await client.get("/readyz")


async def test_ready_when_database_and_broker_answer() -> None:
    response = await readyz(app_with(ok, ok))
    assert response.status_code == 200
    assert response.json() == {
        "status": "ready",
        "service": "ingest",
        "checks": {"database": "ok"},
        "not_gating": {"broker": "ok"},
    }


async def test_a_reported_broker_that_is_down_is_shown_but_the_service_stays_ready() -> None:
    response = await readyz(app_with(ok, down))
    assert response.status_code == 200
    assert response.json()["not_gating"] == {"broker": "failing: ConnectionError('refused')"}


async def test_a_gating_broker_that_is_down_makes_the_service_not_ready() -> None:
    response = await readyz(app_with(ok, down, broker_gates=True))
    assert response.status_code == 503
    assert response.json()["checks"] == {"database": "ok", "broker": "failing: ConnectionError('refused')"}
    assert "not_gating" not in response.json()


async def test_database_down_is_not_ready() -> None:
    response = await readyz(app_with(down, ok))
    assert response.status_code == 503
    assert response.json()["status"] == "not ready"
    assert response.json()["checks"] == {"database": "failing: ConnectionError('refused')"}


async def test_hung_checks_do_not_hold_the_answer_past_one_check_timeout() -> None:
    started = time.monotonic()
    response = await readyz(app_with(hangs, hangs))
    assert response.status_code == 503
    assert response.json()["checks"]["database"].startswith("failing: TimeoutError")
    assert response.json()["not_gating"]["broker"].startswith("failing: TimeoutError")
    assert time.monotonic() - started < 5  # checked concurrently, 3 s each, not 6 s in a row
