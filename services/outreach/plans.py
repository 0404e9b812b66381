"""Care plans: the declarative description of one kind of care touch (pure; no I/O but parsing).

A plan says *when* (trigger, delay, send window), *for whom* (audience), *how* (channels with
fallback, template, priority), *how often* (dedupe key and window), *with what* (optional offer
by tier, with a budget and an approval step) and *under which rules* (marketing or
transactional). The shipped defaults live in ``care_plans.yaml``; operators edit copies stored in
the database through the internal API, and every edit is a new version.
"""

from __future__ import annotations

import re
from datetime import time, timedelta
from decimal import Decimal
from enum import StrEnum
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from shared.contracts import (
    Channel,
    ChurnBand,
    InteractionKind,
    LifecycleStage,
    Purpose,
    ValueTier,
    explain,
)

PLAN_NAME = r"^[a-z][a-z0-9_]{1,63}$"
CHANGE_FIELDS = (
    "value_tier",
    "grade",
    "stage",
    "churn_band",
    "relationship_type",
    "loyalty_quadrant",
    "prospect_grade",
)
# Better first: an "up" move of value_tier is D→A, of grade regular→vip; churn_band rises low→high.
TIER_ORDER = ("D", "C", "B", "A")
CHURN_ORDER = ("low", "medium", "high")
DEFAULT_GRADE_ORDER = ("regular", "silver", "gold", "vip")


