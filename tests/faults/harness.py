"""One fault-suite run: a broker, the delivery targets and the services, with the workload's
phase A (identities and consents) applied — ready for phase B under whatever fault a test injects."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

from shared.kafka import ensure_topics
from tests.faults.channels import FlakySmtp, FlakyWebhook, Schedule
from tests.faults.stack import FaultStack
from tests.faults.workload import OUTREACH_ENV, Outcome, Sender, Workload, outcome, quiescent, settle
from tests.support import Broker, free_port


@dataclass
class Run:
    stack: FaultStack
    smtp: FlakySmtp
    hook: FlakyWebhook
    sender: Sender
    started: float = field(default_factory=time.monotonic)

    async def settle(self, expected: Outcome | None = None, timeout: float = 300) -> Outcome:
        return await settle(self.stack, self.smtp, self.hook, expected=expected, timeout=timeout)

    async def outcome(self) -> Outcome:
        return await outcome(self.stack, self.smtp, self.hook)


@contextlib.asynccontextmanager
async def started_broker(root: Path) -> AsyncIterator[Broker]:
    broker = Broker(free_port(), root / "broker.log")
    broker.start()
    try:
        await ensure_topics(broker.bootstrap)
        yield broker
    finally:
        broker.stop()


@contextlib.asynccontextmanager
async def fault_run(
    root: Path,
    workload: Workload,
    bootstrap: str,
    *,
    smtp_schedule: Schedule | None = None,
    hook_schedule: Schedule | None = None,
    env: dict[str, str] | None = None,
) -> AsyncIterator[Run]:
    """Start the targets and the services, send phase A and wait until it is fully applied."""
    smtp = FlakySmtp(smtp_schedule).start()
    hook = FlakyWebhook(hook_schedule).start()
    stack = FaultStack(
        root / "var",
        bootstrap,
        smtp.port,
        extra_env={**OUTREACH_ENV, "HUITOU_OUTREACH_SMS_WEBHOOK_URL": hook.url, **(env or {})},
    )
    try:
        await stack.start()
        run = Run(stack, smtp, hook, Sender(stack.url("ingest")))
        await run.sender.send(workload.phase_a)
        await phase_a_applied(run, workload)
        yield run
    finally:
        stack.stop()
        smtp.stop()
        hook.stop()


async def phase_a_applied(run: Run, workload: Workload, timeout: float = 180) -> None:
    """Every customer file exists and outreach has caught up (so contacts and consents are known
    before any purchase or complaint arrives: the clean and the faulty runs start alike)."""
    deadline = time.monotonic() + timeout
    calm = 0
    while calm < 2:
        assert time.monotonic() < deadline, f"phase A not applied within {timeout}s: {await run.stack.backlog()}"
        current = await run.outcome()
        calm = calm + 1 if len(current.files) == len(workload.customers) and await quiescent(run.stack) else 0
        await asyncio.sleep(0.7)
