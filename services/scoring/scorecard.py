"""All of a customer's scores, computed from the file's state, the population model and a clock.

Pure: ``score(facts, model, as_of, rules)`` reads nothing but its arguments, so the same file,
model and as-of time always give the same scorecard — which is what makes replays, out-of-order
delivery and a historical backfill end in the same state as live traffic.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta, tzinfo
from decimal import Decimal
from typing import Any

from services.scoring.lifecycle import LifecycleRules, judge_stage
from services.scoring.loyalty import (
    Loyalty,
    LoyaltyRules,
    loyalty,
    loyalty_quadrant,
    margin_class,
    prospect_grade,
    relationship_type,
    satisfaction_level,
    size_class,
)
from services.scoring.population import PopulationModel, PopulationRules
from services.scoring.predictions import PredictionRules, Predictions, customer_rfm, predict
from services.scoring.purchases import Occasion, day_start, local_day
from services.scoring.rfm import rfm_scores
from services.scoring.tiers import GradeRules, TierRules, grade_along, tier_along, window_exit_day, window_series
from shared.contracts import ChurnBand, FieldChange, LifecycleStage, ValueTier

TRACKED_FIELDS = (
    "value_tier",
    "grade",
    "stage",
    "churn_band",
    "relationship_type",
    "prospect_grade",
    "loyalty_quadrant",
    "satisfaction_level",
)
"""Snapshot fields whose every change is recorded in the file's history and announced."""


@dataclass(frozen=True)
class Rules:
    timezone: tzinfo
    tiers: TierRules
    grades: GradeRules
    lifecycle: LifecycleRules
    predictions: PredictionRules
    loyalty: LoyaltyRules
    relationship_few_customers: int
    relationship_many_customers: int
    relationship_margin_quantiles: tuple[float, float]
    prospect_a_product_views: int
    max_score_age_days: int
    clv_time_unit_days: float
    clv_penalizer: float
    min_customers_for_fit: int

    def population(self) -> PopulationRules:
        return PopulationRules(
            a_share=self.tiers.a_share,
            b_share=self.tiers.b_share,
            window_days=self.tiers.window_days,
            margin_quantiles=self.relationship_margin_quantiles,
            unit_days=self.clv_time_unit_days,
            penalizer=self.clv_penalizer,
            min_customers=self.min_customers_for_fit,
        )


@dataclass(frozen=True)
class FileFacts:
    """What the scores need from a customer file (all order-independent aggregates)."""

    occasions: Sequence[Occasion] = ()
    interactions: Mapping[str, int] = field(default_factory=dict)
    latest_rating: int | None = None
    mean_rating: float | None = None
    stated_intent: bool | None = None
    open_complaints: int = 0
    referrals: int = 0
    share_of_wallet: float | None = None
    tags: Sequence[str] = ()
    marketing_consents: Sequence[bool] = ()
    tier_override: ValueTier | None = None
    tier_override_reason: str | None = None


@dataclass(frozen=True)
class Scorecard:
    as_of: datetime
    model_id: int | None
    occasion_count: int = 0
    stage: LifecycleStage | None = None
    rhythm_days: float | None = None
    computed_tier: ValueTier | None = None
    value_tier: ValueTier | None = None
    tier_value: Decimal | None = None
    grade: str | None = None
    rfm: tuple[int, int, int] | None = None
    p_alive: float | None = None
    p_no_purchase_90d: float | None = None
    churn_band: ChurnBand | None = None
    expected_purchases_90d: float | None = None
    expected_purchases_365d: float | None = None
    expected_spend: Decimal | None = None
    clv_365: Decimal | None = None
    expected_next_order_at: datetime | None = None
    loyalty: Loyalty | None = None
    satisfaction_level: int | None = None
    loyalty_quadrant: str | None = None
    relationship_type: str | None = None
    prospect_grade: str | None = None
    next_check_at: datetime | None = None
    reasons: Mapping[str, str] = field(default_factory=dict)
    details: Mapping[str, Any] = field(default_factory=dict)
    """Further free-form scores (loyalty components, RFM inputs…), served as snapshot.scores."""

    def tracked(self) -> dict[str, Any]:
        # Read twice per scored event (before and after); written out rather than a loop over
        # TRACKED_FIELDS with getattr, and kept in step with it by a unit test.
        return {
            "value_tier": _plain(self.value_tier),
            "grade": _plain(self.grade),
            "stage": _plain(self.stage),
            "churn_band": _plain(self.churn_band),
            "relationship_type": _plain(self.relationship_type),
            "prospect_grade": _plain(self.prospect_grade),
            "loyalty_quadrant": _plain(self.loyalty_quadrant),
            "satisfaction_level": _plain(self.satisfaction_level),
        }


