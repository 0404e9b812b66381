"""Schemathesis at volume: at least 10,000 generated requests, valid and invalid, across every
operation of ingest's and the gateway's OpenAPI documents — and not one 5xx.

Both apps run in-process over ASGI (the fastest way to push this many cases): ingest on a real
broker; the gateway over the real ingest, scoring and outreach apps (tests/integration/
test_gateway_schema.py's composition). Cases are counted as they are sent; the last test asserts
the total. HUITOU_FAULT_FUZZ_INGEST / HUITOU_FAULT_FUZZ_GATEWAY set hypothesis' max_examples per
operation; schemathesis runs several phases and generation modes per operation, so it sends
many more cases than that — the count is what is asserted.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.python import asgi

from services.gateway.api import create_app as create_gateway
from services.gateway.settings import GatewaySettings
from services.ingest.api import create_app as create_ingest
from services.ingest.settings import IngestSettings
from services.outreach.api import create_app as create_outreach
from services.outreach.settings import OutreachSettings
from services.scoring.api import create_app as create_scoring
from services.scoring.settings import ScoringSettings
from shared.kafka import ensure_topics
from tests.faults.conftest import record_figures
from tests.integration.test_gateway_composition import ServiceRouter
from tests.integration.test_gateway_schema import ComposedStack
from tests.integration.test_ingest_support import INTERNAL_TOKEN, WRITE_KEY, basic, ingest_settings
from tests.support import Broker, free_port

pytestmark = [
    pytest.mark.faults,
    pytest.mark.broker,
    pytest.mark.filterwarnings("ignore::hypothesis.errors.HypothesisDeprecationWarning"),
]
ADMIN = "hk_fuzz_volume_admin_key_0123456789abcdef"
INGEST_EXAMPLES = int(os.environ.get("HUITOU_FAULT_FUZZ_INGEST", "100"))
GATEWAY_EXAMPLES = int(os.environ.get("HUITOU_FAULT_FUZZ_GATEWAY", "80"))
MINIMUM = int(os.environ.get("HUITOU_FAULT_FUZZ_MINIMUM", "10000"))
CASES: Counter[str] = Counter()
STATUSES: Counter[str] = Counter()
STARTED: list[float] = []  # when this module's first fixture started


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Broker]:
    STARTED.append(time.monotonic())
    running = Broker(free_port(), tmp_path_factory.mktemp("fuzz-broker") / "broker.log")
    running.start()
    try:
        asyncio.run(ensure_topics(running.bootstrap))
        yield running
    finally:
        running.stop()


@pytest.fixture(scope="module")
def ingest_schema(broker: Broker, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    root: Path = tmp_path_factory.mktemp("fuzz-ingest")
    app = create_ingest(ingest_settings(broker.bootstrap, root))
    loaded = schemathesis.openapi.from_asgi("/openapi.json", app)  # also starts the lifespan
    deadline = time.monotonic() + 30
    while not app.state.runtime.producer.ready:
        assert time.monotonic() < deadline, "ingest's producer did not reach the broker"
        time.sleep(0.05)
    yield loaded
    asgi.shutdown_lifespans()


@pytest.fixture(scope="module")
def gateway_schema(broker: Broker, ingest_schema: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    root: Path = tmp_path_factory.mktemp("fuzz-gateway")
    common: dict[str, Any] = {"kafka_bootstrap_servers": broker.bootstrap, "var_dir": root}
    outreach_db = f"sqlite+aiosqlite:///{root / 'outreach.db'}"
    services = {
        "ingest": create_ingest(IngestSettings(database_url=f"sqlite+aiosqlite:///{root / 'ingest.db'}", **common)),
        "scoring": create_scoring(ScoringSettings(database_url=f"sqlite+aiosqlite:///{root / 'scoring.db'}", **common)),
        "outreach": create_outreach(OutreachSettings(database_url=outreach_db, smtp_port=free_port(), **common)),
    }
    gateway = create_gateway(
        GatewaySettings(
            database_url=f"sqlite+aiosqlite:///{root / 'gateway.db'}",
            admin_key=ADMIN,
            scoring_url="http://scoring",
            outreach_url="http://outreach",
            ingest_url="http://ingest",
            rate_limit_per_second=100_000,
            rate_limit_burst=1_000_000,
            public_rate_limit_per_second=100_000,
            public_rate_limit_burst=1_000_000,
        ),
        transport=ServiceRouter(services),
    )
    yield schemathesis.openapi.from_asgi("/openapi.json", ComposedStack(gateway, services))
    asgi.shutdown_lifespans()


ingest = schemathesis.pytest.from_fixture("ingest_schema")
gateway = schemathesis.pytest.from_fixture("gateway_schema")


def count(app: str, response: Any) -> None:
    CASES[app] += 1
    STATUSES[f"{app} {response.status_code // 100}xx"] += 1


@ingest.parametrize()
@settings(max_examples=INGEST_EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
def test_ingest_never_answers_5xx(case: Any) -> None:
    response = case.call(headers={**basic(WRITE_KEY), "X-Huitou-Internal-Token": INTERNAL_TOKEN})
    count("ingest", response)
    case.validate_response(response, checks=[not_a_server_error])


@gateway.parametrize()
@settings(max_examples=GATEWAY_EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
def test_gateway_never_answers_5xx(case: Any) -> None:
    response = case.call(headers={"Authorization": f"Bearer {ADMIN}"}, timeout=30)
    count("gateway", response)
    case.validate_response(response, checks=[not_a_server_error])


def test_the_fuzz_reached_its_volume() -> None:
    """Runs after the two fuzz tests above (file order): the cases they really sent."""
    total = sum(CASES.values())
    if total == 0:
        pytest.skip("counts the cases of the two fuzz tests above; run it with them")
    seconds = round(time.monotonic() - STARTED[0])
    record_figures(
        "schemathesis volume", {"cases": dict(CASES), "total": total, "answers": dict(STATUSES), "seconds": seconds}
    )
    assert STATUSES["ingest 5xx"] == STATUSES["gateway 5xx"] == 0
    assert total >= MINIMUM, f"only {total} schemathesis cases ran ({dict(CASES)}); raise the examples per operation"
