"""The dispatcher: a background task that claims due touches from the database, re-checks the
contact policy at send time, renders, sends and records every attempt.

Guarantees (docs/outreach.md has the long form):

* **Durable.** The schedule is the ``touches`` table; a restart loses nothing. On PostgreSQL
  concurrent dispatchers claim with ``FOR UPDATE SKIP LOCKED`` and lock the customer row while
  deciding, so caps hold across replicas; on SQLite run one dispatcher.
* **At most one successful send per idempotency key**, also across crashes. A send is recorded in
  three commits: *preparing* (decided, nothing left the process at a point of no return),
  *sending* (the channel has everything but the final go — for SMTP the message body without the
  ending ``.``), then *sent*. Recovery of an expired lease: *preparing* is retried (the server
  discarded the unfinished message); *sending* over SMTP is recorded as sent-unconfirmed and never
  resent (SMTP has no idempotency); *sending* over a webhook is resent with the same
  ``Idempotency-Key``, which the provider deduplicates.
* **Retries** with exponential backoff and jitter; after ``max_attempts`` the touch is failed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import uuid
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from prometheus_client import Counter
from sqlalchemy import and_, case, func, insert, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.outreach import repository
from services.outreach.calendar import customer_zone
from services.outreach.channels import (
    ChannelAdapter,
    OutboundMessage,
    OutcomeUnknown,
    Prepared,
    SendError,
    message_id,
)
from services.outreach.planning import PlanCatalog
from services.outreach.plans import OfferTerms
from services.outreach.policy import (
    Contacts,
    Defer,
    PolicyConfig,
    Send,
    Suppress,
    TouchFacts,
    decide,
    local_day_bounds,
    local_week_bounds,
    retry_delay,
)
from services.outreach.render import RenderError, build_context, render
from services.outreach.settings import OutreachSettings
from services.outreach.signing import UnsubscribeClaim, unsubscribe_token
from services.outreach.tables import outbox, touch_attempts, touches
from shared.contracts import Channel, CustomerSnapshot, Purpose, TouchStatus
from shared.db import transaction
from shared.kafka import Outgoing
from shared.ledger import OutboxRelay, enqueue
from shared.observability import ServiceMetrics
from shared.tracing import bound

log = logging.getLogger("huitou.outreach.dispatcher")

SENT_LIKE = (repository.SENDING, TouchStatus.SENT.value, TouchStatus.CONVERTED.value)


def unsubscribe_url(settings: OutreachSettings, customer_id: str, channel: Channel) -> str:
    token = unsubscribe_token(
        settings.unsubscribe_secret, UnsubscribeClaim(customer_id, channel.value, Purpose.MARKETING.value)
    )
    return f"{settings.public_base_url.rstrip('/')}/public/v1/unsubscribe/{token}"


class DispatchMetrics:
    def __init__(self, metrics: ServiceMetrics) -> None:
        self.outcomes = Counter(
            "huitou_outreach_dispatch_outcomes_total",
            "Dispatcher decisions and send results, by plan and outcome",
            ["plan", "outcome"],
            registry=metrics.registry,
        )


@dataclass
class _InFlight:
    touch: dict[str, Any]
    message: OutboundMessage
    attempt_id: str
    adapter: ChannelAdapter


class Dispatcher:
    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        settings: OutreachSettings,
        catalog: PlanCatalog,
        adapters: Mapping[Channel, ChannelAdapter],
        relay: OutboxRelay | None,
        metrics: ServiceMetrics,
        *,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        jitter: Callable[[], float] = random.random,
    ) -> None:
        self._sessions = sessions
        self._settings = settings
        self._catalog = catalog
        self._adapters = dict(adapters)
        self._relay = relay
        self._metrics = DispatchMetrics(metrics)
        self._clock = clock
        self._jitter = jitter
        self.owner = f"dispatcher-{uuid.uuid4().hex[:12]}"
        self._wake = asyncio.Event()
        self._stop = asyncio.Event()
        # SQLite has one writer: queueing our own transactions here is far cheaper than letting
        # them collide on the file lock and back off (busy_timeout sleeps). Sends stay concurrent.
        self._sqlite = sessions.kw["bind"].dialect.name == "sqlite"
        self._write_lock = asyncio.Lock()
        self._policy = PolicyConfig(
            quiet_hours=(settings.quiet_hours_start, settings.quiet_hours_end),
            cap_per_day=settings.cap_marketing_per_day,
            cap_per_week=settings.cap_marketing_per_week,
            marketing_default_consent=settings.marketing_default_consent,
            transactional_default_consent=settings.transactional_default_consent,
            configured_channels=frozenset(self._adapters),
        )

    def notify(self) -> None:
        self._wake.set()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()

    async def run(self) -> None:
        failures = 0
        while not self._stop.is_set():
            try:
                await self.recover()
                handled = await self.dispatch_once()
                failures = 0
            except Exception:
                failures += 1
                log.exception("dispatcher round failed; retrying")
                handled = 0
            if handled and not failures:
                continue
            self._wake.clear()
            try:
                await asyncio.wait_for(
                    self._wake.wait(), self._settings.dispatch_interval_seconds * min(2**failures, 30)
                )
            except TimeoutError:
                pass

    @contextlib.asynccontextmanager
    async def _tx(self) -> AsyncIterator[AsyncSession]:
        if not self._sqlite:
            async with transaction(self._sessions) as session:
                yield session
            return
        async with self._write_lock, transaction(self._sessions) as session:
            yield session

    # --- claiming ---------------------------------------------------------------------------

    async def dispatch_once(self) -> int:
        """Claim a batch of due touches and process them; returns how many were claimed."""
        claimed = await self._claim()
        if not claimed:
            return 0
        by_customer: dict[str, list[str]] = {}
        for touch_id, customer_id in claimed:
            by_customer.setdefault(customer_id, []).append(touch_id)
        gate = asyncio.Semaphore(self._settings.dispatch_concurrency)

        async def serve(customer_id: str, touch_ids: list[str]) -> None:
            # One customer's touches in turn (highest priority first): caps see each send.
            async with gate:
                for touch_id in touch_ids:
                    if self._stop.is_set():
                        return
                    with bound(customer_id=customer_id, touch_id=touch_id):  # on every log line
                        try:
                            await self.process(touch_id)
                        except Exception:
                            log.exception("dispatching touch %s failed; its lease expires and it is retried", touch_id)

        await asyncio.gather(*(serve(customer_id, ids) for customer_id, ids in by_customer.items()))
        return len(claimed)

    async def _claim(self) -> list[tuple[str, str]]:
        now = self._clock()
        async with self._tx() as session:
            rows = (
                await session.execute(
                    select(touches.c.touch_id, touches.c.customer_id)
                    .where(
                        touches.c.status == TouchStatus.SCHEDULED.value,
                        touches.c.due_at <= now,
                        or_(touches.c.lease_until.is_(None), touches.c.lease_until < now),
                    )
                    .order_by(touches.c.priority.desc(), touches.c.due_at)
                    .limit(self._settings.dispatch_batch)
                    .with_for_update(skip_locked=True)
                )
            ).all()
            if not rows:
                return []
            await session.execute(
                update(touches)
                .where(touches.c.touch_id.in_([r.touch_id for r in rows]))
                .values(lease_until=now + self._settings.dispatch_lease, lease_owner=self.owner)
            )
        return [(r.touch_id, r.customer_id) for r in rows]

    # --- one touch --------------------------------------------------------------------------

    async def process(self, touch_id: str) -> str:
        """Decide, then (if sending) prepare, arm and commit. Returns the outcome name."""
        flight, outcome = await self._decide(touch_id)
        if flight is None:
            return outcome
        try:
            prepared = await flight.adapter.prepare(flight.message)
        except SendError as error:
            return await self._failed(flight, error)
        if not await self._arm(flight, prepared):
            return "lost_lease"
        try:
            receipt = await prepared.commit()
        except OutcomeUnknown as error:
            return await self._unknown(flight, str(error))
        except SendError as error:
            return await self._failed(flight, error)
        return await self._sent(flight, receipt)

    async def _decide(self, touch_id: str) -> tuple[_InFlight | None, str]:
        now = self._clock()
        catalog = await self._catalog.current()
        messages: list[Outgoing] = []
        flight: _InFlight | None = None
        async with self._tx() as session:
            touch = await repository.get_touch(session, touch_id, lock=True)
            if touch is None or touch["status"] != TouchStatus.SCHEDULED.value or touch["lease_owner"] != self.owner:
                return None, "not_ours"
            customer_id = touch["customer_id"]
            snapshot = await repository.load_snapshot(session, customer_id, lock=True)
            active = catalog.book.get(touch["plan"])
            if active is None or not active.plan.enabled:
                outcome = await self._finish(
                    session, touch, TouchStatus.CANCELLED, "care plan deleted or disabled", now, messages
                )
                return None, outcome
            plan = active.plan
            purpose = Purpose(touch["purpose"])
            zone = customer_zone(snapshot, self._settings.default_timezone)
            facts = TouchFacts(
                purpose=purpose,
                channels=plan.channels,
                send_window=(plan.send_window.start, plan.send_window.end) if plan.send_window else None,
                expires_at=touch["expires_at"],
            )
            contacts = await self._contacts(session, touch, snapshot, zone, now)
            decision = decide(facts, contacts, self._policy, now)
            if isinstance(decision, Suppress):
                outcome = await self._finish(session, touch, TouchStatus.SUPPRESSED, decision.reason, now, messages)
            elif isinstance(decision, Defer):
                await repository.set_touch(
                    session,
                    touch_id,
                    now,
                    due_at=decision.until,
                    reason=f"deferred: {decision.reason}",
                    lease_until=None,
                    lease_owner=None,
                )
                outcome = "deferred"
            else:
                flight, outcome = await self._start_attempt(
                    session, touch, snapshot, decision, catalog.templates, catalog.book.tier_benefits, now, messages
                )
            for message in messages:
                await enqueue(session, outbox, message)
        self._count(touch["plan"], outcome)
        self._after_commit(messages)
        return flight, outcome

    async def _contacts(
        self,
        session: AsyncSession,
        touch: dict[str, Any],
        snapshot: CustomerSnapshot | None,
        zone: Any,
        now: datetime,
    ) -> Contacts:
        customer_id = touch["customer_id"]
        explicit = await repository.explicit_consents(session, customer_id)
        day_start, day_end = local_day_bounds(now, zone)
        week_start, week_end = local_week_bounds(now, zone)

        # Both caps in one query: marketing sends in the customer's local day and local week.
        in_day = and_(touches.c.sent_at >= day_start, touches.c.sent_at < day_end)
        counts = (
            await session.execute(
                select(
                    func.count(case((in_day, 1))),
                    func.count(),
                ).where(
                    touches.c.customer_id == customer_id,
                    touches.c.purpose == Purpose.MARKETING.value,
                    touches.c.status.in_(SENT_LIKE),
                    touches.c.sent_at >= week_start,
                    touches.c.sent_at < week_end,
                )
            )
        ).one()
        # The week may start after the day (never) or the day may straddle weeks (Monday 00:00
        # boundaries coincide), so the day's count is always inside the week's.
        ahead = 0
        if touch["purpose"] == Purpose.MARKETING.value:
            # Touches of this customer due in the same arbitration window that outrank this one.
            mine = (touch["priority"], touch["due_at"], touch["touch_id"])
            count = await session.scalar(
                select(func.count())
                .select_from(touches)
                .where(
                    touches.c.customer_id == customer_id,
                    touches.c.purpose == Purpose.MARKETING.value,
                    touches.c.status == TouchStatus.SCHEDULED.value,
                    touches.c.touch_id != touch["touch_id"],
                    touches.c.due_at <= now + self._settings.arbitration_window,
                    or_(
                        touches.c.priority > mine[0],
                        and_(touches.c.priority == mine[0], touches.c.due_at < mine[1]),
                        and_(touches.c.priority == mine[0], touches.c.due_at == mine[1], touches.c.touch_id < mine[2]),
                    ),
                )
            )
            ahead = int(count or 0)
        return Contacts(
            snapshot=snapshot,
            explicit=explicit,
            zone=zone,
            sent_today=int(counts[0] or 0),
            sent_this_week=int(counts[1] or 0),
            ahead_in_line=ahead,
        )

    async def _start_attempt(
        self,
        session: AsyncSession,
        touch: dict[str, Any],
        snapshot: CustomerSnapshot | None,
        decision: Send,
        templates: Mapping[str, Any],
        tier_benefits: Mapping[str, Mapping[str, str]],
        now: datetime,
        messages: list[Outgoing],
    ) -> tuple[_InFlight | None, str]:
        catalog = await self._catalog.current()
        active = catalog.book.get(touch["plan"])
        assert active is not None
        template = templates.get(active.plan.template)
        purpose = Purpose(touch["purpose"])
        link = (
            unsubscribe_url(self._settings, touch["customer_id"], decision.channel)
            if purpose is Purpose.MARKETING
            else None
        )
        locale = (snapshot.locale if snapshot else None) or self._settings.default_locale
        try:
            if template is None:
                raise RenderError(f"template {active.plan.template} does not exist")
            context = build_context(
                customer_id=touch["customer_id"],
                snapshot=snapshot,
                locale=locale,
                plan=touch["plan"],
                channel=decision.channel,
                facts=touch["context"] or {},
                offer=OfferTerms.model_validate(touch["offer"]) if touch["offer"] else None,
                tier_benefits=tier_benefits,
                unsubscribe_url=link,
            )
            rendered = render(
                template,
                context,
                locale=locale,
                default_locale=self._settings.default_locale,
                tone=snapshot.communication_style.value if snapshot and snapshot.communication_style else None,
            )
        except RenderError as error:
            # Never send a broken message: the touch fails visibly, with the template's error.
            outcome = await self._finish(session, touch, TouchStatus.FAILED, f"template_error: {error}", now, messages)
            return None, outcome
        attempt_number = touch["attempts"] + 1
        attempt_id = f"{touch['touch_id']}:{attempt_number}"
        lease = now + self._settings.dispatch_lease
        await session.execute(
            insert(touch_attempts).values(
                attempt_id=attempt_id,
                touch_id=touch["touch_id"],
                number=attempt_number,
                channel=decision.channel.value,
                state="preparing",
                lease_until=lease,
                started_at=now,
            )
        )
        await repository.set_touch(
            session,
            touch["touch_id"],
            now,
            status=repository.SENDING,
            attempts=attempt_number,
            channel=decision.channel.value,
            locale=rendered.locale,
            sent_at=now,
            lease_until=lease,
            message_id=message_id(touch["touch_id"], self._settings.message_id_domain)
            if decision.channel is Channel.EMAIL
            else touch["touch_id"],
        )
        message = OutboundMessage(
            touch_id=touch["touch_id"],
            customer_id=touch["customer_id"],
            channel=decision.channel,
            address=decision.address,
            subject=rendered.subject,
            body=rendered.body,
            plan=touch["plan"],
            purpose=purpose,
            locale=rendered.locale,
            unsubscribe_url=link,
        )
        return _InFlight(touch, message, attempt_id, self._adapters[decision.channel]), "sending"

    async def _arm(self, flight: _InFlight, prepared: Prepared) -> bool:
        """Record 'sending' just before the point of no return; if that cannot be recorded, the
        prepared message is abandoned (the server discards it) and the touch is retried."""
        now = self._clock()
        try:
            async with self._tx() as session:
                result = await session.execute(
                    update(touch_attempts)
                    .where(touch_attempts.c.attempt_id == flight.attempt_id, touch_attempts.c.state == "preparing")
                    .values(state="sending", lease_until=now + self._settings.dispatch_lease)
                )
                armed = bool(getattr(result, "rowcount", 0))
        except Exception:
            await prepared.abort()
            raise
        if not armed:
            await prepared.abort()  # recovered by someone else meanwhile: never send twice
        return armed

    async def _sent(self, flight: _InFlight, receipt: str, reason: str | None = None) -> str:
        now = self._clock()
        touch = flight.touch
        messages = [
            repository.touch_lifecycle(
                touch, TouchStatus.SENT, now, reason=reason, channel=flight.message.channel.value
            )
        ]
        async with self._tx() as session:
            await session.execute(
                update(touch_attempts)
                .where(touch_attempts.c.attempt_id == flight.attempt_id)
                .values(state="sent" if reason is None else "unknown", finished_at=now, detail=receipt[:1000])
            )
            result = await session.execute(
                update(touches)
                .where(touches.c.touch_id == touch["touch_id"], touches.c.status == repository.SENDING)
                .values(
                    status=TouchStatus.SENT.value,
                    sent_at=now,
                    reason=reason,
                    lease_until=None,
                    lease_owner=None,
                    updated_at=now,
                )
            )
            if not getattr(result, "rowcount", 0):
                return "sent"  # recovery already recorded it (or the customer was erased)
            for message in messages:
                await enqueue(session, outbox, message)
        self._count(touch["plan"], "sent" if reason is None else "sent_unconfirmed")
        self._after_commit(messages)
        return "sent"

    async def _failed(self, flight: _InFlight, error: SendError) -> str:
        now = self._clock()
        touch = flight.touch
        messages: list[Outgoing] = []
        async with self._tx() as session:
            await session.execute(
                update(touch_attempts)
                .where(touch_attempts.c.attempt_id == flight.attempt_id)
                .values(state="failed", finished_at=now, detail=str(error)[:1000])
            )
            current = await repository.get_touch(session, touch["touch_id"], lock=True)
            if current is None or current["status"] != repository.SENDING:
                return "gone"
            outcome = await self._retry_or_fail(session, current, str(error), error.transient, now, messages)
            for message in messages:
                await enqueue(session, outbox, message)
        self._count(touch["plan"], outcome)
        self._after_commit(messages)
        return outcome

    async def _unknown(self, flight: _InFlight, detail: str) -> str:
        if not flight.adapter.resend_when_unsure:
            # At most once: the message may well have been delivered; never send it again.
            return await self._sent(flight, detail, reason=f"unconfirmed: {detail}")
        return await self._failed(flight, SendError(f"outcome unknown, resending with the same key: {detail}"))

    async def _retry_or_fail(
        self,
        session: AsyncSession,
        touch: dict[str, Any],
        error: str,
        transient: bool,
        now: datetime,
        messages: list[Outgoing],
    ) -> str:
        attempts = touch["attempts"]
        if not transient or attempts >= self._settings.max_attempts:
            why = f"failed after {attempts} attempt(s): {error}"
            return await self._finish(session, touch, TouchStatus.FAILED, why, now, messages)
        delay = retry_delay(
            attempts, base=self._settings.retry_base, cap=self._settings.retry_cap, jitter=self._jitter()
        )
        await repository.set_touch(
            session,
            touch["touch_id"],
            now,
            status=TouchStatus.SCHEDULED.value,
            due_at=now + delay,
            reason=f"retry {attempts + 1} after: {error}"[:500],
            lease_until=None,
            lease_owner=None,
            sent_at=None,
        )
        return "retry"

    async def _finish(
        self,
        session: AsyncSession,
        touch: dict[str, Any],
        status: TouchStatus,
        reason: str,
        now: datetime,
        messages: list[Outgoing],
    ) -> str:
        await repository.set_touch(
            session,
            touch["touch_id"],
            now,
            status=status.value,
            reason=reason[:500],
            lease_until=None,
            lease_owner=None,
            sent_at=None,
        )
        if status is TouchStatus.SUPPRESSED:
            await repository.record_suppression(
                session,
                touch_id=touch["touch_id"],
                customer_id=touch["customer_id"],
                plan=touch["plan"],
                reason=reason,
                now=now,
            )
        messages.append(repository.touch_lifecycle(touch, status, now, reason=reason))
        return status.value

    # --- crash recovery ---------------------------------------------------------------------

    async def recover(self) -> int:
        """Settle attempts whose process died (their lease expired). See the module docstring."""
        now = self._clock()
        async with self._sessions() as session:
            stale = (
                await session.execute(
                    select(
                        touch_attempts.c.attempt_id,
                        touch_attempts.c.touch_id,
                        touch_attempts.c.state,
                        touch_attempts.c.channel,
                    )
                    .where(touch_attempts.c.state.in_(["preparing", "sending"]), touch_attempts.c.lease_until < now)
                    .limit(self._settings.dispatch_batch)
                )
            ).all()
        for row in stale:
            await self._recover_one(row.attempt_id, row.touch_id, row.state, Channel(row.channel), now)
        return len(stale)

    async def _recover_one(self, attempt_id: str, touch_id: str, state: str, channel: Channel, now: datetime) -> None:
        messages: list[Outgoing] = []
        adapter = self._adapters.get(channel)
        async with self._tx() as session:
            claimed = await session.execute(
                update(touch_attempts)
                .where(
                    touch_attempts.c.attempt_id == attempt_id,
                    touch_attempts.c.state == state,
                    touch_attempts.c.lease_until < now,
                )
                .values(
                    state="abandoned" if state == "preparing" else "unknown",
                    finished_at=now,
                    detail="lease expired: the dispatcher stopped during this attempt",
                )
            )
            if not getattr(claimed, "rowcount", 0):
                return  # another dispatcher settled it
            touch = await repository.get_touch(session, touch_id, lock=True)
            if touch is None or touch["status"] != repository.SENDING:
                return
            if state == "sending" and (adapter is None or not adapter.resend_when_unsure):
                reason = "unconfirmed: the dispatcher stopped after handing the message to the channel; not resent"
                await repository.set_touch(
                    session,
                    touch_id,
                    now,
                    status=TouchStatus.SENT.value,
                    reason=reason,
                    lease_until=None,
                    lease_owner=None,
                )
                messages.append(repository.touch_lifecycle(touch, TouchStatus.SENT, now, reason=reason))
                outcome = "recovered_sent_unconfirmed"
            else:
                # Nothing crossed the point of no return (or the far side dedupes by key): send again.
                await repository.set_touch(
                    session,
                    touch_id,
                    now,
                    status=TouchStatus.SCHEDULED.value,
                    due_at=now,
                    reason=f"recovered after an interrupted attempt ({state})",
                    lease_until=None,
                    lease_owner=None,
                    sent_at=None,
                )
                outcome = "recovered_retry"
            for message in messages:
                await enqueue(session, outbox, message)
        log.warning(
            "recovered touch %s from an interrupted %s attempt: %s",
            touch_id,
            state,
            outcome,
            extra={"touch_id": touch_id},
        )
        self._count(touch["plan"], outcome)
        self._after_commit(messages)

    # --- helpers ----------------------------------------------------------------------------

    def _count(self, plan: str, outcome: str) -> None:
        self._metrics.outcomes.labels(plan, outcome).inc()

    def _after_commit(self, messages: list[Outgoing]) -> None:
        if messages and self._relay is not None:
            self._relay.notify()


async def release_leases(sessions: async_sessionmaker[AsyncSession], owner: str) -> None:
    """On a clean shutdown, hand back claimed-but-untouched work at once (no lease wait)."""
    async with transaction(sessions) as session:
        await session.execute(
            update(touches)
            .where(touches.c.lease_owner == owner, touches.c.status == TouchStatus.SCHEDULED.value)
            .values(lease_until=None, lease_owner=None)
        )