_ENUMS = (ValueTier, LifecycleStage, ChurnBand)


def _plain(value: Any) -> Any:
    return value.value if isinstance(value, _ENUMS) else value


def score(facts: FileFacts, model: PopulationModel | None, as_of: datetime, rules: Rules) -> Scorecard:
    """Every score of one customer as of ``as_of``."""
    tz = rules.timezone
    as_of_day = local_day(as_of, tz)
    history = [o for o in facts.occasions if o.day <= as_of_day]
    days = [o.day for o in history]
    reasons: dict[str, str] = {}
    details: dict[str, Any] = {}
    check_days: list[int] = []

    stage = judge_stage(days, as_of_day, model.typical_gap_days if model else None, rules.lifecycle)
    reasons["stage"] = stage.reason
    if stage.next_check_day is not None:
        check_days.append(stage.next_check_day)
    if stage.rhythm_days is not None:
        details["rhythm_days"] = round(stage.rhythm_days, 2)

    purchased = bool(history)
    repeats = max(len(history) - 1, 0)
    tenure = as_of_day - history[0].day if purchased else None

    # Tier and grade fold along the same trailing windows when their lengths agree (the default):
    # the window series is then built once for both.
    tier_window, grade_window = rules.tiers.window_days, rules.grades.window_days
    tier_series = grade_series = None
    if purchased:
        tier_series = window_series(history, tier_window, as_of_day)
        grade_series = tier_series if grade_window == tier_window else window_series(history, grade_window, as_of_day)

    computed_tier = tier_value = None
    if tier_series is not None and model is not None and model.tier_thresholds is not None:
        computed_tier, tier_value = tier_along(tier_series, model.tier_thresholds, rules.tiers)
        reasons["value_tier"] = (
            f"trailing {rules.tiers.window_days}-day {rules.tiers.basis} {tier_value:.2f} against the Pareto "
            f"thresholds A ≥ {model.tier_thresholds.a:.2f}, B ≥ {model.tier_thresholds.b:.2f}"
            f" (demotion below × {1 - rules.tiers.hysteresis:g})"
        )
    tier = computed_tier
    if facts.tier_override is not None:
        tier = facts.tier_override
        reasons["value_tier"] = f"operator override: {facts.tier_override_reason or 'no reason given'}"
    if purchased:
        exit_day = window_exit_day(history, min(tier_window, grade_window), as_of_day)
        other = (
            exit_day
            if tier_window == grade_window
            else window_exit_day(history, max(tier_window, grade_window), as_of_day)
        )
        check_days.extend(day for day in (exit_day, other) if day is not None)

    grade = None
    if grade_series is not None:
        grade, spend, count = grade_along(grade_series, rules.grades)
        reasons["grade"] = (
            f"trailing {rules.grades.window_days}-day spend {spend:.2f} over {count} purchase occasion(s)"
        )

    rfm = None
    if purchased and model is not None:
        recency_days = as_of_day - history[-1].day
        monetary = float(sum([o.net for o in history]))
        rfm = rfm_scores(recency_days, len(history), monetary, model.rfm_cuts)
        details["rfm"] = {"r": rfm[0], "f": rfm[1], "m": rfm[2], "code": "".join(map(str, rfm))}

    predicted: Predictions | None = None
    if purchased and model is not None:
        rfm_in = customer_rfm(history, as_of_day, model.time_unit_days)
        if rfm_in is not None:
            predicted = predict(rfm_in, as_of_day, model.params, rules.predictions)
            reasons["churn_band"] = (
                f"P(no purchase in {rules.predictions.churn_horizon_days} days) = {predicted.p_no_purchase:.2f} "
                f"(low < {rules.predictions.churn_low:g}, high > {rules.predictions.churn_high:g})"
            )
            if predicted.band_change_day is not None:
                check_days.append(predicted.band_change_day)
    next_order_at = None
    if predicted is not None and predicted.next_order_in_days is not None:
        next_order_at = as_of + timedelta(days=predicted.next_order_in_days)
        check_days.append(local_day(next_order_at, tz) + 1)

    mean_rating = facts.mean_rating
    loyal = loyalty(
        repeat_purchases=repeats,
        tenure_days=tenure,
        share_of_wallet=facts.share_of_wallet,
        interactions=facts.interactions,
        referrals=facts.referrals,
        stated_intent=facts.stated_intent,
        mean_rating=mean_rating,
        rules=rules.loyalty,
    )
    details["loyalty"] = loyal.as_json()
    level, level_reason = satisfaction_level(
        latest_rating=facts.latest_rating,
        open_complaints=facts.open_complaints,
        repeat_purchases=repeats,
        referrals=facts.referrals,
        has_purchased=purchased,
        satisfied_rating=rules.loyalty.satisfied_rating,
    )
    reasons["satisfaction_level"] = level_reason
    quadrant = loyalty_quadrant(level, loyal.index if purchased else None, rules.loyalty.loyal_threshold)
    if quadrant is not None:
        reasons["loyalty_quadrant"] = f"satisfaction level {level}, loyalty index {loyal.index}"

    relationship = None
    if purchased and model is not None and model.margin_cuts is not None:
        size = size_class(model.population_size, rules.relationship_few_customers, rules.relationship_many_customers)
        value = float(tier_value) if tier_value is not None else 0.0
        margin = margin_class(value, *model.margin_cuts)
        relationship = relationship_type(size, margin)
        reasons["relationship_type"] = f"{size} customers × {margin} margin"

    prospect = None
    if not purchased:
        prospect, reasons["prospect_grade"] = prospect_grade(
            tags=facts.tags,
            marketing_consents=facts.marketing_consents,
            interactions=facts.interactions,
            a_product_views=rules.prospect_a_product_views,
        )

    if purchased:
        check_days.append(as_of_day + rules.max_score_age_days)
    future = [day for day in check_days if day > as_of_day]
    next_check_at = day_start(min(future), tz) if future else None
    return Scorecard(
        as_of=as_of,
        model_id=model.id if model else None,
        occasion_count=len(history),
        stage=stage.stage,
        rhythm_days=stage.rhythm_days,
        computed_tier=computed_tier,
        value_tier=tier,
        tier_value=tier_value,
        grade=grade,
        rfm=rfm,
        p_alive=predicted.p_alive if predicted else None,
        p_no_purchase_90d=predicted.p_no_purchase if predicted else None,
        churn_band=predicted.churn_band if predicted else None,
        expected_purchases_90d=predicted.expected_purchases_90d if predicted else None,
        expected_purchases_365d=predicted.expected_purchases_365d if predicted else None,
        expected_spend=predicted.expected_spend if predicted else None,
        clv_365=predicted.clv_365 if predicted else None,
        expected_next_order_at=next_order_at,
        loyalty=loyal,
        satisfaction_level=level,
        loyalty_quadrant=quadrant,
        relationship_type=relationship,
        prospect_grade=prospect,
        next_check_at=next_check_at,
        reasons=reasons,
        details=details,
    )


def changes(before: Mapping[str, Any], after: Scorecard) -> list[FieldChange]:
    """One FieldChange per tracked field whose value moved, with the rule's reason."""
    now = after.tracked()
    return [
        FieldChange(
            field=name,
            before=before.get(name),
            after=value,
            reason=after.reasons.get(name) or ("no longer applies" if value is None else "recomputed"),
        )
        for name, value in now.items()
        if before.get(name) != value
    ]
