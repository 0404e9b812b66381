"""kill -9 of scoring, of outreach and of ingest at random moments under load, ten rounds each.

Each round sends the next slice of the workload's phase B (paced over a few seconds). Every
victim, independently, is killed at a seeded random point of its work — a consumer after a
random number of messages consumed since its restart, ingest at a random moment while requests
are in flight — by SIGKILL on its process group, and restarted at once with the same
environment and database. After the last
round the run must settle into exactly the clean run's outcome: no event lost, no order counted
twice, no touch sent twice, nothing stuck.

By default the three victims are killed in the same run (their rounds overlap, which keeps the
suite inside the CI budget, and a kill of one lands while the others are recovering).
HUITOU_FAULT_KILL_GROUPS="scoring;outreach;ingest" runs one victim per run instead.
"""

from __future__ import annotations

import asyncio
import os
import random
import time
from pathlib import Path

import httpx
import pytest

from tests.faults.conftest import record_figures
from tests.faults.harness import Run, fault_run, started_broker
from tests.faults.workload import Outcome, Workload, differences

pytestmark = [pytest.mark.faults, pytest.mark.broker]
ROUNDS = 10
SEND_WINDOW = 3.0  # seconds over which one round's slice is sent
GROUPS = os.environ.get("HUITOU_FAULT_KILL_GROUPS", "scoring,outreach,ingest").split(";")


async def kill_once(run: Run, victim: str, rng: random.Random, chunk: int, consumed_at_kill: list[float]) -> None:
    service = run.stack[victim]
    if victim == "ingest":
        await asyncio.sleep(rng.uniform(0.1, SEND_WINDOW))  # requests are in flight
    else:
        # A random point inside the work: after a random number of this round's messages.
        target = rng.randint(1, max(1, int(chunk * 0.6)))
        deadline = time.monotonic() + 180
        while await consumed(run, victim) < target:
            assert time.monotonic() < deadline, f"{victim} did not consume {target} messages after its restart"
            await asyncio.sleep(0.05)
        await asyncio.sleep(rng.uniform(0.0, 0.4))  # the loop may count a whole batch at once
        consumed_at_kill.append(await consumed(run, victim))
    service.kill()
    await asyncio.sleep(rng.uniform(0.0, 0.5))
    await run.stack.restart(victim)


async def consumed(run: Run, victim: str) -> float:
    try:
        return await run.stack.consumed(victim)
    except httpx.HTTPError:
        return 0


@pytest.mark.parametrize("victims", [tuple(g.split(",")) for g in GROUPS], ids=lambda v: "+".join(v))
async def test_kill_9_at_random_moments_loses_and_duplicates_nothing(
    victims: tuple[str, ...], workload: Workload, clean_run: Outcome, tmp_path: Path
) -> None:
    rng = random.Random(f"kill-9-{'+'.join(victims)}-{workload.seed}")
    started = time.monotonic()
    at_kill: dict[str, list[float]] = {v: [] for v in victims}
    round_seconds = []
    async with started_broker(tmp_path) as broker, fault_run(tmp_path, workload, broker.bootstrap) as run:
        for chunk in workload.chunks(ROUNDS):
            began = time.monotonic()
            pace = SEND_WINDOW / max(1, len(chunk) / run.sender.batch / 2)
            sending = asyncio.create_task(run.sender.send(chunk, pace=pace))
            kills = [kill_once(run, v, random.Random(rng.random()), len(chunk), at_kill[v]) for v in victims]
            await asyncio.gather(*kills)
            await sending
            round_seconds.append(round(time.monotonic() - began, 1))
        result = await run.settle(expected=clean_run, timeout=300)
        killed = {v: run.stack[v].kills for v in victims}
        sender = run.sender
    problems = differences(clean_run, result)
    record_figures(
        f"kill-9 {'+'.join(victims)}",
        {
            "kills": killed,
            "events": workload.size,
            "acknowledged": len(sender.acknowledged),
            "client_retries": sender.retries,
            "answers": dict(sender.statuses),
            "consumed_since_restart_at_kill": at_kill,
            "round_seconds": round_seconds,
            "problems": len(problems),
            **result.figures(),
            "seconds": round(time.monotonic() - started),
        },
    )
    assert all(n == ROUNDS for n in killed.values()), killed
    assert len(sender.acknowledged) == workload.size
    assert problems == [], "\n".join(problems[:40])