class PlanError(ValueError):
    """A care plan (or plan file) that cannot be used, with one readable line per problem."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("; ".join(problems))


class Spec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class EventTrigger(Spec):
    """Something the customer did (an intake type, seen through ``huitou.customers``)."""

    types: list[Literal["purchase", "refund", "identify", "interaction", "consent"]] = Field(min_length=1)
    interaction_kinds: list[InteractionKind] = Field(
        default_factory=list, description="for interaction events: only these kinds (empty = any)"
    )
    low_rating_at_most: int | None = Field(
        None, ge=1, le=5, description="feedback rated at most this also matches (rating seen on huitou.events)"
    )
    first_purchase: bool = Field(False, description="a purchase matches only if it is the customer's first")
    recipient: Literal["customer", "referrer"] = Field(
        "customer", description="referrer: the touch goes to whoever referred this customer"
    )
    from_intake: bool = Field(
        False,
        description="also fire straight from huitou.events (e.g. complaints: minutes matter); "
        "the idempotency key makes the later customer.updated a no-op",
    )


class ChangeTrigger(Spec):
    """A score of the customer file moved (tier, grade, stage, churn band…)."""

    field: str
    to: list[str] = Field(default_factory=list, description="new value in this list (empty = any)")
    from_: list[str] = Field(default_factory=list, alias="from", description="old value in this list (empty = any)")
    direction: Literal["up", "down", "any"] = Field(
        "any", description="for ordered fields: up = better tier/grade, or higher churn risk"
    )

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    @field_validator("field")
    @classmethod
    def _known(cls, value: str) -> str:
        if value not in CHANGE_FIELDS:
            raise ValueError(f"change trigger field must be one of {', '.join(CHANGE_FIELDS)}")
        return value


class CalendarMoment(StrEnum):
    BIRTHDAY = "birthday"
    SIGNUP_ANNIVERSARY = "signup_anniversary"
    EXPECTED_NEXT_ORDER = "expected_next_order"
    HOLIDAY = "holiday"
    PERIODIC = "periodic"


class CalendarTrigger(Spec):
    """A moment in the customer's calendar, found by the planner's horizon scan."""

    moment: CalendarMoment
    at: time = Field(time(10, 0), description="local time of day the touch is due")
    prefer_lunar: bool = Field(False, description="birthday: use the lunar birthday when the file has one")
    holidays: list[str] = Field(default_factory=list, description="holiday: names from holidays.yaml")
    every: Literal["month", "quarter", "half_year", "year"] | None = Field(None, description="periodic: how often")
    offset: timedelta = Field(timedelta(0), description="expected_next_order: e.g. -P2D = two days before")

    @model_validator(mode="after")
    def _needs(self) -> CalendarTrigger:
        if self.moment is CalendarMoment.HOLIDAY and not self.holidays:
            raise ValueError("a holiday trigger needs holidays: [names from the holiday calendar]")
        if self.moment is CalendarMoment.PERIODIC and self.every is None:
            raise ValueError("a periodic trigger needs every: month | quarter | half_year | year")
        return self


class Trigger(Spec):
    event: EventTrigger | None = None
    change: ChangeTrigger | None = None
    calendar: CalendarTrigger | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> Trigger:
        given = [name for name in ("event", "change", "calendar") if getattr(self, name) is not None]
        if len(given) != 1:
            raise ValueError("a trigger has exactly one of event, change or calendar")
        return self

    @property
    def kind(self) -> str:
        return "event" if self.event else "change" if self.change else "calendar"


class AudienceFilter(Spec):
    """Who a plan is for. Every given list must match (AND); ``null`` in a list matches an
    unknown value; ``any_of`` holds alternatives of which at least one must match."""

    tiers: list[ValueTier | None] | None = None
    grades: list[str | None] | None = None
    stages: list[LifecycleStage | None] | None = None
    churn_bands: list[ChurnBand | None] | None = None
    relationship_types: list[str | None] | None = None
    prospect_grades: list[str | None] | None = None
    locales: list[str | None] | None = None
    tags_any: list[str] | None = None
    tags_none: list[str] | None = None
    min_order_count: int | None = Field(None, ge=0)
    max_order_count: int | None = Field(None, ge=0)
    contactable: bool = Field(
        False, description="only customers with an email address or phone number on file when planned"
    )
    any_of: list[AudienceFilter] | None = None


class SendWindow(Spec):
    """Local hours a plan may send in (on top of the global quiet hours)."""

    start: time
    end: time

    @model_validator(mode="after")
    def _non_empty(self) -> SendWindow:
        if self.start == self.end:
            raise ValueError("send_window start and end must differ")
        return self


class Dedupe(Spec):
    """How often: one touch per ``per`` (the idempotency key), and at most one per ``window``."""

    per: Literal["once", "event", "order", "moment", "day", "week", "month", "quarter", "year"] = "event"
    key: str | None = Field(
        None, pattern=PLAN_NAME, description="share the key with other plans (e.g. birthday and lunar birthday)"
    )
    window: timedelta | None = Field(None, description="no second touch of this plan within this long")


class OfferTerms(Spec):
    code: str = Field(min_length=1, max_length=50)
    value: Decimal = Field(ge=0, max_digits=12, decimal_places=2, description="cost of the offer, in CNY")
    description: dict[str, str] = Field(default_factory=dict, description="per locale, shown in the template")


class OfferBudget(Spec):
    amount: Decimal = Field(ge=0, max_digits=14, decimal_places=2)
    per: Literal["month", "quarter", "year"] = "month"


class Offer(Spec):
    """An offer by tier; the seed warns against bribes [002 L517], so it is opt-in per tier."""

    by_tier: dict[ValueTier, OfferTerms] = Field(min_length=1)
    budget: OfferBudget | None = None
    approval_above: Decimal | None = Field(
        None, ge=0, description="offers worth more than this wait for an operator's approval"
    )


class TaskSpec(Spec):
    """An operator task the touch opens (complaint recovery escalates to a human)."""

    kind: str = Field(min_length=1, max_length=50)
    acknowledge_within: timedelta = timedelta(hours=4)
    resolve_within: timedelta = timedelta(hours=24)


class CarePlan(Spec):
    name: str = Field(pattern=PLAN_NAME)
    description: str = ""
    enabled: bool = True
    trigger: Trigger
    audience: AudienceFilter = AudienceFilter()
    delay: timedelta = timedelta(0)
    send_window: SendWindow | None = None
    channels: list[Channel] = Field(min_length=1, description="in order of preference; later ones are fallbacks")
    template: str = Field(pattern=PLAN_NAME)
    priority: int = Field(50, ge=0, le=1000, description="higher wins when touches collide")
    purpose: Purpose
    dedupe: Dedupe = Dedupe()
    offer: Offer | None = None
    opens_task: TaskSpec | None = None
    expires_after: timedelta | None = Field(None, description="deferred past due + this → suppressed")
    attribution_window: timedelta | None = Field(None, description="a purchase within this long converts the touch")

    @model_validator(mode="after")
    def _coherent(self) -> CarePlan:
        trigger = self.trigger
        if len(set(self.channels)) != len(self.channels):
            raise ValueError("channels must not repeat")
        if self.dedupe.per == "order" and not (trigger.event and trigger.event.types == ["purchase"]):
            raise ValueError("dedupe per order needs an event trigger on purchase only")
        if self.dedupe.per == "moment" and trigger.calendar is None:
            raise ValueError("dedupe per moment needs a calendar trigger")
        if trigger.calendar is not None and self.delay:
            raise ValueError("calendar plans are due at trigger.calendar.at; use offset, not delay")
        if self.opens_task is not None and self.purpose is not Purpose.TRANSACTIONAL:
            raise ValueError("a plan that opens an operator task answers the customer: make it transactional")
        return self

    def version_payload(self) -> dict[str, Any]:
        """The JSON stored per version (aliases, so it reads back through ``parse_plan``)."""
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)


class PlanFile(Spec):
    version: Literal[1] = 1
    grade_order: list[str] = Field(default_factory=lambda: list(DEFAULT_GRADE_ORDER))
    tier_benefits: dict[ValueTier, dict[str, str]] = Field(default_factory=dict)
    plans: list[CarePlan]

    @model_validator(mode="after")
    def _unique(self) -> PlanFile:
        names = [p.name for p in self.plans]
        duplicated = sorted({n for n in names if names.count(n) > 1})
        if duplicated:
            raise ValueError(f"plan names must be unique; repeated: {', '.join(duplicated)}")
        return self


def parse_plan(data: Any) -> CarePlan:
    """Validate one plan from decoded JSON/YAML; raises PlanError with fixable lines."""
    try:
        return CarePlan.model_validate(data)
    except ValidationError as error:
        raise PlanError(explain(error)) from None


def load_plan_file(path: Path) -> PlanFile:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
        return PlanFile.model_validate(data)
    except (OSError, yaml.YAMLError) as error:
        raise PlanError([f"{path}: {error}"]) from None
    except ValidationError as error:
        raise PlanError([f"{path}: {line}" for line in explain(error)]) from None


_ISO_DURATION = re.compile(r"^-?P")


def with_follow_up_delay(plans: list[CarePlan], delay: timedelta) -> list[CarePlan]:
    """Apply HUITOU_OUTREACH_FOLLOW_UP_DELAY to the shipped post-purchase follow-up."""
    return [p.model_copy(update={"delay": delay}) if p.name == "post_purchase_follow_up" else p for p in plans]
