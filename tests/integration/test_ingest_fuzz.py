"""Schema fuzzing of ingest's OpenAPI document (schemathesis), in-process, on a real broker.

Every operation gets generated requests, valid and invalid ones: no answer may be a 5xx, and
every 4xx must say what to fix. HUITOU_FUZZ_EXAMPLES sets the examples per operation (default 50;
the fault suite runs it with thousands).
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from fastapi import FastAPI
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.python import asgi

from services.ingest.api import create_app
from shared.kafka import ensure_topics
from tests.integration.test_ingest_support import INTERNAL_TOKEN, WRITE_KEY, basic, ingest_settings
from tests.support import Broker, free_port

pytestmark = pytest.mark.broker
EXAMPLES = int(os.environ.get("HUITOU_FUZZ_EXAMPLES", "50"))


@pytest.fixture(scope="module")
def fuzzed_app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FastAPI]:
    tmp: Path = tmp_path_factory.mktemp("fuzz")
    broker = Broker(free_port(), tmp / "broker.log")
    broker.start()
    try:
        asyncio.run(ensure_topics(broker.bootstrap))
        yield create_app(ingest_settings(broker.bootstrap, tmp))
    finally:
        asgi.shutdown_lifespans()  # the app's lifespan ran in schemathesis' event-loop thread
        broker.stop()


@pytest.fixture(scope="module")
def api_schema(fuzzed_app: FastAPI) -> Any:
    loaded = schemathesis.openapi.from_asgi("/openapi.json", fuzzed_app)  # also starts the lifespan
    deadline = time.monotonic() + 20
    while not fuzzed_app.state.runtime.producer.ready:
        assert time.monotonic() < deadline, "ingest's producer did not reach the broker"
        time.sleep(0.05)
    return loaded


schema = schemathesis.pytest.from_fixture("api_schema")


@schema.parametrize()
@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))
def test_no_5xx_and_every_refusal_explains_itself(case: Any) -> None:
    headers = {**basic(WRITE_KEY), "X-Huitou-Internal-Token": INTERNAL_TOKEN}
    response = case.call(headers=headers)
    case.validate_response(response, checks=[not_a_server_error])
    if 400 <= response.status_code < 500:
        body = response.json()
        assert isinstance(body, dict) and isinstance(body.get("error"), str) and body["error"].strip(), (
            f"{case.method} {case.path} answered {response.status_code} without saying why: {response.text[:300]}"
        )
