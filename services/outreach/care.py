"""The care-plan engine (pure): which touches a customer-file change, an intake event or a
calendar moment calls for, for whom, when, and under which idempotency key.

Nothing here reads a clock or a database: ``now`` and the plans are handed in, so a backfill
gives the same answer as live traffic and every rule is testable on its own.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from decimal import Decimal
from functools import cached_property
from typing import Any

from services.outreach.calendar import Holiday, customer_zone, local_due, moments
from services.outreach.plans import (
    CHURN_ORDER,
    TIER_ORDER,
    AudienceFilter,
    CarePlan,
    ChangeTrigger,
    EventTrigger,
    OfferTerms,
    TaskSpec,
)
from shared.contracts import (
    Channel,
    CustomerSnapshot,
    CustomerUpdatedPayload,
    FieldChange,
    InteractionEvent,
    InteractionKind,
    Purpose,
)

POST_PURCHASE_FOLLOW_UP = "post_purchase_follow_up"


@dataclass(frozen=True)
class ActivePlan:
    plan: CarePlan
    version: int


@dataclass(frozen=True)
class PlanBook:
    """The care plans in force, with what templates need to know about tiers and grades."""

    plans: tuple[ActivePlan, ...]
    grade_order: tuple[str, ...] = ("regular", "silver", "gold", "vip")
    tier_benefits: Mapping[str, Mapping[str, str]] = field(default_factory=dict)
    holidays: Mapping[str, Holiday] = field(default_factory=dict)

    def of_kind(self, kind: str) -> list[ActivePlan]:
        return list(self._enabled_by_kind.get(kind, ()))

    @cached_property
    def _enabled_by_kind(self) -> dict[str, list[ActivePlan]]:
        # Asked several times per event (on every customer.updated: event, change and calendar
        # plans), while a book lives until the catalog changes: filtered once.
        grouped: dict[str, list[ActivePlan]] = {}
        for active in self.plans:
            if active.plan.enabled:
                grouped.setdefault(active.plan.trigger.kind, []).append(active)
        return grouped

    def get(self, name: str) -> ActivePlan | None:
        return next((p for p in self.plans if p.plan.name == name), None)


@dataclass(frozen=True)
class PlanningDefaults:
    expires_after: timedelta = timedelta(days=7)
    attribution_window: timedelta = timedelta(days=7)
    timezone: str = "Asia/Shanghai"
    locale: str = "zh-CN"


@dataclass(frozen=True)
class PlannedTouch:
    plan: str
    idempotency_key: str
    due_at: datetime
    channel: Channel | None
    customer_id: str = ""
    plan_version: int = 1
    purpose: Purpose = Purpose.MARKETING
    priority: int = 50
    expires_at: datetime | None = None
    attribution_window: timedelta = timedelta(days=7)
    dedupe_window: timedelta | None = None
    offer: OfferTerms | None = None
    opens_task: TaskSpec | None = None
    context: dict[str, Any] = field(default_factory=dict)


def preferred_channel(
    snapshot: CustomerSnapshot | None, channels: Sequence[Channel] = tuple(Channel)
) -> Channel | None:
    """The first of ``channels`` we have an address for (push/webhook address the customer id)."""
    for channel in channels:
        if channel is Channel.EMAIL and snapshot is not None and snapshot.email:
            return channel
        if channel is Channel.SMS and snapshot is not None and snapshot.phone:
            return channel
        if channel in (Channel.PUSH, Channel.WEBHOOK):
            return channel
    return None


# --- audience ---------------------------------------------------------------------------------


def audience_matches(audience: AudienceFilter, snapshot: CustomerSnapshot) -> bool:
    checks: list[tuple[Sequence[Any] | None, Any]] = [
        (audience.tiers, snapshot.value_tier),
        (audience.grades, snapshot.grade),
        (audience.stages, snapshot.stage),
        (audience.churn_bands, snapshot.churn_band),
        (audience.relationship_types, snapshot.relationship_type),
        (audience.prospect_grades, snapshot.prospect_grade),
        (audience.locales, snapshot.locale),
    ]
    for allowed, value in checks:
        if allowed is not None and value not in allowed:
            return False
    tags = set(snapshot.tags)
    if audience.tags_any is not None and not tags & set(audience.tags_any):
        return False
    if audience.tags_none is not None and tags & set(audience.tags_none):
        return False
    if audience.min_order_count is not None and snapshot.order_count < audience.min_order_count:
        return False
    if audience.max_order_count is not None and snapshot.order_count > audience.max_order_count:
        return False
    if audience.contactable and not (snapshot.email or snapshot.phone):
        return False
    return audience.any_of is None or any(audience_matches(alt, snapshot) for alt in audience.any_of)


# --- triggers ---------------------------------------------------------------------------------


def change_matches(trigger: ChangeTrigger, change: FieldChange, grade_order: Sequence[str]) -> bool:
    if change.field != trigger.field or change.before == change.after:
        return False
    after = _text(change.after)
    before = _text(change.before)
    if trigger.to and after not in trigger.to:
        return False
    if trigger.from_ and before not in trigger.from_:
        return False
    if trigger.direction == "any":
        return True
    order = _order_of(trigger.field, grade_order)
    # A first score (from nothing) is not a move: thanking a customer for "rising" into the
    # lowest grade, or warning of a risk they never left, would be noise.
    if order is None or after not in order or before not in order:
        return False
    moved_up = order.index(after) > order.index(before)
    return moved_up if trigger.direction == "up" else not moved_up


def event_matches(
    trigger: EventTrigger,
    *,
    cause_type: str,
    interaction_kind: InteractionKind | None,
    rating: int | None,
    order_count: int,
) -> bool:
    if cause_type not in trigger.types:
        return False
    if cause_type == "purchase" and trigger.first_purchase and order_count != 1:
        return False
    if cause_type == "interaction" and (trigger.interaction_kinds or trigger.low_rating_at_most is not None):
        kind_ok = interaction_kind in trigger.interaction_kinds
        low_rating = (
            trigger.low_rating_at_most is not None
            and interaction_kind is InteractionKind.FEEDBACK
            and rating is not None
            and rating <= trigger.low_rating_at_most
        )
        return kind_ok or low_rating
    return True


# --- planning ---------------------------------------------------------------------------------


def plan_update(
    customer_id: str,
    update: CustomerUpdatedPayload,
    book: PlanBook,
    *,
    now: datetime,
    defaults: PlanningDefaults = PlanningDefaults(),
    referrer: CustomerSnapshot | None = None,
) -> list[PlannedTouch]:
    """Touches a customer-file change calls for: event plans on its cause, change plans on its
    changes. A historical (backfilled) cause never triggers a touch whose moment has passed."""
    cause = update.cause
    snapshot = update.snapshot
    planned: list[PlannedTouch] = []
    for active in book.of_kind("event"):
        trigger = active.plan.trigger.event
        assert trigger is not None
        if not event_matches(
            trigger,
            cause_type=cause.type,
            interaction_kind=cause.interaction_kind,
            rating=None,
            order_count=snapshot.order_count,
        ):
            continue
        recipient: str = customer_id
        recipient_snapshot: CustomerSnapshot | None = snapshot
        facts: dict[str, Any] = {}
        if trigger.recipient == "referrer":
            if not snapshot.referred_by:
                continue
            recipient, recipient_snapshot = snapshot.referred_by, referrer
            facts = {"referred_customer_id": customer_id, "referred_name": snapshot.first_name or snapshot.name}
        if recipient_snapshot is not None and not audience_matches(active.plan.audience, recipient_snapshot):
            continue
        touch = _touch(
            active,
            recipient,
            recipient_snapshot,
            anchor=cause.occurred_at,
            event_id=cause.event_id,
            order_id=cause.order_id,
            facts={**_cause_facts(update), **facts},
            defaults=defaults,
        )
        if touch is not None and not _moment_passed(touch, cause.historical, now):
            planned.append(touch)
    for active in book.of_kind("change"):
        change_trigger = active.plan.trigger.change
        assert change_trigger is not None
        change = next((c for c in update.changes if change_matches(change_trigger, c, book.grade_order)), None)
        if change is None or not audience_matches(active.plan.audience, snapshot):
            continue
        facts = {
            **_cause_facts(update),
            "change": {"field": change.field, "before": change.before, "after": change.after, "reason": change.reason},
        }
        touch = _touch(
            active,
            customer_id,
            snapshot,
            anchor=cause.occurred_at,
            event_id=cause.event_id,
            order_id=cause.order_id,
            facts=facts,
            defaults=defaults,
        )
        if touch is not None and not _moment_passed(touch, cause.historical, now):
            planned.append(touch)
    return planned


def plan_intake(
    event: InteractionEvent,
    snapshot: CustomerSnapshot | None,
    book: PlanBook,
    *,
    now: datetime,
    defaults: PlanningDefaults = PlanningDefaults(),
) -> list[PlannedTouch]:
    """Plans marked ``from_intake`` answer an interaction straight from ``huitou.events`` — a
    complaint should not wait for scoring. Same idempotency key as the later customer.updated."""
    planned: list[PlannedTouch] = []
    for active in book.of_kind("event"):
        trigger = active.plan.trigger.event
        assert trigger is not None
        if not trigger.from_intake or trigger.recipient != "customer":
            continue
        if not event_matches(
            trigger,
            cause_type="interaction",
            interaction_kind=event.payload.kind,
            rating=event.payload.rating,
            order_count=snapshot.order_count if snapshot else 0,
        ):
            continue
        if snapshot is not None and not audience_matches(active.plan.audience, snapshot):
            continue
        facts = {
            "cause": {
                "type": "interaction",
                "event_id": event.event_id,
                "kind": event.payload.kind.value,
                "interaction_kind": event.payload.kind.value,
                "occurred_at": event.occurred_at.isoformat(),
                "order_id": None,
                "amount": None,
            },
            "referred_customer_id": None,
            "referred_name": None,
            "rating": event.payload.rating,
            "complaint_id": event.payload.complaint_id,
            "complaint_text": (event.payload.text or "")[:500] or None,
        }
        touch = _touch(
            active,
            event.customer_id,
            snapshot,
            anchor=event.occurred_at,
            event_id=event.event_id,
            order_id=None,
            facts=facts,
            defaults=defaults,
        )
        if touch is not None and not _moment_passed(touch, event.historical, now):
            planned.append(touch)
    return planned


def plan_calendar(
    customer_id: str,
    snapshot: CustomerSnapshot,
    book: PlanBook,
    *,
    now: datetime,
    horizon: timedelta,
    defaults: PlanningDefaults = PlanningDefaults(),
) -> list[PlannedTouch]:
    """Calendar moments due within ``horizon``, on the customer's local date. A moment later
    today whose hour has passed is due at once (the dispatcher still honours the send window)."""
    zone = customer_zone(snapshot, defaults.timezone)
    today = now.astimezone(zone).date()
    last = (now + horizon).astimezone(zone).date()
    locale = snapshot.locale or defaults.locale
    planned: list[PlannedTouch] = []
    for active in book.of_kind("calendar"):
        plan = active.plan
        trigger = plan.trigger.calendar
        assert trigger is not None
        if not audience_matches(plan.audience, snapshot):
            continue
        for moment in moments(
            trigger,
            customer_id=customer_id,
            plan=plan.name,
            snapshot=snapshot,
            zone=zone,
            first=today,
            last=last,
            locale=locale,
            holidays=dict(book.holidays),
        ):
            at = local_due(moment.day, trigger.at, zone)
            if at > now + horizon:
                continue
            expires = at + (plan.expires_after or defaults.expires_after)
            if expires <= now:
                continue
            touch = _touch(
                active,
                customer_id,
                snapshot,
                anchor=max(at, now),
                event_id=None,
                order_id=None,
                facts={**moment.facts, "moment": moment.token, "moment_date": moment.day.isoformat()},
                defaults=defaults,
                moment=moment.token,
                expires_at=expires,
            )
            if touch is not None:
                planned.append(touch)
    return planned


def _touch(
    active: ActivePlan,
    customer_id: str,
    snapshot: CustomerSnapshot | None,
    *,
    anchor: datetime,
    event_id: str | None,
    order_id: str | None,
    facts: dict[str, Any],
    defaults: PlanningDefaults,
    moment: str | None = None,
    expires_at: datetime | None = None,
) -> PlannedTouch | None:
    plan = active.plan
    due = anchor + plan.delay
    zone = customer_zone(snapshot, defaults.timezone)
    token = _dedupe_token(plan.dedupe.per, due.astimezone(zone).date(), event_id, order_id, moment)
    if token is None:
        return None
    offer = None
    if plan.offer is not None and snapshot is not None and snapshot.value_tier is not None:
        offer = plan.offer.by_tier.get(snapshot.value_tier)
    return PlannedTouch(
        plan=plan.name,
        plan_version=active.version,
        customer_id=customer_id,
        # One touch per key, whatever the number of replays, resends and planner runs.
        idempotency_key=f"{plan.dedupe.key or plan.name}:{customer_id}:{token}",
        due_at=due,
        expires_at=expires_at or due + (plan.expires_after or defaults.expires_after),
        channel=preferred_channel(snapshot, plan.channels),
        purpose=plan.purpose,
        priority=plan.priority,
        attribution_window=plan.attribution_window or defaults.attribution_window,
        dedupe_window=plan.dedupe.window,
        offer=offer,
        opens_task=plan.opens_task,
        context=facts,
    )


def _dedupe_token(
    per: str, local_day: date, event_id: str | None, order_id: str | None, moment: str | None
) -> str | None:
    iso = local_day.isocalendar()
    match per:
        case "once":
            return "once"
        case "event":
            return event_id or moment
        case "order":
            return order_id
        case "moment":
            return moment
        case "day":
            return local_day.isoformat()
        case "week":
            return f"{iso.year}-W{iso.week:02d}"
        case "month":
            return f"{local_day.year}-{local_day.month:02d}"
        case "quarter":
            return f"{local_day.year}-Q{(local_day.month - 1) // 3 + 1}"
        case "year":
            return str(local_day.year)
    return None


def _moment_passed(touch: PlannedTouch, historical: bool, now: datetime) -> bool:
    """A backfilled event whose touch would be due already: its moment has passed. Any event
    (live or not) arriving after the touch would have expired is too late as well."""
    if historical and touch.due_at <= now:
        return True
    return touch.expires_at is not None and touch.expires_at <= now


def _cause_facts(update: CustomerUpdatedPayload) -> dict[str, Any]:
    cause = update.cause
    return {
        "cause": {
            "type": cause.type,
            "event_id": cause.event_id,
            "occurred_at": cause.occurred_at.isoformat(),
            "order_id": cause.order_id,
            "amount": str(cause.amount) if cause.amount is not None else None,
            "interaction_kind": cause.interaction_kind.value if cause.interaction_kind else None,
            "kind": cause.interaction_kind.value if cause.interaction_kind else None,
        },
        # Known only on huitou.events (plan_intake fills them); present so templates can test them.
        "rating": None,
        "complaint_id": None,
        "complaint_text": None,
        "referred_customer_id": None,
        "referred_name": None,
    }


def _order_of(field_name: str, grade_order: Sequence[str]) -> Sequence[str] | None:
    if field_name == "value_tier":
        return TIER_ORDER
    if field_name == "churn_band":
        return CHURN_ORDER
    if field_name == "grade":
        return grade_order
    return None


def _text(value: Any) -> str | None:
    return None if value is None else str(getattr(value, "value", value))


# --- offers -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class OfferDecision:
    terms: OfferTerms | None
    needs_approval: bool
    note: str | None


def decide_offer(plan: CarePlan, terms: OfferTerms | None, *, spent_this_period: Decimal) -> OfferDecision:
    """Attach the tier's offer only while the plan's budget lasts; costly ones need approval.
    Without an offer the touch still goes out — sincere care, not a bribe [002 L517]."""
    if terms is None or plan.offer is None:
        return OfferDecision(None, False, None)
    budget = plan.offer.budget
    if budget is not None and spent_this_period + terms.value > budget.amount:
        return OfferDecision(None, False, "offer budget exhausted; sent without an offer")
    approval = plan.offer.approval_above
    return OfferDecision(terms, approval is not None and terms.value > approval, None)


def budget_period_start(per: str, local_now: datetime) -> datetime:
    """Start of the budget period containing ``local_now`` (in its own zone)."""
    start = local_now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    if per == "quarter":
        start = start.replace(month=(local_now.month - 1) // 3 * 3 + 1)
    elif per == "year":
        start = start.replace(month=1)
    return start


def sample_facts(
    plan: CarePlan, snapshot: CustomerSnapshot, holidays: Mapping[str, Holiday], locale: str
) -> dict[str, Any]:
    """Facts a preview renders with: the customer's real data, and for the trigger the most
    plausible moment (their last order, their current tier, the plan's first festival…)."""
    trigger = plan.trigger
    facts: dict[str, Any] = {
        "cause": {
            "type": "purchase",
            "event_id": "preview",
            "occurred_at": (snapshot.last_purchase_at.isoformat() if snapshot.last_purchase_at else None),
            "order_id": snapshot.last_order_id,
            "amount": str(snapshot.last_order_amount) if snapshot.last_order_amount is not None else None,
            "interaction_kind": None,
            "kind": None,
        },
        "rating": None,
        "complaint_id": None,
        "complaint_text": None,
        "referred_customer_id": None,
        "referred_name": None,
    }
    if trigger.change is not None:
        current = getattr(snapshot, trigger.change.field, None)
        after = _text(current) or (trigger.change.to[0] if trigger.change.to else None)
        facts["change"] = {"field": trigger.change.field, "before": None, "after": after, "reason": "preview"}
    if trigger.calendar is not None:
        calendar_trigger = trigger.calendar
        facts.update(
            {
                "moment": "preview",
                "moment_date": None,
                "lunar": bool(calendar_trigger.prefer_lunar and snapshot.lunar_birthday),
            }
        )
        facts["years"] = 1
        facts["period"] = "preview"
        facts["expected_next_order_on"] = (
            snapshot.expected_next_order_at.date().isoformat() if snapshot.expected_next_order_at else None
        )
        for name in calendar_trigger.holidays:
            holiday = holidays.get(name)
            if holiday is not None:
                facts["holiday"] = name
                facts["holiday_title"] = holiday.titles.get(locale) or holiday.titles.get("en") or name
                break
    return facts
