"""The per-event scoring paths, optimised for one customer at a time, against the straightforward ones.

predictions.predict works on Python floats (math, one scipy 2F1 call, a bisection for the band's
change day) and tiers/lifecycle/scorecard skip repeated work. Each is held here to a plain
formula over many random customers: lifetimes' BG/NBD and Gamma-Gamma fitters with the same
parameters, clv's vectorised functions, the day-by-day churn-band scan, and step-by-step folds.
"""

from __future__ import annotations

import itertools
import statistics
import warnings
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo

import numpy as np
import pandas as pd
import pytest

from services.scoring import clv, lifecycle
from services.scoring.predictions import (
    BAND_SEARCH_DAYS,
    CustomerRfm,
    ModelParams,
    PredictionRules,
    _numpy_sum,
    band_of,
    predict,
)
from services.scoring.purchases import Occasion, OrderLine, occasions
from services.scoring.scorecard import TRACKED_FIELDS, Scorecard
from services.scoring.tiers import (
    GradeRule,
    GradeRules,
    TierRules,
    TierThresholds,
    fold_window,
    membership_grade,
    next_grade,
    next_tier,
    value_tier,
)
from shared.contracts import ChurnBand

with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # lifetimes 0.11.3 trips a pandas-3 deprecation on import
    from lifetimes import BetaGeoFitter, GammaGammaFitter

RULES = PredictionRules(
    churn_horizon_days=90, churn_low=0.33, churn_high=0.66, clv_horizon_months=12, clv_discount_rate_monthly=0.01
)


def random_customers(rng: np.random.Generator, n: int, unit: float) -> list[CustomerRfm]:
    """A mix like a live population: one-time buyers, regulars, long-lapsed and heavy repeaters."""
    customers = []
    for _ in range(n):
        age_days = int(rng.integers(0, 1500))
        x = 0 if rng.random() < 0.35 else int(rng.integers(1, 120 if rng.random() < 0.1 else 15))
        recency_days = 0 if x == 0 else int(rng.integers(x, max(age_days, x) + 1))
        age_days = max(age_days, recency_days)
        customers.append(
            CustomerRfm(
                frequency=x,
                recency=recency_days / unit,
                T=age_days / unit,
                monetary_value=0.0 if x == 0 else float(rng.uniform(1.0, 400.0)),
                first_day=10_000,
            )
        )
    return customers


def random_params(rng: np.random.Generator) -> ModelParams:
    unit = float(rng.choice([1.0, 7.0]))
    a = float(rng.uniform(0.2, 3.0))
    return ModelParams(
        bgnbd=(
            float(rng.uniform(0.1, 3.0)),
            float(rng.uniform(0.5, 60.0)) * unit / 7.0,
            a,
            float(rng.uniform(0.5, 6.0)),
        ),
        gamma_gamma=(float(rng.uniform(0.5, 10.0)), float(rng.uniform(1.5, 8.0)), float(rng.uniform(1.0, 50.0))),
        unit_days=unit,
    )


def lifetimes_fitters(params: ModelParams) -> tuple[BetaGeoFitter, GammaGammaFitter]:
    r, alpha, a, b = params.bgnbd
    bgf = BetaGeoFitter()
    bgf.params_ = pd.Series({"r": r, "alpha": alpha, "a": a, "b": b})
    assert params.gamma_gamma is not None
    p, q, v = params.gamma_gamma
    ggf = GammaGammaFitter()
    ggf.params_ = pd.Series({"p": p, "q": q, "v": v})
    return bgf, ggf


@pytest.mark.parametrize("seed", range(6))
def test_predictions_match_lifetimes_for_random_customers(seed):
    rng = np.random.default_rng(seed)
    params = random_params(rng)
    unit = params.unit_days
    bgf, ggf = lifetimes_fitters(params)
    customers = random_customers(rng, 150, unit)
    x = np.array([c.frequency for c in customers], dtype=np.float64)
    tx = np.array([c.recency for c in customers])
    age = np.array([c.T for c in customers])
    m = np.array([c.monetary_value for c in customers])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        alive = np.asarray(bgf.conditional_probability_alive(x, tx, age), dtype=np.float64)
        e90 = np.asarray(bgf.conditional_expected_number_of_purchases_up_to_time(90 / unit, x, tx, age))
        e365 = np.asarray(bgf.conditional_expected_number_of_purchases_up_to_time(365 / unit, x, tx, age))
        spend = np.asarray(ggf.conditional_expected_average_profit(pd.Series(x), pd.Series(m)), dtype=np.float64)
    for i, customer in enumerate(customers):
        found = predict(customer, 20_000, params, RULES)
        # lifetimes' P(alive) sets x = 0 to 1 and computes the rest in a different but equivalent form.
        assert found.p_alive == pytest.approx(alive[i], rel=1e-9, abs=1e-12)
        assert found.expected_purchases_90d == pytest.approx(e90[i], rel=1e-7, abs=1e-10)
        assert found.expected_purchases_365d == pytest.approx(e365[i], rel=1e-7, abs=1e-10)
        # Expected spend and CLV are rounded to cents: compare there.
        assert found.expected_spend is not None
        assert float(found.expected_spend) == pytest.approx(spend[i], abs=0.005 + 1e-9 * spend[i])


