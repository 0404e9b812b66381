"""kill -9 of the outreach process in the middle of dispatching: after a restart every touch is
delivered exactly once — counted by Message-ID at a real SMTP server — and none is lost."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from collections import Counter
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest
from sqlalchemy import select

from services.outreach import repository
from services.outreach.api import MIGRATIONS
from services.outreach.care import plan_update
from services.outreach.planning import PlanCatalog, apply_planned
from services.outreach.settings import OutreachSettings
from services.outreach.tables import touches
from shared.contracts import CustomerCause, CustomerSnapshot, CustomerUpdatedPayload
from shared.db import create_engine, migrate, session_factory, transaction
from tests.integration.test_outreach_dispatch import SmtpRecorder
from tests.integration.test_outreach_pipeline import daytime_zone
from tests.support import Broker, eventually, free_port

pytestmark = pytest.mark.broker
ROOT = Path(__file__).resolve().parents[2]
TOUCHES = 40


async def seed(database_url: str, settings: OutreachSettings) -> list[str]:
    """N customers, each with a post-purchase follow-up due now."""
    engine = create_engine(database_url, "outreach")
    await migrate(engine, MIGRATIONS, "outreach")
    sessions = session_factory(engine)
    catalog = PlanCatalog(sessions, settings)
    await catalog.seed_defaults()
    book = (await catalog.current()).book
    now = datetime.now(UTC)
    ids = []
    async with transaction(sessions) as session:
        for i in range(TOUCHES):
            cid = f"crash-{i}"
            snapshot = CustomerSnapshot(
                email=f"{cid}@example.com",
                first_name=f"C{i}",
                locale="en",
                timezone=daytime_zone(),
                consents={"email:marketing": True},
                order_count=2,
            )
            payload = CustomerUpdatedPayload(
                version=1,
                snapshot=snapshot,
                cause=CustomerCause(
                    event_id=f"ev-{cid}",
                    type="purchase",
                    occurred_at=now - timedelta(days=3),
                    order_id="o-1",
                    amount=Decimal("10"),
                ),
            )
            [planned] = [p for p in plan_update(cid, payload, book, now=now) if p.plan == "post_purchase_follow_up"]
            await repository.remember_customer(session, cid, 1, snapshot, now)
            await apply_planned(
                session, planned, cause_event_id=f"ev-{cid}", book=book, settings=settings, now=now, snapshot=snapshot
            )
            ids.append(repository.touch_id_for(planned.idempotency_key))
    await engine.dispose()
    return ids


def start_outreach(env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with open(log, "ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "services.outreach"], cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT
        )


async def test_kill_9_mid_dispatch_loses_nothing_and_sends_nothing_twice(
    broker: Broker, database_url: str, tmp_path: Path
) -> None:
    smtp = SmtpRecorder().start()
    smtp.delay = 0.03  # each message takes a moment, so the kill lands mid-batch
    settings = OutreachSettings(database_url=database_url, holdout_share=0.0)
    expected = await seed(database_url, settings)
    env = {
        **os.environ,
        "HUITOU_KAFKA_BOOTSTRAP_SERVERS": broker.bootstrap,
        "HUITOU_VAR_DIR": str(tmp_path / "var"),
        "HUITOU_OUTREACH_DATABASE_URL": database_url,
        "HUITOU_OUTREACH_PORT": str(free_port()),
        "HUITOU_OUTREACH_SMTP_PORT": str(smtp.port),
        "HUITOU_OUTREACH_HOLDOUT_SHARE": "0",
        "HUITOU_OUTREACH_DISPATCH_LEASE": "PT2S",
        "HUITOU_OUTREACH_DISPATCH_INTERVAL_SECONDS": "0.1",
        "HUITOU_OUTREACH_DISPATCH_CONCURRENCY": "4",
        "HUITOU_OUTREACH_CALENDAR_SCAN_INTERVAL": "PT1H",
    }
    log = tmp_path / "outreach.log"
    first = start_outreach(env, log)
    try:

        async def some_sent() -> bool:
            assert first.poll() is None, log.read_text()[-3000:]
            return len(smtp.messages) >= 8

        await eventually(some_sent, timeout=60, what="the first messages")
        first.send_signal(signal.SIGKILL)
        first.wait(10)
        at_kill = len(smtp.messages)
        assert at_kill < TOUCHES, "dispatch finished before the kill; the test proves nothing"

        second = start_outreach(env, log)
        try:
            engine = create_engine(database_url, "outreach")
            sessions = session_factory(engine)

            async def all_settled() -> bool:
                assert second.poll() is None, log.read_text()[-3000:]
                async with sessions() as session:
                    statuses = (await session.execute(select(touches.c.status))).scalars().all()
                return len(statuses) == TOUCHES and set(statuses) == {"sent"}

            await eventually(all_settled, timeout=90, what="every touch to be sent after the restart")
            await asyncio.sleep(0.5)  # anything still in flight would show up now
            async with sessions() as session:
                reasons = (await session.execute(select(touches.c.reason))).scalars().all()
            await engine.dispose()
        finally:
            second.send_signal(signal.SIGTERM)
            second.wait(30)
    finally:
        if first.poll() is None:
            first.kill()
        smtp.stop()
    counts = Counter(smtp.message_ids())
    assert set(counts) == {f"<{t}@huitou.local>" for t in expected}, "a touch was lost"
    assert max(counts.values()) == 1, f"sent twice: {[m for m, n in counts.items() if n > 1]}"
    # Touches caught mid-send are honest about it; everything else was confirmed by the server.
    assert all(r is None or r.startswith(("unconfirmed", "recovered")) for r in reasons), reasons
