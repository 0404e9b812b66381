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

import numpy as np

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
    seen = [o for o in history if o.day <= as_of_day]
    if not seen:
        return None
    first, last = seen[0].day, seen[-1].day
    repeats = seen[1:]
    monetary = float(sum(o.net for o in repeats) / len(repeats)) if repeats else 0.0
    return CustomerRfm(
        frequency=len(repeats),
        recency=(last - first) / unit_days,
        T=(as_of_day - first) / unit_days,
        monetary_value=monetary,
        first_day=first,
    )


def band_of(p: float, rules: PredictionRules) -> ChurnBand:
    return ChurnBand(clv.churn_band(min(max(p, 0.0), 1.0), rules.churn_low, rules.churn_high))


def _money(value: float) -> Decimal | None:
    if not math.isfinite(value):
        return None
    return Decimal(repr(round(value, 2))).quantize(Decimal("0.01"))


def predict(rfm: CustomerRfm, as_of_day: int, params: ModelParams, rules: PredictionRules) -> Predictions:
    bg = params.bgnbd
    unit = params.unit_days
    x, tx, age = rfm.frequency, rfm.recency, rfm.T
    alive = float(clv.p_alive(bg, x, tx, age))
    horizon = rules.churn_horizon_days / unit
    silent = float(clv.p_no_purchase(bg, horizon, x, tx, age))
    band = band_of(silent, rules)
    # One vectorised call for 90 and 365 days and the CLV's month ends (the CLV is lifetimes'
    # definition — see clv.customer_lifetime_value — evaluated without its per-month loop).
    months = rules.clv_horizon_months
    month_ends = np.arange(1, months + 1, dtype=np.float64) * clv.periods_per_month(unit)
    horizons = np.concatenate(([90 / unit, 365 / unit], month_ends))
    cumulative = np.asarray(clv.expected_purchases(bg, horizons, x, tx, age), dtype=np.float64)
    e90, e365 = float(cumulative[0]), float(cumulative[1])
    wait = float(clv.expected_time_to_next_purchase(bg, x, tx, age)) * unit
    spend = clv_value = None
    if params.gamma_gamma is not None:
        per_occasion = float(clv.conditional_expected_average_profit(params.gamma_gamma, x, rfm.monetary_value))
        increments = np.diff(np.concatenate(([0.0], cumulative[2:])))
        discount = (1.0 + rules.clv_discount_rate_monthly) ** np.arange(1, months + 1, dtype=np.float64)
        spend = _money(per_occasion)
        clv_value = _money(float(per_occasion * np.sum(increments / discount)))
    return Predictions(
        p_alive=alive,
        p_no_purchase=silent,
        churn_band=band,
        expected_purchases_90d=e90,
        expected_purchases_365d=e365,
        expected_spend=spend,
        clv_365=clv_value,
        next_order_in_days=wait if math.isfinite(wait) and wait <= MAX_NEXT_ORDER_DAYS else None,
        band_change_day=_band_change_day(rfm, as_of_day, params, rules, band),
    )


def _band_change_day(
    rfm: CustomerRfm, as_of_day: int, params: ModelParams, rules: PredictionRules, band: ChurnBand
) -> int | None:
    """First day after as-of on which silence alone moves the churn band (P(no purchase) only rises
    with silence, so one vectorised pass over the coming days finds it)."""
    ahead = np.arange(1, BAND_SEARCH_DAYS + 1, dtype=np.float64)
    ages = rfm.T + ahead / params.unit_days
    silent = np.asarray(
        clv.p_no_purchase(params.bgnbd, rules.churn_horizon_days / params.unit_days, rfm.frequency, rfm.recency, ages),
        dtype=np.float64,
    )
    index = {"low": 0, "medium": 1, "high": 2}
    bands = np.where(silent < rules.churn_low, 0, np.where(silent > rules.churn_high, 2, 1))
    moved = np.flatnonzero(bands != index[band])
    return as_of_day + int(ahead[moved[0]]) if moved.size else None
