"""What the internal API accepts and serves (the gateway proxies these shapes)."""

from __future__ import annotations

import re
from datetime import datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, field_validator

from shared.contracts import ChurnBand, LifecycleStage, ValueTier

# The gateway imports these views for its typed OpenAPI; the file and model modules pull in the
# scoring maths (numpy, scipy), which the gateway never runs, so they are imported where used.
if TYPE_CHECKING:
    from services.scoring.customer_file import CustomerFile
    from services.scoring.population import PopulationModel

_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
_TAG = re.compile(r"^[^\s,](.*[^\s,])?$")


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


# --- requests --------------------------------------------------------------------------------------


class TagsRequest(Strict):
    tags: list[str] = Field(min_length=1, max_length=50, description="tags to add, e.g. ['vip-event', 'prospect:A']")
    reason: str | None = Field(None, max_length=500)

    @field_validator("tags")
    @classmethod
    def _tags(cls, value: list[str]) -> list[str]:
        cleaned = []
        for tag in value:
            tag = tag.strip()
            if not 1 <= len(tag) <= 100 or not _TAG.match(tag):
                raise ValueError(f"tag {tag!r} must be 1–100 characters, not start or end with a space or comma")
            cleaned.append(tag)
        return cleaned


class TierOverrideRequest(Strict):
    tier: ValueTier = Field(description="A, B, C or D; sticks until cleared")
    reason: str = Field(min_length=3, max_length=500, description="why, e.g. 'loyal for 10 years, refers friends'")


class NoteRequest(Strict):
    text: str = Field(min_length=1, max_length=5000)
    author: str | None = Field(None, max_length=200)


class ContactRequest(Strict):
    contact_id: str | None = Field(None, min_length=1, max_length=64, pattern=r"^[A-Za-z0-9._:-]+$")
    name: str = Field(min_length=1, max_length=200)
    email: str | None = Field(None, max_length=320)
    phone: str | None = Field(None, max_length=40, pattern=r"^\+?[0-9 ()-]{3,40}$")
    role: str | None = Field(None, max_length=100)
    primary: bool = False

    @field_validator("email")
    @classmethod
    def _email(cls, value: str | None) -> str | None:
        if value is not None and not _EMAIL.match(value):
            raise ValueError("email must look like name@example.com")
        return value.lower() if value else value


class RefitRequest(Strict):
    as_of: AwareDatetime | None = Field(
        None, description="fit on purchases up to this moment (calibration/holdout splits); default: the clock"
    )


# --- responses -----------------------------------------------------------------------------------


class OrderView(BaseModel):
    order_id: str
    amount: Decimal
    refunded: Decimal
    currency: str
    margin: Decimal | None
    items: list[dict[str, Any]]
    occurred_at: datetime


class PurchaseBehaviour(BaseModel):
    order_count: int
    occasion_count: int
    revenue: Decimal
    refunded: Decimal
    net_revenue: Decimal
    margin: Decimal
    average_order_value: Decimal | None
    first_purchase_at: datetime | None
    last_purchase_at: datetime | None
    typical_days_between_purchases: float | None
    preferred_category: str | None
    categories: dict[str, dict[str, Any]]
    share_of_wallet: float | None
    last_order: dict[str, Any] | None


class ComplaintView(BaseModel):
    complaint_id: str
    status: str
    opened_at: datetime | None
    resolved_at: datetime | None
    churn_reason: str | None
    text: str | None


class CareSummary(BaseModel):
    """Care touches the customer received, from outreach's touch lifecycle (``huitou.touches``)."""

    touches: dict[str, int]  # by outcome: sent, converted, suppressed, failed, cancelled
    last_sent_at: datetime | None
    last_sent_plan: str | None
    last_sent_channel: str | None
    attributed_revenue: Decimal


class InteractionSummary(BaseModel):
    counts: dict[str, int]
    feedback_count: int
    mean_rating: float | None
    latest_rating: int | None
    stated_intent: bool | None
    first_interaction_at: datetime | None
    last_interaction_at: datetime | None
    referrals: int
    referred_by: str | None
    open_complaints: int
    care: CareSummary


class LoyaltyView(BaseModel):
    behavioural: float | None
    emotional: float | None
    intentional: float | None
    index: float | None


class TierOverrideView(BaseModel):
    tier: ValueTier
    reason: str | None


