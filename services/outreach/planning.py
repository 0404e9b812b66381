"""Service layer of planning: the plans in force (cached, reloaded when edited anywhere), the
shipped defaults seeded into the database, and ``apply_planned`` — turning a planned touch into a
stored one under the contact policy (holdout, refusals, dedupe window, offer budget, approval)."""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.outreach import repository
from services.outreach.calendar import Holiday, customer_zone, load_holidays
from services.outreach.care import (
    ActivePlan,
    PlanBook,
    PlannedTouch,
    PlanningDefaults,
    budget_period_start,
    decide_offer,
)
from services.outreach.plans import PlanError, load_plan_file, parse_plan, with_follow_up_delay
from services.outreach.policy import ConsentBook, explicitly_refused, in_holdout
from services.outreach.render import TemplateSpec, load_template_file
from services.outreach.settings import OutreachSettings
from shared.contracts import CustomerSnapshot, Purpose, TouchStatus
from shared.db import transaction
from shared.kafka import Outgoing

log = logging.getLogger("huitou.outreach.planning")


def planning_defaults(settings: OutreachSettings) -> PlanningDefaults:
    return PlanningDefaults(
        expires_after=settings.default_expires_after,
        attribution_window=settings.default_attribution_window,
        timezone=settings.default_timezone,
        locale=settings.default_locale,
    )


@dataclass
class Catalog:
    book: PlanBook
    templates: dict[str, TemplateSpec]


class PlanCatalog:
    """Care plans and templates in force, read from the database and kept in memory.

    A replica re-reads them when their fingerprint changes (checked at most every
    ``plan_refresh_seconds``), and at once after an edit through its own API."""

    def __init__(self, sessions: async_sessionmaker[AsyncSession], settings: OutreachSettings) -> None:
        self._sessions = sessions
        self._settings = settings
        self._file = load_plan_file(settings.care_plans_file)
        self._holidays: dict[str, Holiday] = load_holidays(settings.holidays_file)
        self._catalog: Catalog | None = None
        self._stamp: tuple[Any, ...] | None = None
        self._checked = 0.0
        self._lock = asyncio.Lock()

    @property
    def holidays(self) -> dict[str, Holiday]:
        return self._holidays

    def invalidate(self) -> None:
        self._checked = 0.0
        self._stamp = None

    async def current(self) -> Catalog:
        if self._catalog is not None and time.monotonic() - self._checked < self._settings.plan_refresh_seconds:
            return self._catalog
        async with self._lock:
            if self._catalog is not None and time.monotonic() - self._checked < self._settings.plan_refresh_seconds:
                return self._catalog
            async with self._sessions() as session:
                stamp = await repository.plans_stamp(session)
                if self._catalog is None or stamp != self._stamp:
                    self._catalog = await self._load(session)
                    self._stamp = stamp
            self._checked = time.monotonic()
            return self._catalog

    async def _load(self, session: AsyncSession) -> Catalog:
        active: list[ActivePlan] = []
        for row in await repository.stored_plans(session):
            try:
                active.append(ActivePlan(parse_plan(row["definition"]), row["version"]))
            except PlanError as error:
                log.error("stored care plan %s is invalid and ignored: %s", row["name"], error)
        templates: dict[str, TemplateSpec] = {}
        for row in await repository.stored_templates(session):
            try:
                templates[row["name"]] = TemplateSpec.model_validate({"name": row["name"], "locales": row["locales"]})
            except ValueError as error:
                log.error("stored template %s is invalid and ignored: %s", row["name"], error)
        book = PlanBook(
            plans=tuple(active),
            grade_order=tuple(self._file.grade_order),
            tier_benefits={tier.value: dict(texts) for tier, texts in self._file.tier_benefits.items()},
            holidays=self._holidays,
        )
        return Catalog(book, templates)

    async def seed_defaults(self) -> None:
        """Store the shipped plans and templates; refresh the ones no operator has edited."""
        now = datetime.now(UTC)
        plans = with_follow_up_delay(self._file.plans, self._settings.follow_up_delay)
        shipped_templates = load_template_file(self._settings.templates_file)
        try:
            async with transaction(self._sessions) as session:
                for plan in plans:
                    definition = plan.version_payload()
                    stored = await repository.stored_plan(session, plan.name)
                    if stored is None:
                        await repository.save_plan(
                            session, plan.name, definition, origin="default", action="created", by="defaults", now=now
                        )
                    elif stored["origin"] == "default" and not stored["deleted"] and stored["definition"] != definition:
                        await repository.save_plan(
                            session, plan.name, definition, origin="default", action="refreshed", by="defaults", now=now
                        )
                for template in shipped_templates:
                    locales = template.model_dump(mode="json", exclude_defaults=False)["locales"]
                    stored_t = await repository.stored_template(session, template.name)
                    if stored_t is None or (stored_t["origin"] == "default" and stored_t["locales"] != locales):
                        await repository.save_template(
                            session, template.name, locales, origin="default", by="defaults", now=now
                        )
        except IntegrityError:
            log.info("another replica seeded the default care plans first")
        self.invalidate()