@pytest.mark.parametrize("seed", range(6))
def test_predictions_are_the_vectorised_clv_functions(seed):
    """Same formulas, same operations: the scalar path gives clv's floats, to the last bits."""
    rng = np.random.default_rng(100 + seed)
    params = random_params(rng)
    unit, bg, gg = params.unit_days, params.bgnbd, params.gamma_gamma
    assert gg is not None
    for customer in random_customers(rng, 150, unit):
        x, tx, age, m = customer.frequency, customer.recency, customer.T, customer.monetary_value
        found = predict(customer, 20_000, params, RULES)
        assert found.p_alive == pytest.approx(clv.p_alive(bg, x, tx, age), rel=1e-13, abs=1e-300)
        assert found.p_no_purchase == pytest.approx(clv.p_no_purchase(bg, 90 / unit, x, tx, age), rel=1e-13)
        assert found.churn_band is band_of(clv.p_no_purchase(bg, 90 / unit, x, tx, age), RULES)
        horizons = np.array([90 / unit, 365 / unit])
        e90, e365 = clv.expected_purchases(bg, horizons, x, tx, age)
        assert found.expected_purchases_90d == pytest.approx(e90, rel=1e-12, abs=1e-300)
        assert found.expected_purchases_365d == pytest.approx(e365, rel=1e-12, abs=1e-300)
        value = clv.customer_lifetime_value(
            bg, gg, x, tx, age, m, time_months=12, discount_rate=0.01, freq_unit_days=unit
        )
        assert found.clv_365 is not None
        assert float(found.clv_365) == pytest.approx(value, abs=0.005 + 1e-9 * abs(value))
        wait = clv.expected_time_to_next_purchase(bg, x, tx, age) * unit
        if found.next_order_in_days is None:
            assert not (wait <= 3650.0)
        else:
            assert found.next_order_in_days == pytest.approx(wait, rel=1e-13)


def scanned_band_change_day(customer: CustomerRfm, as_of_day: int, params: ModelParams, band: ChurnBand) -> int | None:
    """The straightforward definition: P(no purchase) on each of the coming days, the first that moves."""
    ahead = np.arange(1, BAND_SEARCH_DAYS + 1, dtype=np.float64)
    silent = clv.p_no_purchase(
        params.bgnbd,
        RULES.churn_horizon_days / params.unit_days,
        customer.frequency,
        customer.recency,
        customer.T + ahead / params.unit_days,
    )
    bands = np.where(silent < RULES.churn_low, 0, np.where(silent > RULES.churn_high, 2, 1))
    moved = np.flatnonzero(bands != {"low": 0, "medium": 1, "high": 2}[band])
    return as_of_day + int(ahead[moved[0]]) if moved.size else None


@pytest.mark.parametrize("seed", range(6))
def test_band_change_day_bisection_equals_the_day_by_day_scan(seed):
    rng = np.random.default_rng(200 + seed)
    params = random_params(rng)
    changes = 0
    for customer in random_customers(rng, 200, params.unit_days):
        found = predict(customer, 20_000, params, RULES)
        expected = scanned_band_change_day(customer, 20_000, params, found.churn_band)
        assert found.band_change_day == expected, customer
        changes += expected is not None
    assert changes > 0  # the comparison saw actual changes, not only "never"


def test_tracked_fields_follow_the_declared_order():
    card = Scorecard(as_of=pd.Timestamp("2026-01-01", tz="UTC").to_pydatetime(), model_id=None)
    assert tuple(card.tracked()) == TRACKED_FIELDS


def test_lifecycle_rhythm_is_the_statistics_median_formula():
    rules = lifecycle.LifecycleRules(
        default_rhythm_days=30,
        rhythm_prior_weight=2,
        rhythm_min_days=1,
        rhythm_max_days=365,
        at_risk_factor=2,
        lapsed_factor=4,
    )
    rng = np.random.default_rng(7)
    for _ in range(300):
        days = sorted({int(d) for d in rng.integers(0, 1000, size=int(rng.integers(1, 12)))})
        gaps = [b - a for a, b in itertools.pairwise(days)]
        prior = float(rng.choice([0.0, 12.5, 40.0]))
        expected_prior = prior if prior > 0 else 30
        if gaps:
            n = len(gaps)
            value = (n * float(statistics.median(gaps)) + 2 * expected_prior) / (n + 2)
        else:
            value = expected_prior
        assert lifecycle.rhythm(days, prior, rules) == min(max(value, 1), 365)


