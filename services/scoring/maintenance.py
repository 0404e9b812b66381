"""Scoring's background work: refitting the population statistics, re-scoring every file after a
refit, and the lapse sweep that notices silence.

* Refit: on a schedule (``refit_interval``), when the purchasing population grew by
  ``refit_growth``, after an erasure, and on demand (the internal API); the start and growth
  refits wait while the consumer is more than ``refit_defer_backlog`` events behind. The new
  model snapshot is in force as soon as ``refit`` returns; re-scoring follows in batches, each
  written together, resumable after a crash (the snapshot row keeps a cursor).
* Sweep: customers whose next check has come (a rhythm threshold, the churn band's next change,
  the expected next order, a purchase leaving a trailing window, or simply ``max_score_age``)
  are re-scored as of the clock. Its cause id is deterministic per customer and as-of day, and
  claimed like an event id, so sweeping twice on one day is a no-op.
* One replica at a time does this work (a lease row); the others only consume.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
import uuid
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.scoring import repository
from services.scoring.clock import Clock
from services.scoring.engine import Announcement, FileChanges, ModelStore, rescored
from services.scoring.population import NotEnoughData, PopulationModel, fit_population
from services.scoring.purchases import day_date, day_start, local_day
from services.scoring.settings import ScoringSettings
from shared.contracts import CustomerCause
from shared.db import transaction
from shared.ledger import OutboxRelay

log = logging.getLogger("huitou.scoring.maintenance")

LEASE = "scoring-maintenance"


def clock_cause_id(customer_id: str, day: int) -> str:
    return f"clock:{customer_id}:{day_date(day).isoformat()}"


class Maintenance:
    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        relay: OutboxRelay | None,
        models: ModelStore,
        settings: ScoringSettings,
        clock: Clock,
        *,
        holder: str | None = None,
        backlog: Callable[[], int] | None = None,
    ) -> None:
        self._sessions = sessions
        self._backlog = backlog or (lambda: 0)
        """How many events this replica's consumer is behind."""
        self._relay = relay
        self._models = models
        self._settings = settings
        self._rules = settings.rules()
        self._clock = clock
        self._refit_lock = asyncio.Lock()
        # Who holds the maintenance lease: this replica (the pod name in Kubernetes, plus a nonce).
        self.holder = holder or f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self._wake = asyncio.Event()
        self._refit_requested: str | None = None
        self._last_sweep = float("-inf")

    # --- refit ---------------------------------------------------------------------------------

    async def refit(self, *, as_of: datetime | None = None, trigger: str = "on_demand") -> PopulationModel:
        """Fit every population statistic on the purchases up to ``as_of`` (default: the clock) and
        put the result in force. Raises NotEnoughData when the population is too small."""
        async with self._refit_lock:
            async with transaction(self._sessions) as session:
                cut = as_of or await self._clock.sweep_time(session)
                if cut is None:
                    raise NotEnoughData("no purchases yet: nothing to fit")
                data = await repository.purchase_log(session, cut, self._rules.timezone, self._rules.tiers.basis)
            started = time.perf_counter()
            model = await asyncio.to_thread(
                fit_population,
                data.log,
                as_of=cut,
                as_of_day=local_day(cut, self._rules.timezone),
                rules=self._rules.population(),
                fitted_at=datetime.now(UTC),
                trigger=trigger,
            )
            model = replace(model, fit_seconds=round(time.perf_counter() - started, 4))
            async with transaction(self._sessions) as session:
                model = model.with_id(await repository.save_model(session, model))
            self._models.set(model)
            log.info(
                "population model %s fitted (%s): %d customers, LL %.2f",
                model.id,
                trigger,
                model.n_customers,
                model.log_likelihood,
            )
            self._wake.set()
            return model

    def request_refit(self, trigger: str) -> None:
        """Ask the background task for a refit soon (e.g. after an erasure changed the population)."""
        self._refit_requested = trigger
        self._wake.set()

    async def _refit_due(self) -> str | None:
        if self._refit_requested:
            return self._refit_requested
        model = await self._models.current()
        async with self._sessions() as session:
            population = await repository.purchasing_population(session)
        if population < self._settings.min_customers_for_fit:
            return None
        scheduled = model is not None and datetime.now(UTC) - model.fitted_at >= self._settings.refit_interval
        if model is None:
            if not self._settings.refit_on_start:
                return None
            trigger = "start"
        elif population >= model.population_size * (1 + self._settings.refit_growth):
            trigger = "growth"
        else:
            return "schedule" if scheduled else None
        behind = self._backlog()
        if self._settings.refit_defer_backlog and behind > self._settings.refit_defer_backlog:
            # A backfill or a burst is streaming in: the population is still growing, and the next
            # growth refit would supersede this one and re-score every file again. Fit once caught
            # up; a refit on schedule still runs, so a consumer that never catches up is not stuck.
            log.info("%s refit waits: the consumer is %d events behind", trigger, behind)
            return "schedule" if scheduled else None
        return trigger

    # --- re-scoring after a refit -------------------------------------------------------------------

    async def rescore_pending(self) -> int:
        """Re-score every file with the model in force, from where the last run stopped; returns files
        whose tracked fields changed. A refit that lands meanwhile supersedes the model being
        applied: re-scoring moves on to the newer one at once, and returns when it is done."""
        changed = 0
        while True:
            model = await self._models.current()
            if model is None or model.id is None:
                return changed
            async with self._sessions() as session:
                cursor, done = await repository.rescore_progress(session, model.id)
            if done is not None:
                return changed
            while True:
                async with transaction(self._sessions) as session:
                    ids = await repository.customers_after(session, cursor, self._settings.rescore_batch_size)
                    if not ids:
                        await repository.set_rescore_progress(session, model.id, cursor, datetime.now(UTC))
                        break
                    changed += await self._rescore_batch(session, ids, model, sweep_as_of=None)
                    cursor = ids[-1]
                    await repository.set_rescore_progress(session, model.id, cursor)
                self._notify()
                if await self._superseded(model):
                    break

    async def _rescore_batch(
        self, session: AsyncSession, ids: list[str], model: PopulationModel | None, sweep_as_of: datetime | None
    ) -> int:
        files = await repository.load_files(session, ids, for_update=True)
        lines = await repository.order_lines_for(session, [f.customer_id for f in files if f.totals.order_count])
        changed = 0
        # The batch's files, history and announcements are written together at its end, as the
        # event consumer does: a statement or three per batch instead of per file, which is most
        # of a refit's re-scoring time on every file (each file is in the batch once).
        changes = FileChanges()
        for file in files:
            # Replay: the file's own as-of (its latest event or sweep), so the result is deterministic;
            # live: now, like every other live score.
            as_of = self._clock.for_file(file)
            if sweep_as_of is not None:
                as_of = max(as_of, sweep_as_of)
                day = local_day(as_of, self._rules.timezone)
                cause_id = clock_cause_id(file.customer_id, day)
                if not await repository.claim(session, cause_id):
                    await repository.postpone_check(session, file.customer_id, day_start(day + 1, self._rules.timezone))
                    continue
                cause = CustomerCause(event_id=cause_id, type="clock", occurred_at=as_of)
            else:
                cause = CustomerCause(
                    event_id=f"model-{model.id if model else 0}:{file.customer_id}",
                    type="model_refit",
                    occurred_at=as_of,
                )
            after, found = rescored(file, lines.get(file.customer_id, []), model, as_of, self._rules)
            announcement = Announcement(cause, historical=self._clock.mode == "replay") if found else None
            changes.record(file, after, found, announcement, datetime.now(UTC))
            changed += bool(found)
        await changes.write(session)
        return changed

    # --- the lapse sweep ----------------------------------------------------------------------------

    async def sweep(self) -> tuple[int, bool]:
        """Re-score every customer whose next check has come, as of the clock; returns files changed
        and whether it got through them all. It stops early when a refit puts a newer model in
        force: that model's re-scoring of every file comes first (the next pass sweeps again)."""
        model = await self._models.current()
        changed = 0
        after: str | None = None
        while True:
            async with transaction(self._sessions) as session:
                as_of = await self._clock.sweep_time(session)
                if as_of is None:
                    return changed, True
                ids = await repository.due_customers(session, as_of, self._settings.sweep_batch_size, after)
                if not ids:
                    return changed, True
                changed += await self._rescore_batch(session, ids, model, sweep_as_of=as_of)
                after = ids[-1]
            self._notify()
            if model is not None and await self._superseded(model):
                return changed, False

    async def _superseded(self, model: PopulationModel) -> bool:
        latest = await self._models.current()
        return latest is not None and latest.id != model.id

    def _notify(self) -> None:
        if self._relay is not None:
            self._relay.notify()

    # --- the background loop ------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        tick = self._settings.maintenance_tick.total_seconds()
        while not stop.is_set():
            # Cleared before the pass, not after: a refit requested or made while the pass runs
            # (the API's, an erasure's) starts the next pass at once instead of a tick later.
            self._wake.clear()
            try:
                await self.run_once()
            except Exception:
                log.exception("scoring maintenance failed; retrying next tick")
            try:
                await asyncio.wait_for(_first(stop, self._wake), tick)
            except TimeoutError:
                pass

    async def run_once(self) -> None:
        if not await self._hold_lease():
            await self._models.refresh()  # another replica refits; pick up its models
            return
        await self._models.refresh()
        trigger = await self._refit_due()
        if trigger is not None:
            self._refit_requested = None
            try:
                await self.refit(trigger=trigger)
            except NotEnoughData as error:
                log.info("no refit (%s): %s", trigger, error)
        await self.rescore_pending()
        if time.monotonic() - self._last_sweep >= self._settings.sweep_interval.total_seconds():
            swept, complete = await self.sweep()
            if complete:
                self._last_sweep = time.monotonic()
            if swept:
                log.info("lapse sweep changed %d customer file(s)", swept)

    async def _hold_lease(self) -> bool:
        ttl = max(self._settings.maintenance_tick * 4, timedelta(minutes=2))
        async with transaction(self._sessions) as session:
            return await repository.take_lease(session, LEASE, self.holder, datetime.now(UTC), ttl)


async def _first(*events: asyncio.Event) -> None:
    waiters = [asyncio.create_task(e.wait()) for e in events]
    try:
        await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()
