"""The customer file (客户档案) as pure data and the rules that fold events into it.

No I/O here. Every fold is order-independent: sums and counts commute, first/last purchase are
min/max of event time, and a profile trait, consent, rating or stated intent keeps the value with
the latest ``occurred_at`` (ties broken by the value itself, never by arrival). So late and
out-of-order events give the same file as in-order ones.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any, TypeVar

from services.scoring.scorecard import FileFacts, Scorecard
from shared.contracts import (
    ConsentPayload,
    CustomerSnapshot,
    InteractionKind,
    InteractionPayload,
    PurchasePayload,
    Purpose,
    TouchPayload,
    TouchStatus,
    Traits,
    ValueTier,
)

SNAPSHOT_TRAITS = (
    "name",
    "first_name",
    "email",
    "phone",
    "locale",
    "timezone",
    "birthday",
    "lunar_birthday",
    "signup_at",
    "communication_style",
    "account_id",
)
COMPLAINT_TEXT_LIMIT = 1000
"""Characters of a complaint kept in the file (the event keeps the rest)."""


_Frozen = TypeVar("_Frozen", "CustomerFile", "PurchaseTotals")


def evolve(obj: _Frozen, /, **changes: Any) -> _Frozen:
    """``dataclasses.replace`` for the file's frozen dataclasses, without running ``__init__``.

    A file is copied with changes four to six times per event (fold, seen, scores, version);
    ``replace`` re-ran the frozen ``__init__`` over all 21 fields each time, ~10 % of scoring's
    CPU. Copying the instance dict is equal (tests/unit/test_scoring_file.py compares the two)
    because neither class has ``__post_init__``, ``InitVar`` or ``init=False`` fields: keep it so.
    Unlike ``replace`` under mypy, field names are checked only at run time."""
    fields = obj.__dataclass_fields__
    for name in changes:
        if name not in fields:
            raise TypeError(f"{type(obj).__name__} has no field {name!r}")
    copy = object.__new__(type(obj))
    state = copy.__dict__
    state.update(obj.__dict__)
    state.update(changes)
    return copy


@dataclass(frozen=True)
class PurchaseTotals:
    order_count: int = 0
    revenue: Decimal = Decimal(0)
    refunded: Decimal = Decimal(0)
    first_purchase_at: datetime | None = None
    last_purchase_at: datetime | None = None
    margin: Decimal = Decimal(0)
    """Sum of the margins of the orders that gave one."""

    @property
    def net_revenue(self) -> Decimal:
        return self.revenue - self.refunded

    @property
    def average_order_value(self) -> Decimal | None:
        if not self.order_count:
            return None
        return (self.revenue / self.order_count).quantize(Decimal("0.01"))


def add_purchase(
    totals: PurchaseTotals, amount: Decimal, at: datetime, margin: Decimal | None = None
) -> PurchaseTotals:
    return evolve(
        totals,
        order_count=totals.order_count + 1,
        revenue=totals.revenue + amount,
        first_purchase_at=min(totals.first_purchase_at or at, at),
        last_purchase_at=max(totals.last_purchase_at or at, at),
        margin=totals.margin + (margin or 0),
    )


def add_refund(totals: PurchaseTotals, amount: Decimal) -> PurchaseTotals:
    return evolve(totals, refunded=totals.refunded + amount)


@dataclass(frozen=True)
class Stamped:
    """A value with the event time that set it, so the latest event wins whatever the arrival order."""

    value: Any
    at: str  # ISO-8601, UTC

    def as_json(self) -> dict[str, Any]:
        return {"value": self.value, "at": self.at}


def _stamp(at: datetime) -> str:
    return at.isoformat()


def _rank(value: Any) -> str:
    return json.dumps(value, sort_keys=True, default=str)


def _wins(current: dict[str, Any] | None, value: Any, at: datetime, *, tie_low: bool = False) -> bool:
    """Does (value, at) replace ``current``? Later event time wins; on equal times the value decides
    (the greater, or with ``tie_low`` the smaller), so arrival order never does."""
    if current is None:
        return True
    current_at = datetime.fromisoformat(current["at"])
    if at != current_at:
        return at > current_at
    a, b = _rank(value), _rank(current["value"])
    return a < b if tie_low else a > b


def merge_traits(profile: dict[str, dict[str, Any]], traits: Traits, at: datetime) -> dict[str, dict[str, Any]]:
    """Latest-wins merge of the traits an identify carries (absent traits leave the file alone)."""
    merged = dict(profile)
    given = traits.model_dump(mode="json", exclude_none=True, exclude={"custom"})
    given.update({f"custom.{k}": v for k, v in traits.custom.items()})
    for name, value in given.items():
        if _wins(merged.get(name), value, at):
            merged[name] = Stamped(value, _stamp(at)).as_json()
    return merged


def merge_consent(
    consents: dict[str, dict[str, Any]], consent: ConsentPayload, at: datetime
) -> dict[str, dict[str, Any]]:
    merged = dict(consents)
    channels = ["email", "sms", "push", "webhook"] if consent.channel == "all" else [str(consent.channel)]
    for channel in channels:
        key = f"{channel}:{consent.purpose}"
        # Two decisions at the same instant: the withdrawal wins (false sorts before true).
        if _wins(merged.get(key), consent.granted, at, tie_low=True):
            merged[key] = Stamped(consent.granted, _stamp(at)).as_json()
    return merged


def count_interaction(counts: dict[str, int], interaction: InteractionPayload) -> dict[str, int]:
    merged = dict(counts)
    merged[str(interaction.kind)] = merged.get(str(interaction.kind), 0) + 1
    return merged


def note_engagement(engagement: dict[str, Any], interaction: InteractionPayload, at: datetime) -> dict[str, Any]:
    """Ratings (sum, count, latest), stated intent (latest) and first/last interaction time."""
    merged = dict(engagement)
    stamp = _stamp(at)
    merged["first_interaction_at"] = min(merged.get("first_interaction_at") or stamp, stamp)
    merged["last_interaction_at"] = max(merged.get("last_interaction_at") or stamp, stamp)
    if interaction.rating is not None:
        merged["rating_sum"] = int(merged.get("rating_sum", 0)) + interaction.rating
        merged["rating_count"] = int(merged.get("rating_count", 0)) + 1
        if _wins(merged.get("last_rating"), interaction.rating, at, tie_low=True):
            merged["last_rating"] = Stamped(interaction.rating, stamp).as_json()
    intent = interaction.properties.get("would_buy_again")
    if isinstance(intent, bool) and _wins(merged.get("stated_intent"), intent, at, tie_low=True):
        merged["stated_intent"] = Stamped(intent, stamp).as_json()
    return merged


def note_touch(engagement: dict[str, Any], touch: TouchPayload, at: datetime) -> dict[str, Any]:
    """The care the customer received, from outreach's touch lifecycle: touches per outcome, the
    latest one sent, and the revenue attributed to touches. Scheduling is not care yet, so only
    outcomes count; each lifecycle message arrives once per touch and status (deduped upstream)."""
    if touch.status is TouchStatus.SCHEDULED:
        return engagement
    merged = dict(engagement)
    care = dict(merged.get("care", {}))
    counts = dict(care.get("counts", {}))
    counts[touch.status.value] = int(counts.get(touch.status.value, 0)) + 1
    care["counts"] = counts
    stamp = _stamp(at)
    if touch.status is TouchStatus.SENT and stamp >= str(care.get("last_sent", {}).get("at", "")):
        care["last_sent"] = {"at": stamp, "plan": touch.plan, "channel": touch.channel, "touch_id": touch.touch_id}
    if touch.status is TouchStatus.CONVERTED and touch.revenue is not None:
        care["attributed_revenue"] = str(Decimal(care.get("attributed_revenue", "0")) + touch.revenue)
    merged["care"] = care
    return merged


def note_complaint(
    complaints: dict[str, dict[str, Any]], interaction: InteractionPayload, at: datetime, event_id: str
) -> dict[str, dict[str, Any]]:
    """Complaints by id with their resolution; a resolution may arrive before its complaint."""
    if interaction.kind not in (InteractionKind.COMPLAINT, InteractionKind.COMPLAINT_RESOLVED):
        return complaints
    merged = dict(complaints)
    complaint_id = interaction.complaint_id or event_id
    entry = dict(merged.get(complaint_id, {}))
    stamp = _stamp(at)
    if interaction.kind is InteractionKind.COMPLAINT:
        entry["opened_at"] = min(entry.get("opened_at") or stamp, stamp)
        if interaction.churn_reason is not None:
            entry["churn_reason"] = str(interaction.churn_reason)
        if interaction.text and ("text" not in entry or entry["opened_at"] == stamp):
            entry["text"] = interaction.text[:COMPLAINT_TEXT_LIMIT]
    else:
        entry["resolved_at"] = max(entry.get("resolved_at") or stamp, stamp)
    merged[complaint_id] = entry
    return merged


def note_order(
    categories: dict[str, dict[str, Any]],
    last_order: dict[str, Any] | None,
    order: PurchasePayload,
    at: datetime,
) -> tuple[dict[str, dict[str, Any]], dict[str, Any] | None]:
    """Category totals (for the preferred category) and the latest order (ties by order id)."""
    merged = {name: dict(entry) for name, entry in categories.items()}
    for item in order.items:
        if item.category:
            entry = merged.setdefault(item.category, {"quantity": 0, "amount": "0"})
            entry["quantity"] += item.quantity
            if item.price is not None:
                entry["amount"] = str(Decimal(entry["amount"]) + item.price * item.quantity)
    candidate = {
        "order_id": order.order_id,
        "amount": str(order.amount),
        "items": [item.name or item.sku or "" for item in order.items if item.name or item.sku],
        "at": _stamp(at),
    }
    latest = last_order
    if last_order is None or (at, order.order_id) > (datetime.fromisoformat(last_order["at"]), last_order["order_id"]):
        latest = candidate
    return merged, latest


def note_share_of_wallet(current: dict[str, Any] | None, order: PurchasePayload, at: datetime) -> dict[str, Any] | None:
    """The latest share of wallet a source reported (only some sources know it)."""
    if order.share_of_wallet is None or not _wins(current, order.share_of_wallet, at, tie_low=True):
        return current
    return Stamped(order.share_of_wallet, _stamp(at)).as_json()


def preferred_category(categories: dict[str, dict[str, Any]]) -> str | None:
    if not categories:
        return None
    return min(categories, key=lambda name: (-categories[name]["quantity"], -Decimal(categories[name]["amount"]), name))


def trait(profile: dict[str, dict[str, Any]], name: str) -> Any:
    entry = profile.get(name)
    return entry["value"] if entry else None


def display_name(profile: dict[str, dict[str, Any]]) -> str | None:
    name = trait(profile, "name")
    if name:
        return str(name)
    parts = [trait(profile, "first_name"), trait(profile, "last_name")]
    joined = " ".join(str(p) for p in parts if p)
    return joined or None


@dataclass(frozen=True)
class CustomerFile:
    customer_id: str
    version: int = 0
    profile: dict[str, dict[str, Any]] = field(default_factory=dict)
    consents: dict[str, dict[str, Any]] = field(default_factory=dict)
    interactions: dict[str, int] = field(default_factory=dict)
    totals: PurchaseTotals = field(default_factory=PurchaseTotals)
    engagement: dict[str, Any] = field(default_factory=dict)
    complaints: dict[str, dict[str, Any]] = field(default_factory=dict)
    categories: dict[str, dict[str, Any]] = field(default_factory=dict)
    unmatched_refunds: dict[str, str] = field(default_factory=dict)
    """Refunds whose order has not arrived yet (out-of-order delivery), by order id."""
    last_order: dict[str, Any] | None = None
    share_of_wallet: dict[str, Any] | None = None
    referral_count: int = 0
    tags: tuple[str, ...] = ()
    tier_override: ValueTier | None = None
    tier_override_reason: str | None = None
    last_event_at: datetime | None = None
    scores: Scorecard | None = None
    contact_count: int = 0
    referred_by: str | None = field(default=None, compare=False)
    """Who referred this customer (looked up with the file; referrals are the referrer's records)."""

    @property
    def open_complaints(self) -> int:
        return sum(1 for c in self.complaints.values() if c.get("opened_at") and not c.get("resolved_at"))

    def seen(self, at: datetime) -> CustomerFile:
        return evolve(self, last_event_at=max(self.last_event_at or at, at))

    def facts(self, occasions: Any) -> FileFacts:
        """The order-independent aggregates the scores are computed from."""
        count = int(self.engagement.get("rating_count", 0))
        last_rating = self.engagement.get("last_rating")
        intent = self.engagement.get("stated_intent")
        return FileFacts(
            occasions=tuple(occasions),
            interactions=dict(self.interactions),
            latest_rating=int(last_rating["value"]) if last_rating else None,
            mean_rating=int(self.engagement.get("rating_sum", 0)) / count if count else None,
            stated_intent=bool(intent["value"]) if intent else None,
            open_complaints=self.open_complaints,
            referrals=self.referral_count,
            share_of_wallet=float(self.share_of_wallet["value"]) if self.share_of_wallet else None,
            tags=self.tags,
            marketing_consents=[
                bool(entry["value"])
                for key, entry in sorted(self.consents.items())
                if key.endswith(f":{Purpose.MARKETING}")
            ],
            tier_override=self.tier_override,
            tier_override_reason=self.tier_override_reason,
        )

    def snapshot(self) -> CustomerSnapshot:
        values = {name: trait(self.profile, name) for name in SNAPSHOT_TRAITS}
        values["name"] = display_name(self.profile)
        last = self.last_order
        card = self.scores
        extra: dict[str, Any] = {}
        score_fields: dict[str, Any] = {}
        if card is not None:
            extra = dict(card.details)
            extra.update(
                as_of=card.as_of.isoformat(),
                model_id=card.model_id,
                occasion_count=card.occasion_count,
                p_no_purchase_90d=card.p_no_purchase_90d,
                expected_purchases_365d=card.expected_purchases_365d,
                expected_spend=None if card.expected_spend is None else str(card.expected_spend),
                tier_value=None if card.tier_value is None else str(card.tier_value),
                computed_tier=None if card.computed_tier is None else card.computed_tier.value,
                loyalty_index=card.loyalty.index if card.loyalty else None,
            )
            score_fields = dict(
                value_tier=card.value_tier,
                grade=card.grade,
                stage=card.stage,
                churn_band=card.churn_band,
                p_alive=None if card.p_alive is None else min(max(card.p_alive, 0.0), 1.0),
                expected_purchases_90d=card.expected_purchases_90d,
                clv_365=card.clv_365,
                expected_next_order_at=card.expected_next_order_at,
                relationship_type=card.relationship_type,
                prospect_grade=card.prospect_grade,
                loyalty_quadrant=card.loyalty_quadrant,
                satisfaction_level=card.satisfaction_level,
            )
        extra.update(
            open_complaints=self.open_complaints,
            referrals=self.referral_count,
            contacts=self.contact_count,
            # An account served by one contact leaves with that contact [001 L458-463].
            key_person_risk=self.contact_count == 1,
            average_order_value=None
            if self.totals.average_order_value is None
            else str(self.totals.average_order_value),
            net_revenue=str(self.totals.net_revenue),
        )
        return CustomerSnapshot(
            **values,
            consents={key: bool(entry["value"]) for key, entry in self.consents.items()},
            tags=list(self.tags),
            order_count=self.totals.order_count,
            revenue=self.totals.revenue,
            first_purchase_at=self.totals.first_purchase_at,
            last_purchase_at=self.totals.last_purchase_at,
            last_order_id=last["order_id"] if last else None,
            last_order_amount=Decimal(last["amount"]) if last else None,
            last_order_items=list(last["items"]) if last else [],
            preferred_category=preferred_category(self.categories),
            referred_by=self.referred_by,
            scores=extra,
            **score_fields,
        )
