"""Schemathesis over the gateway's OpenAPI document: every operation, fed generated input with an
admin key, never answers with a server error (5xx) — invalid input is the caller's mistake and
gets a 4xx that says what to fix.

The gateway runs in-process over the real ingest, scoring and outreach apps (their own SQLite
databases and a real broker), all started by one lifespan. Examples per operation:
HUITOU_SCHEMATHESIS_EXAMPLES (default 12).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from fastapi import FastAPI
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.python import asgi
from starlette.types import Receive, Scope, Send

from services.gateway.api import create_app as create_gateway
from services.gateway.settings import GatewaySettings
from services.ingest.api import create_app as create_ingest
from services.ingest.settings import IngestSettings
from services.outreach.api import create_app as create_outreach
from services.outreach.settings import OutreachSettings
from services.scoring.api import create_app as create_scoring
from services.scoring.settings import ScoringSettings
from shared.kafka import ensure_topics
from tests.integration.test_gateway_composition import ServiceRouter, _ready
from tests.support import Broker, eventually, free_port

pytestmark = [
    pytest.mark.broker,
    # schemathesis' own strategies draw from `random`; not this project's concern
    pytest.mark.filterwarnings("ignore::hypothesis.errors.HypothesisDeprecationWarning"),
]

ADMIN = "hk_schema_admin_key_0123456789abcdef"
EXAMPLES = int(os.environ.get("HUITOU_SCHEMATHESIS_EXAMPLES", "12"))


class ComposedStack:
    """The gateway's ASGI app, whose lifespan also starts (and stops) the services it composes."""

    def __init__(self, gateway: FastAPI, services: dict[str, FastAPI]) -> None:
        self.gateway = gateway
        self.services = services

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "lifespan":
            await self.gateway(scope, receive, send)
            return
        await receive()  # lifespan.startup
        try:
            async with AsyncExitStack() as running:
                for app in [*self.services.values(), self.gateway]:
                    await running.enter_async_context(app.router.lifespan_context(app))
                for name, app in self.services.items():
                    producer = app.state.runtime.producer
                    await eventually(lambda p=producer: _ready(p), 30, f"{name}'s producer")
                await send({"type": "lifespan.startup.complete"})
                await receive()  # lifespan.shutdown
        except Exception as error:
            await send({"type": "lifespan.startup.failed", "message": repr(error)})
            return
        await send({"type": "lifespan.shutdown.complete"})


@pytest.fixture(scope="module")
def api_schema(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    root: Path = tmp_path_factory.mktemp("schema")
    broker = Broker(free_port(), root / "broker.log")
    broker.start()
    try:
        import asyncio

        asyncio.run(ensure_topics(broker.bootstrap))
        common: dict[str, Any] = {"kafka_bootstrap_servers": broker.bootstrap, "var_dir": root}
        services = {
            "ingest": create_ingest(IngestSettings(database_url=f"sqlite+aiosqlite:///{root / 'ingest.db'}", **common)),
            "scoring": create_scoring(
                ScoringSettings(database_url=f"sqlite+aiosqlite:///{root / 'scoring.db'}", **common)
            ),
            "outreach": create_outreach(
                OutreachSettings(
                    database_url=f"sqlite+aiosqlite:///{root / 'outreach.db'}", smtp_port=free_port(), **common
                )
            ),
        }
        gateway = create_gateway(
            GatewaySettings(
                database_url=f"sqlite+aiosqlite:///{root / 'gateway.db'}",
                admin_key=ADMIN,
                scoring_url="http://scoring",
                outreach_url="http://outreach",
                ingest_url="http://ingest",
                rate_limit_per_second=10_000,
                rate_limit_burst=100_000,
                public_rate_limit_per_second=10_000,
                public_rate_limit_burst=100_000,
            ),
            transport=ServiceRouter(services),
        )
        yield schemathesis.openapi.from_asgi("/openapi.json", ComposedStack(gateway, services))
        asgi.shutdown_lifespans()  # the services drain before the broker goes away
    finally:
        broker.stop()


schema = schemathesis.pytest.from_fixture("api_schema")


@schema.parametrize()
@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
def test_no_operation_answers_with_a_server_error(case: Any) -> None:
    response = case.call(headers={"Authorization": f"Bearer {ADMIN}"}, timeout=30)
    case.validate_response(response, checks=[not_a_server_error])
