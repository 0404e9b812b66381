"""The calendar planner: a background task that scans every stored customer file on a fixed
interval and schedules the calendar moments (birthdays, anniversaries, festivals, periodic care,
expected next orders) due within the horizon. Idempotency keys (``birthday:<customer>:<year>``…)
make every re-run, on any replica, a no-op for moments already planned."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from datetime import UTC, datetime

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.outreach import repository
from services.outreach.care import plan_calendar
from services.outreach.planning import PlanCatalog, PlanningState, apply_planned, planning_defaults
from services.outreach.settings import OutreachSettings
from shared.db import transaction
from shared.ledger import OutboxRelay

log = logging.getLogger("huitou.outreach.calendar")


class CalendarPlanner:
    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        settings: OutreachSettings,
        catalog: PlanCatalog,
        relay: OutboxRelay | None,
        *,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._sessions = sessions
        self._settings = settings
        self._catalog = catalog
        self._relay = relay
        self._clock = clock
        self._defaults = planning_defaults(settings)
        self._stop = asyncio.Event()

    def stop(self) -> None:
        self._stop.set()

    async def run(self) -> None:
        while not self._stop.is_set():
            try:
                planned = await self.scan_once()
                if planned:
                    log.info("calendar planner scheduled %d touches", planned)
            except Exception:
                log.exception("calendar scan failed; next scan at the usual interval")
            try:
                await asyncio.wait_for(self._stop.wait(), self._settings.calendar_scan_interval.total_seconds())
            except TimeoutError:
                pass

    async def scan_once(self, now: datetime | None = None) -> int:
        """One pass over every customer file; returns how many touches were stored."""
        now = now or self._clock()
        book = (await self._catalog.current()).book
        if not book.of_kind("calendar"):
            return 0
        after: str | None = None
        stored = 0
        while not self._stop.is_set():
            async with transaction(self._sessions) as session:
                batch = await repository.customers_after(session, after, self._settings.calendar_scan_batch)
                if not batch:
                    break
                planned = [
                    (touch, snapshot)
                    for customer_id, snapshot in batch
                    for touch in plan_calendar(
                        customer_id,
                        snapshot,
                        book,
                        now=now,
                        horizon=self._settings.calendar_horizon,
                        defaults=self._defaults,
                    )
                ]
                # One state for the scan transaction: what the planned touches need is read up
                # front (a query per kind, for the customers that have one) and written at its end.
                state = PlanningState(session)
                await state.prefetch({touch.customer_id for touch, _ in planned}, [])
                await state.look_up_keys([touch for touch, _ in planned])
                for touch, snapshot in planned:
                    produced = await apply_planned(
                        session,
                        touch,
                        cause_event_id=f"calendar:{now.date().isoformat()}",
                        book=book,
                        settings=self._settings,
                        now=now,
                        snapshot=snapshot,
                        state=state,
                    )
                    stored += bool(produced)
                    state.enqueue(produced)
                queued = bool(state.messages)
                await state.flush()
            after = batch[-1][0]
            if queued and self._relay is not None:
                self._relay.notify()
        return stored
