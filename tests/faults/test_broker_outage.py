"""The broker becomes unreachable while shops post events: its port refuses connections (every
client reaches it through a proxy that is cut), or the broker process hangs (SIGSTOP).

* No 2xx for an event that was not stored: every event ingest acknowledged is on huitou.events
  afterwards (the broker is never restarted, so its in-memory topics are the truth).
* Clients that retry on 503 end with the complete data: the run settles into the clean run's
  outcome.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from shared.kafka import ensure_topics
from tests.faults.conftest import record_figures
from tests.faults.harness import fault_run
from tests.faults.workload import Outcome, Workload, differences
from tests.integration.test_ingest_support import ProxiedBroker, events_on_topic

pytestmark = [pytest.mark.faults, pytest.mark.broker]
OUTAGE = 3.0


async def test_broker_outages_during_intake_give_503_never_a_false_2xx(
    workload: Workload, clean_run: Outcome, tmp_path: Path
) -> None:
    started = time.monotonic()
    proxied = ProxiedBroker(tmp_path / "broker.log")
    await proxied.start()
    outages: list[str] = []
    try:
        await ensure_topics(proxied.bootstrap)
        env = {"HUITOU_KAFKA_REQUEST_TIMEOUT_MS": "1000"}
        async with fault_run(tmp_path, workload, proxied.bootstrap, env=env) as run:
            sending = asyncio.create_task(run.sender.send(workload.phase_b, pace=1.0))
            assert proxied.proxy is not None
            for kind in ("refused", "hung", "refused", "hung"):
                await asyncio.sleep(2.0)
                before = run.sender.statuses["503"]
                if kind == "refused":
                    await proxied.proxy.cut()
                    await asyncio.sleep(OUTAGE)
                    await proxied.proxy.start()
                else:
                    proxied.pause()
                    await asyncio.sleep(OUTAGE)
                    proxied.resume()
                outages.append(f"{kind}: {run.sender.statuses['503'] - before} × 503")
            assert not sending.done(), "the workload was sent before the outages ended; they prove nothing"
            await sending
            result = await run.settle(expected=clean_run, timeout=300)
            sender = run.sender
        stored = {event["event_id"] for event in await events_on_topic(proxied.bootstrap)}
    finally:
        await proxied.stop()
    false_2xx = sender.acknowledged - stored
    problems = differences(clean_run, result)
    record_figures(
        "broker outage",
        {
            "outages": outages,
            "events": workload.size,
            "acknowledged": len(sender.acknowledged),
            "answers": dict(sender.statuses),
            "false_2xx": len(false_2xx),
            "problems": len(problems),
            **result.figures(),
            "seconds": round(time.monotonic() - started),
        },
    )
    assert sender.statuses["503"] > 0, "no request was refused: the outages did not hit intake"
    assert not false_2xx, f"{len(false_2xx)} events answered 202 are not in Kafka: {sorted(false_2xx)[:10]}"
    assert len(sender.acknowledged) == workload.size
    assert problems == [], "\n".join(problems[:40])
