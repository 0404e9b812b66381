"""SMTP and webhook targets that fail, are slow and flap: retries with backoff, one delivery per touch.

The SMTP server answers 451, drops the connection at RCPT, answers slowly, answers slower than
outreach's timeout (and delivers anyway, as a real relay may), and refuses everything for 3 s
of every 10 s. The SMS webhook receiver does the same with 503s, dropped connections and slow
200s, and deduplicates by Idempotency-Key like a real provider. The run must settle into the
clean run's outcome with every sent touch delivered exactly once, and the attempt logs must
show the retries spaced by the exponential backoff.
"""

from __future__ import annotations

import itertools
import time
from collections import Counter
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.faults.channels import DROP, FAIL, OK, SLOW, TOO_SLOW, Schedule
from tests.faults.conftest import record_figures
from tests.faults.harness import fault_run, started_broker
from tests.faults.stack import INTERNAL
from tests.faults.workload import Outcome, Workload, differences

pytestmark = [pytest.mark.faults, pytest.mark.broker]
RETRY_BASE = timedelta(seconds=0.2)
RETRY_CAP = timedelta(seconds=2)
FLAKY = {OK: 0.45, FAIL: 0.25, DROP: 0.12, SLOW: 0.12, TOO_SLOW: 0.06}


def when(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def backoff_violations(details: list[dict[str, Any]]) -> tuple[int, list[str]]:
    """Retries after a failed attempt must wait at least the jitter's lower bound of the backoff."""
    checked, problems = 0, []
    for detail in details:
        log = sorted(detail["attempt_log"], key=lambda a: a["number"])
        for earlier, later in itertools.pairwise(log):
            if earlier["state"] != "failed" or earlier["finished_at"] is None:
                continue
            floor = 0.5 * min(RETRY_CAP, RETRY_BASE * 2 ** (earlier["number"] - 1)).total_seconds()
            waited = (when(later["started_at"]) - when(earlier["finished_at"])).total_seconds()
            checked += 1
            if waited < floor - 0.05:
                problems.append(f"{detail['touch_id']}: attempt {later['number']} after {waited:.2f}s < {floor:.2f}s")
    return checked, problems


async def test_flaky_slow_and_flapping_targets_get_one_delivery_per_touch(
    workload: Workload, clean_run: Outcome, tmp_path: Path
) -> None:
    started = time.monotonic()
    smtp_schedule = Schedule(seed=11, weights=FLAKY, slow_seconds=0.4, too_slow_seconds=2.5, period=10, down_for=3)
    hook_schedule = Schedule(seed=12, weights=FLAKY, slow_seconds=0.4, too_slow_seconds=2.5, period=10, down_for=3)
    env = {
        "HUITOU_OUTREACH_SMTP_TIMEOUT_SECONDS": "1.5",
        "HUITOU_OUTREACH_WEBHOOK_TIMEOUT_SECONDS": "1.5",
        "HUITOU_OUTREACH_RETRY_BASE": f"PT{RETRY_BASE.total_seconds()}S",
        "HUITOU_OUTREACH_RETRY_CAP": f"PT{RETRY_CAP.total_seconds()}S",
    }
    async with (
        started_broker(tmp_path) as broker,
        fault_run(
            tmp_path, workload, broker.bootstrap, smtp_schedule=smtp_schedule, hook_schedule=hook_schedule, env=env
        ) as run,
    ):
        await run.sender.send(workload.phase_b)
        result = await run.settle(expected=clean_run, timeout=400)
        retried = [t for t, v in result.touches.items() if v["attempts"] > 1]
        async with httpx.AsyncClient(headers=INTERNAL, timeout=30) as client:
            details = [
                (await client.get(f"{run.stack.url('outreach')}/internal/v1/touches/{t}")).json() for t in retried
            ]
        hook_requests = list(run.hook.requests)
    problems = differences(clean_run, result)
    checked, too_soon = backoff_violations(details)
    answered_twice = Counter(r.key for r in hook_requests if r.status == 200)
    resent_after_timeout = {k for k, n in answered_twice.items() if n > 1}
    slow_keys = {r.key for r in hook_requests if r.mode == TOO_SLOW}
    record_figures(
        "flaky SMTP and webhook",
        {
            "smtp_transactions": dict(smtp_schedule.drawn),
            "webhook_requests": dict(hook_schedule.drawn),
            "touches_retried": len(retried),
            "max_attempts": max((v["attempts"] for v in result.touches.values()), default=0),
            "backoff_gaps_checked": checked,
            "webhook_resent_after_timeout": len(resent_after_timeout),
            "unsigned_webhooks": sum(not r.signed for r in hook_requests),
            "problems": len(problems) + len(too_soon),
            **result.figures(),
            "seconds": round(time.monotonic() - started),
        },
    )
    assert smtp_schedule.drawn[FAIL] and smtp_schedule.drawn[DROP] and smtp_schedule.drawn["down"]
    assert hook_schedule.drawn[FAIL] and hook_schedule.drawn[DROP] and hook_schedule.drawn["down"]
    assert problems == [], "\n".join(problems[:40])
    assert checked > 0 and too_soon == [], too_soon[:20]
    assert all(r.signed for r in hook_requests), "a webhook without a valid signature"
    # A webhook is resent (same key) only when the previous answer never reached outreach.
    assert resent_after_timeout <= slow_keys | {r.key for r in hook_requests if r.status is None}
