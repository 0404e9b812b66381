"""Outreach's /metrics, from the process as it runs: touches by status and the dispatcher's due
backlog follow what the touches table holds."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from prometheus_client.parser import text_string_to_metric_families

from shared.topics import CUSTOMERS
from tests.integration import test_outreach_pipeline as pipeline_tests
from tests.support import Broker, eventually

pytestmark = pytest.mark.broker
outreach = pipeline_tests.outreach  # the outreach app's lifespan on a real broker, database and SMTP server


async def touch_gauges(running: pipeline_tests.Running) -> dict[str, float]:
    text = (await running.api.get("/metrics")).text
    gauges: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "huitou_outreach_touches":
                gauges[sample.labels["status"]] = sample.value
            elif sample.name == "huitou_outreach_touches_due":
                gauges["due"] = sample.value
    return gauges


async def test_touches_by_status_on_metrics(outreach: pipeline_tests.Running) -> None:
    cid = pipeline_tests.customer_id("census", outreach.settings)
    two_hours_ago = datetime.now(UTC) - timedelta(hours=2)
    # A first purchase two hours ago: the welcome (due an hour after it) goes out at once, the
    # follow-up (due three days after it) waits.
    first = pipeline_tests.updated(
        cid, 1, "purchase", pipeline_tests.snapshot(order_count=1), order_id="o-1", occurred=two_hours_ago
    )
    await outreach.produce(CUSTOMERS, first)
    await outreach.touch_of(cid, "welcome", "sent")

    async def counted() -> dict[str, float] | None:
        gauges = await touch_gauges(outreach)
        return gauges if gauges.get("sent") == 1 else None

    gauges = await eventually(counted, timeout=30, what="the census to count the sent welcome")
    assert gauges["scheduled"] == 1  # the follow-up
    assert gauges["due"] == 0  # nothing overdue: the dispatcher keeps up
    assert gauges["failed"] == 0 and gauges["suppressed"] == 0 and gauges["pending_approval"] == 0


async def test_a_replica_that_does_not_dispatch_still_reports_the_touches(broker: Broker, database_url: str) -> None:
    async with pipeline_tests.running_outreach(broker, database_url, dispatch_enabled=False) as planning_only:
        cid = pipeline_tests.customer_id("census-quiet", planning_only.settings)
        first = pipeline_tests.updated(
            cid,
            1,
            "purchase",
            pipeline_tests.snapshot(order_count=1),
            order_id="o-1",
            occurred=datetime.now(UTC) - timedelta(hours=2),
        )
        await planning_only.produce(CUSTOMERS, first)
        await planning_only.touch_of(cid, "welcome", "scheduled")

        async def counted() -> dict[str, float] | None:
            gauges = await touch_gauges(planning_only)
            return gauges if gauges.get("scheduled") == 2 else None

        gauges = await eventually(counted, timeout=30, what="the census in a replica that does not dispatch")
        assert gauges["sent"] == 0
        assert gauges["due"] == 1  # the welcome is overdue: nobody here sends it
