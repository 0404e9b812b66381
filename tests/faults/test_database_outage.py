"""PostgreSQL goes away under load (``pg_ctl stop -m immediate``) and comes back, twice.

Scoring and outreach keep their state on PostgreSQL. While it is down their consumers must
pause (readiness answers 503, the processes stay up, nothing is dead-lettered or skipped) and
resume by themselves when it is back; the run then settles into the clean run's outcome.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from shared.topics import DLQ
from tests.faults.conftest import record_figures
from tests.faults.harness import fault_run, started_broker
from tests.faults.pg import StoppablePostgres
from tests.faults.workload import Outcome, Workload, differences
from tests.support import postgres_bin, read_topic

pytestmark = [pytest.mark.faults, pytest.mark.broker, pytest.mark.postgres]
DOWN = 6.0
IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}


@pytest.fixture
def postgres() -> Iterator[StoppablePostgres]:
    if postgres_bin() is None:
        if IN_CI:
            pytest.fail("PostgreSQL server binaries are required in CI (apt-get install -y postgresql)")
        pytest.skip("PostgreSQL server binaries not installed")
    cluster = StoppablePostgres.create()
    cluster.start()
    try:
        yield cluster
    finally:
        cluster.destroy()


async def readiness(url: str) -> int:
    try:
        async with httpx.AsyncClient(timeout=5) as client:
            return (await client.get(url + "/readyz")).status_code
    except httpx.HTTPError:
        return 0


async def test_database_outage_pauses_consumers_and_skips_nothing(
    postgres: StoppablePostgres, workload: Workload, clean_run: Outcome, tmp_path: Path
) -> None:
    started = time.monotonic()
    env = {
        "HUITOU_SCORING_DATABASE_URL": await postgres.create_database("scoring"),
        "HUITOU_OUTREACH_DATABASE_URL": await postgres.create_database("outreach"),
    }
    seen_while_down: dict[str, set[int]] = {"scoring": set(), "outreach": set()}
    async with started_broker(tmp_path) as broker, fault_run(tmp_path, workload, broker.bootstrap, env=env) as run:
        sending = asyncio.create_task(run.sender.send(workload.phase_b, pace=0.5))
        for _ in range(2):
            await asyncio.sleep(2.5)
            await asyncio.to_thread(postgres.stop, "immediate")
            deadline = time.monotonic() + DOWN
            while time.monotonic() < deadline:
                for name in seen_while_down:
                    seen_while_down[name].add(await readiness(run.stack.url(name)))
                await asyncio.sleep(0.5)
            run.stack.assert_alive()
            await asyncio.to_thread(postgres.start)
        await sending
        result = await run.settle(expected=clean_run, timeout=300)
        dead_letters = await read_topic(broker.bootstrap, DLQ)
        sender = run.sender
    problems = differences(clean_run, result)
    record_figures(
        "database outage (PostgreSQL)",
        {
            "outages": 2,
            "down_seconds": DOWN,
            "readyz_while_down": {k: sorted(v) for k, v in seen_while_down.items()},
            "events": workload.size,
            "acknowledged": len(sender.acknowledged),
            "dead_letters": len(dead_letters),
            "problems": len(problems),
            **result.figures(),
            "seconds": round(time.monotonic() - started),
        },
    )
    assert all(codes == {503} for codes in seen_while_down.values()), seen_while_down
    assert dead_letters == [], "a database outage is transient: nothing may be dead-lettered"
    assert problems == [], "\n".join(problems[:40])