class ScoresView(BaseModel):
    as_of: datetime | None
    model_id: int | None
    value_tier: ValueTier | None
    computed_tier: ValueTier | None
    tier_override: TierOverrideView | None
    tier_value: Decimal | None
    grade: str | None
    stage: LifecycleStage | None
    rhythm_days: float | None
    rfm: str | None
    churn_band: ChurnBand | None
    p_alive: float | None
    p_no_purchase_90d: float | None
    expected_purchases_90d: float | None
    expected_purchases_365d: float | None
    expected_spend: Decimal | None
    clv_365: Decimal | None
    expected_next_order_at: datetime | None
    loyalty: LoyaltyView | None
    satisfaction_level: int | None
    loyalty_quadrant: str | None
    relationship_type: str | None
    prospect_grade: str | None
    next_check_at: datetime | None
    reasons: dict[str, str]


class HistoryEntry(BaseModel):
    field: str
    before: Any
    after: Any
    reason: str
    cause_type: str
    cause_event_id: str
    as_of: datetime
    recorded_at: datetime


class NoteView(BaseModel):
    id: int
    text: str
    author: str | None
    created_at: datetime


class ContactView(BaseModel):
    contact_id: str
    name: str
    email: str | None
    phone: str | None
    role: str | None
    is_primary: bool
    created_at: datetime | None = None


class CustomerFileView(BaseModel):
    """The customer file (客户档案) as served to the gateway."""

    customer_id: str
    version: int
    name: str | None
    profile: dict[str, Any]
    consents: dict[str, dict[str, Any]]
    tags: list[str]
    purchases: PurchaseBehaviour
    interactions: InteractionSummary
    complaints: list[ComplaintView]
    scores: ScoresView
    history: list[HistoryEntry]
    notes: list[NoteView]
    contacts: list[ContactView]
    recent_orders: list[OrderView]
    created_at: datetime | None = None
    updated_at: datetime | None = None


class CustomerSummary(BaseModel):
    customer_id: str
    name: str | None
    email: str | None
    tags: list[str]
    order_count: int
    revenue: Decimal
    last_purchase_at: datetime | None
    value_tier: ValueTier | None
    grade: str | None
    stage: LifecycleStage | None
    churn_band: ChurnBand | None
    p_alive: float | None
    clv_365: Decimal | None
    loyalty_index: float | None


class CustomerPage(BaseModel):
    total: int
    limit: int
    offset: int
    next_offset: int | None
    sort: str
    items: list[CustomerSummary]


class BucketView(BaseModel):
    value: str | None
    customers: int
    share: float
    net_revenue: Decimal
    clv_365: Decimal


class ReportView(BaseModel):
    report: str
    generated_at: datetime
    total: int
    buckets: list[BucketView]


class ModelView(BaseModel):
    id: int
    kind: str = "population"
    fitted_at: datetime
    as_of: datetime
    trigger: str
    time_unit_days: float
    n_customers: int
    n_repeaters: int
    log_likelihood: float
    fit_seconds: float
    bgnbd: dict[str, Any]
    gamma_gamma: dict[str, Any] | None
    rfm_cuts: dict[str, list[float]]
    tier_thresholds: dict[str, str] | None
    margin_cuts: list[float] | None
    typical_gap_days: float | None
    population_size: int
    rescored: bool


class ErasureView(BaseModel):
    customer_id: str
    erased_at: datetime


# --- building views --------------------------------------------------------------------------------


def scores_view(file: CustomerFile) -> ScoresView:
    card = file.scores
    override = (
        TierOverrideView(tier=file.tier_override, reason=file.tier_override_reason) if file.tier_override else None
    )
    if card is None:
        return ScoresView.model_validate(
            {name: None for name in ScoresView.model_fields} | {"reasons": {}, "tier_override": override}
        )
    return ScoresView(
        as_of=card.as_of,
        model_id=card.model_id,
        value_tier=card.value_tier,
        computed_tier=card.computed_tier,
        tier_override=override,
        tier_value=card.tier_value,
        grade=card.grade,
        stage=card.stage,
        rhythm_days=card.rhythm_days,
        rfm="".join(map(str, card.rfm)) if card.rfm else None,
        churn_band=card.churn_band,
        p_alive=card.p_alive,
        p_no_purchase_90d=card.p_no_purchase_90d,
        expected_purchases_90d=card.expected_purchases_90d,
        expected_purchases_365d=card.expected_purchases_365d,
        expected_spend=card.expected_spend,
        clv_365=card.clv_365,
        expected_next_order_at=card.expected_next_order_at,
        loyalty=LoyaltyView(**card.loyalty.as_json()) if card.loyalty else None,
        satisfaction_level=card.satisfaction_level,
        loyalty_quadrant=card.loyalty_quadrant,
        relationship_type=card.relationship_type,
        prospect_grade=card.prospect_grade,
        next_check_at=card.next_check_at,
        reasons=dict(card.reasons),
    )


def _at(value: Any) -> datetime | None:
    return datetime.fromisoformat(value) if isinstance(value, str) else None


