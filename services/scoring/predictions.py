"""Per-customer predictions from the current population parameters (BG/NBD + Gamma-Gamma). Pure.

The maths is services.scoring.clv; this module turns one customer's purchase occasions into the
model's (x, t_x, T, m̄) and the predictions into the file's fields: P(alive), expected purchases
over 90 and 365 days, expected spend per occasion, 365-day CLV, the churn-risk band (probability
of no purchase in the churn horizon) and the expected next-order date — plus the first future
day on which the churn band would change if the customer stays silent, for the lapse sweep.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal
from functools import lru_cache

import numpy as np

# cython_special: the same 2F1 as the scipy.special ufunc (same code, same doubles) without the
# ufunc machinery — about 0.3 µs a call from Python instead of several.
from scipy.special.cython_special import hyp2f1

from services.scoring import clv
from services.scoring.purchases import Occasion
from shared.contracts import ChurnBand

BAND_SEARCH_DAYS = 730
"""How far ahead the sweep looks for the day the churn band would change."""
MAX_NEXT_ORDER_DAYS = 3650.0


@dataclass(frozen=True)
class ModelParams:
    bgnbd: clv.BgNbdParams
    gamma_gamma: clv.GammaGammaParams | None
    """None when there was nothing to fit it on, or q ≤ 1 (infinite expected spend)."""
    unit_days: float


@dataclass(frozen=True)
class PredictionRules:
    churn_horizon_days: int
    churn_low: float
    churn_high: float
    clv_horizon_months: int
    clv_discount_rate_monthly: float


@dataclass(frozen=True)
class CustomerRfm:
    """One customer's BG/NBD inputs; times in the model's unit."""

    frequency: int
    recency: float
    T: float
    monetary_value: float
    first_day: int


@dataclass(frozen=True)
class Predictions:
    p_alive: float
    p_no_purchase: float
    churn_band: ChurnBand
    expected_purchases_90d: float
    expected_purchases_365d: float
    expected_spend: Decimal | None
    clv_365: Decimal | None
    next_order_in_days: float | None
    band_change_day: int | None


def customer_rfm(history: Sequence[Occasion], as_of_day: int, unit_days: float) -> CustomerRfm | None:
    """Same definition as clv.summarize (lifetimes): occasions − 1, first→last, first→as-of, and the
    mean net amount of the repeat occasions."""
    # History is sorted by day (as first/last below assume); usually nothing lies after as-of.
    seen = history if history and history[-1].day <= as_of_day else [o for o in history if o.day <= as_of_day]
    if not seen:
        return None
    first, last = seen[0].day, seen[-1].day
    repeats = seen[1:]
    monetary = float(sum([o.net for o in repeats]) / len(repeats)) if repeats else 0.0
    return CustomerRfm(
        frequency=len(repeats),
        recency=(last - first) / unit_days,
        T=(as_of_day - first) / unit_days,
        monetary_value=monetary,
        first_day=first,
    )


def band_of(p: float, rules: PredictionRules) -> ChurnBand:
    return ChurnBand(clv.churn_band(min(max(p, 0.0), 1.0), rules.churn_low, rules.churn_high))


CENT = Decimal("0.01")


def _money(value: float) -> Decimal | None:
    if not math.isfinite(value):
        return None
    return Decimal(repr(round(value, 2))).quantize(CENT)


# One customer is scored per event, so the maths below works on Python floats: a numpy call costs
# microseconds of overhead whatever its size, and a scorecard needed dozens of them. The formulas
# are clv's (FHL 2005 / lifetimes), written with the same operations in the same order, so the
# results are the same floats (math's exp/log/log1p/expm1 and numpy's give identical doubles here,
# and 2F1 is scipy's own; tests/unit/test_scoring_rescore_equivalence.py holds them to clv, to
# lifetimes and to the day-by-day band scan).


@dataclass(frozen=True, slots=True)
class _Plan:
    """What ``predict`` needs that depends on the model and the rules only — worked out once per model."""

    r: float
    alpha: float
    a: float
    b: float
    churn_horizon: float
    horizons: tuple[float, ...]
    """90 and 365 days, then the CLV's month ends, in model units."""
    discounts: tuple[float, ...]
    """(1 + monthly rate)^k for months k = 1…horizon."""
    band_offsets: tuple[float, ...]
    """k days in model units, k = 1…BAND_SEARCH_DAYS (T + offset is the age k days ahead)."""