def day_by_day_tiers(history: list[Occasion], thresholds: TierThresholds, tier_rules: TierRules, as_of_day: int):
    """The tier machine stepped on every single day from the first purchase (same checkpoints' states)."""
    tier = None
    for day in range(history[0].day, as_of_day + 1):
        window = [o for o in history if day - tier_rules.window_days < o.day <= day]
        value = sum((o.value for o in window), Decimal(0))
        tier = next_tier(tier, value, thresholds, Decimal(str(tier_rules.hysteresis)))
    return tier


def day_by_day_grades(history: list[Occasion], rules: GradeRules, as_of_day: int):
    grade = None
    for day in range(history[0].day, as_of_day + 1):
        window = [o for o in history if day - rules.window_days < o.day <= day]
        grade = next_grade(grade, sum((o.net for o in window), Decimal(0)), len(window), rules)
    return grade


@pytest.mark.parametrize("seed", range(4))
def test_tier_and_grade_folds_equal_stepping_every_day(seed):
    rng = np.random.default_rng(300 + seed)
    thresholds = TierThresholds(Decimal("120.5"), Decimal("40"))
    tier_rules = TierRules(basis="revenue", window_days=60, a_share=0.2, b_share=0.5, hysteresis=0.2)
    grades = GradeRules(
        window_days=45,
        hysteresis=0.25,
        ladder=(GradeRule("silver", 50, 3), GradeRule("gold", 150, 5), GradeRule("vip", 400, 9)),
    )
    for _ in range(25):
        days = sorted({int(d) for d in rng.integers(0, 240, size=int(rng.integers(1, 14)))})
        history = [
            Occasion(d, Decimal(str(round(rng.uniform(0, 90), 2))), Decimal(str(round(rng.uniform(0, 90), 2))), 1)
            for d in days
        ]
        as_of = days[-1] + int(rng.integers(0, 90))
        assert value_tier(history, thresholds, tier_rules, as_of)[0] == day_by_day_tiers(
            history, thresholds, tier_rules, as_of
        )
        assert membership_grade(history, grades, as_of)[0] == day_by_day_grades(history, grades, as_of)
        steps, value, net, count = fold_window(history, grades.window_days, as_of, 0, lambda n, *_: n + 1)
        window = [o for o in history if as_of - grades.window_days < o.day <= as_of]
        assert (value, net, count) == (sum(o.value for o in window), sum(o.net for o in window), len(window))
        assert 0 < steps <= 2 * len(history) + 1  # one step per day the window changes, not per day


def test_numpy_order_sum_is_np_sum_to_the_bit():
    rng = np.random.default_rng(11)
    for n in (0, 1, 7, 8, 12, 13, 24, 120, 300):
        for _ in range(50):
            values = (rng.standard_normal(n) * np.exp(rng.uniform(-8, 8, n))).tolist()
            assert _numpy_sum(values) == float(np.sum(np.array(values, dtype=np.float64)))


@pytest.mark.parametrize("basis", ["revenue", "margin"])
def test_occasions_equal_grouping_the_order_lines(basis):
    rng = np.random.default_rng(12)
    shanghai = ZoneInfo("Asia/Shanghai")
    start = datetime(2026, 1, 1, tzinfo=UTC)
    orders = [
        OrderLine(
            f"o{i}",
            start + timedelta(hours=float(rng.uniform(0, 24 * 20))),
            Decimal(str(round(rng.uniform(-5, 200), int(rng.integers(0, 3))))),
            Decimal(str(round(rng.uniform(0, 50), 2))) if rng.random() < 0.3 else Decimal(0),
            Decimal(str(round(rng.uniform(0, 80), 1))) if rng.random() < 0.5 else None,
        )
        for i in range(120)
    ]
    for tz in (UTC, shanghai):
        expected: dict[int, tuple[Decimal, Decimal, int]] = {}
        for order in orders:
            day = (order.occurred_at.astimezone(tz).date() - date(1970, 1, 1)).days
            net, value, count = expected.get(day, (Decimal(0), Decimal(0), 0))
            expected[day] = (net + order.net, value + order.value(basis), count + 1)
        found = occasions(orders, tz, basis)
        assert [(o.day, str(o.net), str(o.value), o.orders) for o in found] == [
            (day, str(net), str(value), count) for day, (net, value, count) in sorted(expected.items())
        ]