def file_view(
    file: CustomerFile,
    *,
    referred_by: str | None,
    history: list[dict[str, Any]],
    notes: list[dict[str, Any]],
    contacts: list[dict[str, Any]],
    orders: list[dict[str, Any]],
) -> CustomerFileView:
    totals = file.totals
    engagement = file.engagement
    count = int(engagement.get("rating_count", 0))
    last_rating = engagement.get("last_rating")
    intent = engagement.get("stated_intent")
    from services.scoring.customer_file import display_name, preferred_category

    card = file.scores
    return CustomerFileView(
        customer_id=file.customer_id,
        version=file.version,
        name=display_name(file.profile),
        profile={name: entry["value"] for name, entry in file.profile.items()},
        consents=file.consents,
        tags=list(file.tags),
        purchases=PurchaseBehaviour(
            order_count=totals.order_count,
            occasion_count=card.occasion_count if card else 0,
            revenue=totals.revenue,
            refunded=totals.refunded,
            net_revenue=totals.net_revenue,
            margin=totals.margin,
            average_order_value=totals.average_order_value,
            first_purchase_at=totals.first_purchase_at,
            last_purchase_at=totals.last_purchase_at,
            typical_days_between_purchases=card.rhythm_days if card else None,
            preferred_category=preferred_category(file.categories),
            categories=file.categories,
            share_of_wallet=float(file.share_of_wallet["value"]) if file.share_of_wallet else None,
            last_order=file.last_order,
        ),
        interactions=InteractionSummary(
            counts=file.interactions,
            feedback_count=count,
            mean_rating=round(int(engagement.get("rating_sum", 0)) / count, 2) if count else None,
            latest_rating=int(last_rating["value"]) if last_rating else None,
            stated_intent=bool(intent["value"]) if intent else None,
            first_interaction_at=_at(engagement.get("first_interaction_at")),
            last_interaction_at=_at(engagement.get("last_interaction_at")),
            referrals=file.referral_count,
            referred_by=referred_by,
            open_complaints=file.open_complaints,
            care=care_summary(engagement.get("care", {})),
        ),
        complaints=[
            ComplaintView(
                complaint_id=complaint_id,
                status="resolved" if entry.get("resolved_at") else "open",
                opened_at=_at(entry.get("opened_at")),
                resolved_at=_at(entry.get("resolved_at")),
                churn_reason=entry.get("churn_reason"),
                text=entry.get("text"),
            )
            for complaint_id, entry in sorted(file.complaints.items())
        ],
        scores=scores_view(file),
        history=[HistoryEntry(**row) for row in history],
        notes=[NoteView(**row) for row in notes],
        contacts=[ContactView(**row) for row in contacts],
        recent_orders=[OrderView(**row) for row in orders],
    )


def summary_view(file: CustomerFile) -> CustomerSummary:
    from services.scoring.customer_file import display_name

    card = file.scores
    return CustomerSummary(
        customer_id=file.customer_id,
        name=display_name(file.profile),
        email=(file.profile.get("email") or {}).get("value"),
        tags=list(file.tags),
        order_count=file.totals.order_count,
        revenue=file.totals.revenue,
        last_purchase_at=file.totals.last_purchase_at,
        value_tier=card.value_tier if card else file.tier_override,
        grade=card.grade if card else None,
        stage=card.stage if card else None,
        churn_band=card.churn_band if card else None,
        p_alive=card.p_alive if card else None,
        clv_365=card.clv_365 if card else None,
        loyalty_index=card.loyalty.index if card and card.loyalty else None,
    )


def model_view(model: PopulationModel, rescored: bool) -> ModelView:
    stats = model.statistics_json()
    assert model.id is not None
    return ModelView(
        id=model.id,
        fitted_at=model.fitted_at,
        as_of=model.as_of,
        trigger=model.trigger,
        time_unit_days=model.time_unit_days,
        n_customers=model.n_customers,
        n_repeaters=model.n_repeaters,
        log_likelihood=model.log_likelihood,
        fit_seconds=model.fit_seconds,
        bgnbd=stats["bgnbd"],
        gamma_gamma=stats["gamma_gamma"],
        rfm_cuts=stats["rfm_cuts"],
        tier_thresholds=stats["tier_thresholds"],
        margin_cuts=stats["margin_cuts"],
        typical_gap_days=model.typical_gap_days,
        population_size=model.population_size,
        rescored=rescored,
    )


def care_summary(care: dict[str, Any]) -> CareSummary:
    last = care.get("last_sent") or {}
    return CareSummary(
        touches=dict(care.get("counts", {})),
        last_sent_at=_at(last.get("at")),
        last_sent_plan=last.get("plan"),
        last_sent_channel=last.get("channel"),
        attributed_revenue=Decimal(care.get("attributed_revenue", "0")),
    )