_last_plan: tuple[ModelParams, PredictionRules, _Plan] | None = None


def _plan(params: ModelParams, rules: PredictionRules) -> _Plan:
    """The plan of the model in force: the same objects come back event after event (the model
    caches its params), so an identity check saves hashing them each time."""
    global _last_plan
    last = _last_plan
    if last is not None and last[0] is params and last[1] is rules:
        return last[2]
    plan = _make_plan(params, rules)
    _last_plan = (params, rules, plan)
    return plan


@lru_cache(maxsize=16)
def _make_plan(params: ModelParams, rules: PredictionRules) -> _Plan:
    r, alpha, a, b = (float(v) for v in params.bgnbd)
    unit = params.unit_days
    factor = clv.periods_per_month(unit)
    months = rules.clv_horizon_months
    return _Plan(
        r=r,
        alpha=alpha,
        a=a,
        b=b,
        churn_horizon=rules.churn_horizon_days / unit,
        horizons=(90 / unit, 365 / unit, *(float(k) * factor for k in range(1, months + 1))),
        discounts=tuple((1.0 + rules.clv_discount_rate_monthly) ** float(k) for k in range(1, months + 1)),
        band_offsets=tuple(float(k) / unit for k in range(1, BAND_SEARCH_DAYS + 1)),
    )


def _p_alive(plan: _Plan, x: float, tx: float, age: float) -> float:
    """clv.p_alive for one customer."""
    if x <= 0:
        return 1.0
    d = math.log(plan.a / (plan.b + max(x, 1.0) - 1.0)) + (plan.r + x) * math.log1p((age - tx) / (plan.alpha + tx))
    try:
        return 1.0 / (1.0 + math.exp(d))  # scipy's expit(-d)
    except OverflowError:  # numpy's exp gives inf there
        return 0.0


def _p_no_purchase(plan: _Plan, t: float, x: float, alive: float, age: float) -> float:
    """clv.p_no_purchase for one customer whose P(alive) at ``age`` is ``alive``."""
    survive = math.exp(-(plan.r + x) * math.log1p(t / (plan.alpha + age)))
    return (1.0 - alive) + alive * survive


def _expected_purchases(plan: _Plan, x: float, tx: float, age: float, alive: float) -> list[float]:
    """clv.expected_purchases at every horizon of the plan (FHL 2005 eq. 10)."""
    r, alpha, a, b = plan.r, plan.alpha, plan.a, plan.b
    if abs(a - 1.0) >= clv._A_ONE_EPS:
        base = alpha + age
        horizons = plan.horizons
        big_a, big_b, big_c = r + x, b + x, a + b + x - 1.0
        hyp = [hyp2f1(big_a, big_b, big_c, t / (base + t)) for t in horizons]
        if math.isfinite(sum(hyp)) and min(hyp) > 0.0:  # else clv's Euler-transformed fallback
            first = (a + b + x - 1.0) / (a - 1.0)
            shape = r + x
            return [
                first * -math.expm1(math.log(h) - shape * math.log1p(t / base)) * alive
                for t, h in zip(horizons, hyp, strict=True)
            ]
    # a ≈ 1 (a 0/0 limit) or a 2F1 outside its direct range: clv's general path.
    cumulative = clv.expected_purchases((r, alpha, a, b), np.asarray(plan.horizons), x, tx, age)
    return [float(v) for v in cumulative]


def _numpy_sum(values: Sequence[float]) -> float:
    """Sum in numpy's pairwise order (np.sum of a float64 array), so the CLV stays the same float."""
    n = len(values)
    if n < 8:
        total = 0.0
        for value in values:
            total += value
        return total
    if n > 128:
        half = n // 2
        half -= half % 8
        return _numpy_sum(values[:half]) + _numpy_sum(values[half:])
    acc = list(values[:8])
    i = 8
    while i < n - n % 8:
        for j in range(8):
            acc[j] += values[i + j]
        i += 8
    total = ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]))
    while i < n:
        total += values[i]
        i += 1
    return total