async def apply_planned(
    session: AsyncSession,
    planned: PlannedTouch,
    *,
    cause_event_id: str,
    book: PlanBook,
    settings: OutreachSettings,
    now: datetime,
    snapshot: CustomerSnapshot | None,
    trace_id: str | None = None,
    known: PlanningReads | None = None,
) -> list[Outgoing]:
    """Store one planned touch unless its key exists; returns the lifecycle messages to enqueue.

    ``known`` carries what earlier touches of the same run already read, so a run of touches
    does not ask the database the same questions once per touch."""
    if known is not None and known.touch_keys is not None:
        if planned.idempotency_key in known.touch_keys:
            return []
    elif await repository.touch_key_exists(session, planned.idempotency_key):
        return []
    if planned.dedupe_window is not None and await repository.recent_touch_of_plan(
        session, planned.customer_id, planned.plan, planned.due_at, planned.dedupe_window
    ):
        return []  # a touch of this plan went (or goes) out within the window: not a new moment
    active = book.get(planned.plan)
    status = TouchStatus.SCHEDULED.value
    reason: str | None = None
    holdout = False
    if planned.purpose is Purpose.MARKETING and in_holdout(
        planned.customer_id, salt=settings.holdout_salt, share=settings.holdout_share
    ):
        # Recorded, not dropped: the holdout's would-have-been touches are the baseline of lift.
        status, reason, holdout = TouchStatus.SUPPRESSED.value, "holdout", True
        planned = _without_offer(planned)
    elif active is not None:
        explicit = await _explicit_consents(session, planned.customer_id, known)
        if explicitly_refused(active.plan.channels, planned.purpose, explicit, snapshot):
            status, reason = TouchStatus.SUPPRESSED.value, f"no_consent: refused on every channel ({planned.purpose})"
            planned = _without_offer(planned)
    if status == TouchStatus.SCHEDULED.value and planned.offer is not None and active is not None:
        planned, status, reason = await _offer(session, planned, active, settings, snapshot, now)
    touch_id = await repository.insert_touch(
        session,
        planned,
        cause_event_id=cause_event_id,
        status=status,
        reason=reason,
        holdout=holdout,
        now=now,
        trace_id=trace_id,
    )
    if known is not None and known.touch_keys is not None:
        known.touch_keys.add(planned.idempotency_key)
    messages: list[Outgoing] = []
    common: dict[str, Any] = {
        "customer_id": planned.customer_id,
        "touch_id": touch_id,
        "plan": planned.plan,
        "now": now,
        "channel": planned.channel.value if planned.channel else None,
        "due_at": planned.due_at,
        "trace_id": trace_id,
    }
    if status == TouchStatus.SUPPRESSED.value:
        assert reason is not None
        await repository.record_suppression(
            session, touch_id=touch_id, customer_id=planned.customer_id, plan=planned.plan, reason=reason, now=now
        )
        messages.append(repository.lifecycle_message(status=TouchStatus.SUPPRESSED, reason=reason, **common))
        return messages
    if status == repository.PENDING_APPROVAL:
        messages.append(
            repository.lifecycle_message(
                status=TouchStatus.SCHEDULED, reason=reason, event_suffix=repository.PENDING_APPROVAL, **common
            )
        )
    else:
        messages.append(repository.lifecycle_message(status=TouchStatus.SCHEDULED, reason=reason, **common))
    if planned.opens_task is not None:
        task = planned.opens_task
        await repository.open_task(
            session,
            customer_id=planned.customer_id,
            touch_id=touch_id,
            kind=task.kind,
            summary=_task_summary(planned),
            acknowledge_by=now + task.acknowledge_within,
            resolve_by=now + task.resolve_within,
            now=now,
        )
    return messages


@dataclass
class PlanningReads:
    """Reads shared by the touches one event plans, all in one transaction.

    ``touch_keys``: the existing idempotency keys among the run's touches, looked up together
    (see ``repository.existing_touch_keys``) and extended as touches are stored; None means
    "not looked up", and each touch asks on its own. ``consents``: explicit consents per
    customer, read once; valid as long as nothing in the run records a consent.
    """

    touch_keys: set[str] | None = None
    consents: dict[str, ConsentBook] = field(default_factory=dict)


async def _explicit_consents(session: AsyncSession, customer_id: str, known: PlanningReads | None) -> ConsentBook:
    if known is None:
        return await repository.explicit_consents(session, customer_id)
    if customer_id not in known.consents:
        known.consents[customer_id] = await repository.explicit_consents(session, customer_id)
    return known.consents[customer_id]


async def _offer(
    session: AsyncSession,
    planned: PlannedTouch,
    active: ActivePlan,
    settings: OutreachSettings,
    snapshot: CustomerSnapshot | None,
    now: datetime,
) -> tuple[PlannedTouch, str, str | None]:
    plan = active.plan
    assert plan.offer is not None
    spent = Decimal(0)
    if plan.offer.budget is not None:
        local_now = now.astimezone(customer_zone(None, settings.default_timezone))
        since = budget_period_start(plan.offer.budget.per, local_now)
        spent = await repository.offer_spent(session, plan.name, since)
    decision = decide_offer(plan, planned.offer, spent_this_period=spent)
    if decision.terms is None:
        return _without_offer(planned), TouchStatus.SCHEDULED.value, decision.note
    if decision.needs_approval:
        return (
            planned,
            repository.PENDING_APPROVAL,
            f"offer {decision.terms.code} worth {decision.terms.value} needs approval",
        )
    return planned, TouchStatus.SCHEDULED.value, None


def _without_offer(planned: PlannedTouch) -> PlannedTouch:
    from dataclasses import replace

    return replace(planned, offer=None)


def _task_summary(planned: PlannedTouch) -> str:
    facts = planned.context
    cause = facts.get("cause") or {}
    parts = [f"{planned.plan} for {planned.customer_id}"]
    if cause.get("kind") or cause.get("interaction_kind"):
        parts.append(f"after a {cause.get('kind') or cause.get('interaction_kind')}")
    if facts.get("rating") is not None:
        parts.append(f"rated {facts['rating']}/5")
    if facts.get("complaint_id"):
        parts.append(f"complaint {facts['complaint_id']}")
    summary = " ".join(parts)
    if facts.get("complaint_text"):
        summary += f": {facts['complaint_text']}"
    return summary
