"""One trace id from the HTTP request to the touch, across the running stack: a CloudEvent posted
in binary mode with a W3C ``traceparent`` header becomes a customer.updated on huitou.customers
and a scheduled follow-up on huitou.touches, each with a ``traceparent`` Kafka header of that
trace — and a span of its own."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from services.outreach.policy import in_holdout
from services.outreach.settings import OutreachSettings
from shared.topics import CUSTOMERS, TOUCHES
from shared.tracing import TRACEPARENT, new_span_id, new_trace_id, trace_id_from_headers, traceparent
from tests.support import RunningStack, dev_stack, read_topic

pytestmark = [pytest.mark.e2e, pytest.mark.broker]
WRITE_KEY = "wk_e2e_trace_key_0123456789abcdef"
ADMIN_KEY = "hk_e2e_trace_admin_0123456789abcdef"


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningStack]:
    env = {"HUITOU_DEV_WRITE_KEY": WRITE_KEY, "HUITOU_DEV_ADMIN_KEY": ADMIN_KEY}
    with dev_stack(tmp_path_factory.mktemp("var"), env) as running:
        yield running


def records_of(stack: RunningStack, topic: str, customer_id: str, until: Callable[[list[Any]], bool]) -> list[Any]:
    """The customer's records on ``topic``, polled until ``until`` holds for them."""
    bootstrap = f"127.0.0.1:{stack.ports['broker']}"
    deadline = time.monotonic() + 60
    mine: list[Any] = []
    while time.monotonic() < deadline:
        records = asyncio.run(read_topic(bootstrap, topic, timeout=5))
        mine = [r for r in records if r.key == customer_id.encode()]
        if until(mine):
            return mine
        time.sleep(0.5)
    raise AssertionError(f"records for {customer_id} on {topic} within 60 s: {mine}")


def plan_of(record: Any) -> str:
    return str(json.loads(record.value)["payload"]["plan"])


def test_the_trace_of_a_cloudevent_reaches_the_customer_update_and_the_touch(stack: RunningStack) -> None:
    trace_id = new_trace_id()
    caller_span = new_span_id()
    # Outside the global holdout (the stack's default salt and share), or the follow-up is suppressed.
    holdout, stamp = OutreachSettings(), time.time_ns()
    customer_id = next(
        f"trace-{stamp}-{i}"
        for i in range(1000)
        if not in_holdout(f"trace-{stamp}-{i}", salt=holdout.holdout_salt, share=holdout.holdout_share)
    )
    occurred = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=5)
    posted = httpx.post(
        stack.url("ingest") + "/v1/cloudevents",
        auth=(WRITE_KEY, ""),
        headers={
            "ce-specversion": "1.0",
            "ce-id": f"{customer_id}-order",
            "ce-source": "/pos/e2e",
            "ce-type": "com.example.pos.purchase",
            "ce-time": occurred.isoformat(),
            "ce-customerid": customer_id,
            TRACEPARENT: traceparent(trace_id, caller_span),
        },
        json={"order_id": "trace-order-1", "amount": "88.80", "currency": "CNY"},
    )
    assert posted.status_code == 202, posted.text
    assert posted.json()["accepted"] == [f"{customer_id}-order"]

    [update] = records_of(stack, CUSTOMERS, customer_id, until=bool)
    assert json.loads(update.value)["trace_id"] == trace_id
    assert trace_id_from_headers(update.headers) == trace_id

    touches = records_of(stack, TOUCHES, customer_id, until=lambda rs: "post_purchase_follow_up" in map(plan_of, rs))
    [follow_up] = [r for r in touches if plan_of(r) == "post_purchase_follow_up"]
    assert json.loads(follow_up.value)["payload"]["status"] == "scheduled"
    for touch in touches:  # the follow-up, and whatever else the purchase planned
        assert trace_id_from_headers(touch.headers) == trace_id, plan_of(touch)

    # Each hop is a span of its own within the caller's trace.
    spans = {dict(r.headers)[TRACEPARENT].decode().split("-")[2] for r in (update, follow_up)}
    assert len(spans) == 2 and caller_span not in spans