def _expected_spend(gamma_gamma: clv.GammaGammaParams, x: float, monetary_value: float) -> float:
    """clv.conditional_expected_average_profit for one customer."""
    p, q, v = gamma_gamma
    if q <= 1.0:
        raise ValueError("Gamma-Gamma q <= 1: the expected spend is infinite")
    weight = p * x / (p * x + q - 1.0)
    population_mean = v * p / (q - 1.0)
    return (1.0 - weight) * population_mean + weight * monetary_value


def predict(rfm: CustomerRfm, as_of_day: int, params: ModelParams, rules: PredictionRules) -> Predictions:
    plan = _plan(params, rules)
    unit = params.unit_days
    x, tx, age = rfm.frequency, rfm.recency, rfm.T
    alive = _p_alive(plan, x, tx, age)
    silent = _p_no_purchase(plan, plan.churn_horizon, x, alive, age)
    band = band_of(silent, rules)
    # 90 and 365 days and the CLV's month ends in one pass (the CLV is lifetimes' definition — see
    # clv.customer_lifetime_value — evaluated without its per-month loop).
    cumulative = _expected_purchases(plan, x, tx, age, alive)
    shape, scale = plan.r + x, plan.alpha + age
    wait = (scale / (shape - 1.0) if shape > 1.0 else scale * math.expm1(math.log(2.0) / shape)) * unit
    spend = clv_value = None
    if params.gamma_gamma is not None:
        per_occasion = _expected_spend(params.gamma_gamma, x, rfm.monetary_value)
        discounted = []
        previous = 0.0
        for expected, discount in zip(cumulative[2:], plan.discounts, strict=True):
            discounted.append((expected - previous) / discount)  # that month's purchases, discounted
            previous = expected
        spend = _money(per_occasion)
        clv_value = _money(per_occasion * _numpy_sum(discounted))
    return Predictions(
        p_alive=alive,
        p_no_purchase=silent,
        churn_band=band,
        expected_purchases_90d=cumulative[0],
        expected_purchases_365d=cumulative[1],
        expected_spend=spend,
        clv_365=clv_value,
        next_order_in_days=wait if math.isfinite(wait) and wait <= MAX_NEXT_ORDER_DAYS else None,
        band_change_day=_band_change_day(plan, rfm, as_of_day, rules, band),
    )


_BAND_INDEX = {ChurnBand.LOW: 0, ChurnBand.MEDIUM: 1, ChurnBand.HIGH: 2}


def _band_change_day(
    plan: _Plan, rfm: CustomerRfm, as_of_day: int, rules: PredictionRules, band: ChurnBand
) -> int | None:
    """First day after as-of on which silence alone moves the churn band.

    P(no purchase within the horizon) only rises with silence — P(alive) falls and the alive
    customer's chance of silence rises — so the band can only step up, and the first day it
    differs is found by bisection over the coming BAND_SEARCH_DAYS days (about ten evaluations
    instead of all of them; the unit tests compare it with the day-by-day scan).
    """
    r, alpha, horizon, offsets = plan.r, plan.alpha, plan.churn_horizon, plan.band_offsets
    x, tx, age = rfm.frequency, rfm.recency, rfm.T
    low, high, current = rules.churn_low, rules.churn_high, _BAND_INDEX[band]
    if current == 2:  # already high: it can only stay there
        return None
    # _p_alive and _p_no_purchase, with what does not depend on the day worked out once.
    shape = r + x
    log_odds = math.log(plan.a / (plan.b + max(x, 1.0) - 1.0)) if x > 0 else 0.0
    alpha_tx = alpha + tx

    def moved(day: int) -> bool:
        later = age + offsets[day - 1]
        if x > 0:
            d = log_odds + shape * math.log1p((later - tx) / alpha_tx)
            try:
                alive = 1.0 / (1.0 + math.exp(d))
            except OverflowError:
                alive = 0.0
        else:
            alive = 1.0
        silent = (1.0 - alive) + alive * math.exp(-shape * math.log1p(horizon / (alpha + later)))
        return (0 if silent < low else 2 if silent > high else 1) != current

    if not moved(BAND_SEARCH_DAYS):
        return None
    before, after = 0, BAND_SEARCH_DAYS  # the band has not moved by ``before`` and has by ``after``
    while after - before > 1:
        middle = (before + after) // 2
        if moved(middle):
            after = middle
        else:
            before = middle
    return as_of_day + after
