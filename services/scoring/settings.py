"""Scoring's one Settings class (env prefix ``HUITOU_SCORING_``).

Every threshold the scores use is a knob here, with the default documented in docs/scoring.md.
Where ../shared/DOMAIN.md gives a number (the churn bands, the Pareto 80 %), that is the default;
elsewhere the default is a stated choice.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Literal
from zoneinfo import ZoneInfo

from pydantic import Field, model_validator
from pydantic_settings import SettingsConfigDict

from services.scoring.lifecycle import LifecycleRules
from services.scoring.loyalty import LoyaltyRules
from services.scoring.predictions import PredictionRules
from services.scoring.scorecard import Rules
from services.scoring.tiers import GradeRule, GradeRules, TierRules
from shared.contracts import TimeZoneName
from shared.settings import ServiceSettings


class ScoringSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="HUITOU_SCORING_", populate_by_name=True, extra="ignore")

    service_name: str = "scoring"
    port: int = 8002
    consumer_group: str = Field("huitou-scoring", description="Kafka consumer group on huitou.events")
    order_cache_lines: int = Field(
        100_000,
        ge=0,
        description="order lines the event consumer keeps between batches with their purchase occasions (about "
        "800 bytes each: 100,000 ≈ 80 MB), so a buyer's history is neither read nor regrouped again with each of "
        "their events; an entry is used only while the file still carries the version and totals it was committed "
        "with. 0: read every batch",
    )

    # --- the clock -------------------------------------------------------------------------
    clock: Literal["live", "replay"] = Field(
        "live",
        description="live: scores are as of wall-clock time; replay: as of event time (a backfill "
        "ends in the state live traffic would have reached)",
    )
    occasion_timezone: TimeZoneName = Field(
        "UTC", description="IANA zone whose calendar days define purchase occasions (one per customer per day)"
    )

    # --- predictive models ------------------------------------------------------------------
    clv_time_unit_days: float = Field(7.0, gt=0, description="time unit of the BG/NBD fit (7 = weeks, as FHL 2005)")
    clv_penalizer: float = Field(0.0, ge=0, description="L2 penalty of the BG/NBD and Gamma-Gamma fits (lifetimes')")
    clv_horizon_months: int = Field(12, ge=1, le=120, description="CLV horizon: 12 months = clv_365")
    clv_discount_rate_monthly: float = Field(0.01, ge=0, lt=1, description="monthly discount rate of the CLV")
    churn_horizon_days: int = Field(90, ge=1, description="churn risk = P(no purchase in this many days)")
    churn_low: float = Field(0.33, ge=0, le=1, description="below this the churn band is low")
    churn_high: float = Field(0.66, ge=0, le=1, description="above this the churn band is high")
    min_customers_for_fit: int = Field(
        20, ge=2, description="a refit needs at least this many purchasing customers (and one repeater)"
    )

    # --- population statistics refresh ----------------------------------------------------------
    refit_interval: timedelta = Field(timedelta(hours=1), description="scheduled refit of all population statistics")
    refit_growth: float = Field(
        0.10, gt=0, description="refit early once the purchasing population grew by this fraction since the last fit"
    )
    refit_on_start: bool = Field(True, description="fit at start-up when no model snapshot exists yet")
    refit_defer_backlog: int = Field(
        5000,
        ge=0,
        description="the start and growth refits wait while this replica's consumer is more than this many events "
        "behind (a backfill streaming in): each refit re-scores every file, and one fit once the backlog drained "
        "replaces several that the next would supersede; 0: never wait. Scheduled and requested refits never wait",
    )
    maintenance_tick: timedelta = Field(
        timedelta(seconds=30), description="how often the background task checks for due refits and model updates"
    )
    rescore_batch_size: int = Field(500, ge=1, le=10_000, description="customers per transaction when re-scoring")

    # --- the lapse sweep --------------------------------------------------------------------
    sweep_interval: timedelta = Field(timedelta(minutes=5), description="how often the sweep looks for due customers")
    sweep_batch_size: int = Field(500, ge=1, le=10_000, description="customers per sweep transaction")
    max_score_age: timedelta = Field(
        timedelta(days=30), description="re-evaluate every purchaser at least this often, even with nothing due"
    )

    # --- value tiers (Pareto) ------------------------------------------------------------------
    tier_basis: Literal["revenue", "margin"] = Field(
        "revenue", description="rank by net revenue, or by margin where the order gives it (revenue otherwise)"
    )
    tier_window_days: int = Field(365, ge=1, description="trailing window of the value ranking")
    tier_a_share: float = Field(0.80, gt=0, lt=1, description="A: the customers bringing the first 80% of value")
    tier_b_share: float = Field(0.95, gt=0, lt=1, description="B: the next ones up to 95% of value; C: the rest")
    tier_hysteresis: float = Field(0.10, ge=0, lt=1, description="demote only below threshold × (1 − this)")

    # --- membership grades ------------------------------------------------------------------
    grade_window_days: int = Field(365, ge=1, description="trailing window of spend and purchase count for grades")
    grade_silver_spend: float = Field(1_000, ge=0, description="trailing-window net spend that qualifies for silver")
    grade_silver_orders: int = Field(4, ge=1, description="purchase occasions in the window")
    grade_gold_spend: float = Field(5_000, ge=0, description="… for gold")
    grade_gold_orders: int = Field(12, ge=1, description="… or this many purchase occasions")
    grade_vip_spend: float = Field(20_000, ge=0, description="… for vip")
    grade_vip_orders: int = Field(24, ge=1, description="… or this many purchase occasions")
    grade_hysteresis: float = Field(0.10, ge=0, lt=1, description="keep a grade down to its thresholds × (1 − this)")

    # --- lifecycle: each customer's own rhythm ---------------------------------------------------
    default_rhythm_days: float = Field(30.0, gt=0, description="rhythm before the population has one")
    rhythm_prior_weight: float = Field(
        2.0, ge=0, description="weight (in gaps) of the population rhythm against a customer's own median gap"
    )
    rhythm_min_days: float = Field(1.0, gt=0, description="a rhythm is never shorter")
    rhythm_max_days: float = Field(365.0, gt=0, description="a rhythm is never longer")
    at_risk_factor: float = Field(1.5, gt=1, description="at-risk once the silence exceeds this × own rhythm")
    lapsed_factor: float = Field(3.0, gt=1, description="lapsed once the silence exceeds this × own rhythm")

    # --- loyalty and satisfaction -----------------------------------------------------------------
    loyalty_repeat_target: int = Field(5, ge=1, description="repeat purchases that count as fully loyal behaviour")
    loyalty_tenure_target_days: int = Field(365, ge=1, description="tenure that counts as fully loyal behaviour")
    engagement_half_saturation: float = Field(
        10.0, gt=0, description="weighted engagement count at which emotional loyalty reaches 50"
    )
    loyalty_weight_behavioural: float = Field(0.5, ge=0, description="weight in the loyalty index")
    loyalty_weight_emotional: float = Field(0.25, ge=0, description="weight in the loyalty index")
    loyalty_weight_intentional: float = Field(0.25, ge=0, description="weight in the loyalty index")
    loyal_threshold: float = Field(50.0, ge=0, le=100, description="loyalty index from which a customer is loyal")
    satisfied_rating: int = Field(
        4, ge=1, le=5, description="latest feedback rating from which a customer is satisfied"
    )

    # --- relationship type (Kotler) and prospect grade -------------------------------------------
    relationship_many_customers: int = Field(1000, ge=1, description="a base this large counts as 'many customers'")
    relationship_few_customers: int = Field(100, ge=1, description="a base this small counts as 'few customers'")
    relationship_high_margin_quantile: float = Field(
        0.8, gt=0, lt=1, description="window value from this population quantile up is high margin"
    )
    relationship_low_margin_quantile: float = Field(
        0.5, gt=0, lt=1, description="window value below this population quantile is low margin"
    )
    prospect_a_product_views: int = Field(
        3, ge=1, description="product views that, with a question or a click, show clear intent"
    )

    @model_validator(mode="after")
    def _ordered(self) -> ScoringSettings:
        problems = []
        if not self.churn_low <= self.churn_high:
            problems.append("HUITOU_SCORING_CHURN_LOW must not exceed HUITOU_SCORING_CHURN_HIGH")
        if not self.tier_a_share < self.tier_b_share:
            problems.append("HUITOU_SCORING_TIER_A_SHARE must be below HUITOU_SCORING_TIER_B_SHARE")
        if not self.at_risk_factor < self.lapsed_factor:
            problems.append("HUITOU_SCORING_AT_RISK_FACTOR must be below HUITOU_SCORING_LAPSED_FACTOR")
        if not self.rhythm_min_days <= self.rhythm_max_days:
            problems.append("HUITOU_SCORING_RHYTHM_MIN_DAYS must not exceed HUITOU_SCORING_RHYTHM_MAX_DAYS")
        if not self.relationship_few_customers < self.relationship_many_customers:
            problems.append("HUITOU_SCORING_RELATIONSHIP_FEW_CUSTOMERS must be below ..._MANY_CUSTOMERS")
        if not self.relationship_low_margin_quantile < self.relationship_high_margin_quantile:
            problems.append("HUITOU_SCORING_RELATIONSHIP_LOW_MARGIN_QUANTILE must be below ..._HIGH_MARGIN_QUANTILE")
        spends = (self.grade_silver_spend, self.grade_gold_spend, self.grade_vip_spend)
        counts = (self.grade_silver_orders, self.grade_gold_orders, self.grade_vip_orders)
        if list(spends) != sorted(spends) or list(counts) != sorted(counts):
            problems.append("grade thresholds must rise from silver to gold to vip")
        if problems:
            raise ValueError("; ".join(problems))
        return self

    def rules(self) -> Rules:
        """The thresholds the pure scoring rules take (no I/O behind them)."""
        return Rules(
            timezone=ZoneInfo(self.occasion_timezone),
            tiers=TierRules(
                basis=self.tier_basis,
                window_days=self.tier_window_days,
                a_share=self.tier_a_share,
                b_share=self.tier_b_share,
                hysteresis=self.tier_hysteresis,
            ),
            grades=GradeRules(
                window_days=self.grade_window_days,
                hysteresis=self.grade_hysteresis,
                ladder=(
                    GradeRule("silver", self.grade_silver_spend, self.grade_silver_orders),
                    GradeRule("gold", self.grade_gold_spend, self.grade_gold_orders),
                    GradeRule("vip", self.grade_vip_spend, self.grade_vip_orders),
                ),
            ),
            lifecycle=LifecycleRules(
                default_rhythm_days=self.default_rhythm_days,
                rhythm_prior_weight=self.rhythm_prior_weight,
                rhythm_min_days=self.rhythm_min_days,
                rhythm_max_days=self.rhythm_max_days,
                at_risk_factor=self.at_risk_factor,
                lapsed_factor=self.lapsed_factor,
            ),
            predictions=PredictionRules(
                churn_horizon_days=self.churn_horizon_days,
                churn_low=self.churn_low,
                churn_high=self.churn_high,
                clv_horizon_months=self.clv_horizon_months,
                clv_discount_rate_monthly=self.clv_discount_rate_monthly,
            ),
            loyalty=LoyaltyRules(
                repeat_target=self.loyalty_repeat_target,
                tenure_target_days=self.loyalty_tenure_target_days,
                engagement_half_saturation=self.engagement_half_saturation,
                weights=(
                    self.loyalty_weight_behavioural,
                    self.loyalty_weight_emotional,
                    self.loyalty_weight_intentional,
                ),
                loyal_threshold=self.loyal_threshold,
                satisfied_rating=self.satisfied_rating,
            ),
            relationship_few_customers=self.relationship_few_customers,
            relationship_many_customers=self.relationship_many_customers,
            relationship_margin_quantiles=(
                self.relationship_low_margin_quantile,
                self.relationship_high_margin_quantile,
            ),
            prospect_a_product_views=self.prospect_a_product_views,
            max_score_age_days=max(1, int(self.max_score_age.total_seconds() // 86400)),
            clv_time_unit_days=self.clv_time_unit_days,
            clv_penalizer=self.clv_penalizer,
            min_customers_for_fit=self.min_customers_for_fit,
        )
