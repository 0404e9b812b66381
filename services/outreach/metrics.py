"""Outreach's own metrics: the touches it holds, by status.

The counts come from the ``touches`` table, so every replica reports the same numbers: aggregate
them with ``max``, not ``sum``. They are a census refreshed on an interval, not a live counter; the
dispatcher's ``huitou_outreach_dispatch_outcomes_total`` counts what happened as it happened. The
census runs in every replica, dispatching or not (a planning-only replica reports the same table).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from datetime import UTC, datetime

from prometheus_client import Gauge
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.outreach.repository import ALL_STATUSES
from services.outreach.tables import touches
from shared.contracts import TouchStatus
from shared.observability import ServiceMetrics

log = logging.getLogger("huitou.outreach")


class TouchCensus:
    def __init__(self, metrics: ServiceMetrics) -> None:
        self._stop = asyncio.Event()
        self.by_status = Gauge(
            "huitou_outreach_touches",
            "Touches held by outreach, by status (the same on every replica)",
            ["status"],
            registry=metrics.registry,
        )
        self.due = Gauge(
            "huitou_outreach_touches_due",
            "Scheduled touches whose due time has passed: the dispatcher's backlog",
            registry=metrics.registry,
        )

    async def refresh(self, session: AsyncSession, now: datetime) -> None:
        counts = dict(
            (await session.execute(select(touches.c.status, func.count()).group_by(touches.c.status))).tuples().all()
        )
        # Every known status is set, so one that emptied reads 0 rather than its last count.
        for status in {*ALL_STATUSES, *counts}:
            self.by_status.labels(status).set(counts.get(status, 0))
        due = await session.scalar(
            select(func.count())
            .select_from(touches)
            .where(touches.c.status == TouchStatus.SCHEDULED.value, touches.c.due_at <= now)
        )
        self.due.set(due or 0)

    def stop(self) -> None:
        self._stop.set()

    async def run(
        self,
        sessions: async_sessionmaker[AsyncSession],
        every_seconds: float,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        """Recount every ``every_seconds``: counting the whole table more often would cost more
        than the gauges are worth. A failed count (database away) keeps the last values."""
        while not self._stop.is_set():
            try:
                async with sessions() as session:
                    await self.refresh(session, clock())
            except Exception:
                log.exception("counting touches for /metrics failed; will retry")
            try:
                await asyncio.wait_for(self._stop.wait(), every_seconds)
            except TimeoutError:
                pass
