"""Population statistics, fitted together on a schedule and on demand. Pure (numpy/scipy).

One fit over the whole purchase log up to an as-of day gives everything the per-customer scores
compare against: the BG/NBD and Gamma-Gamma parameters (maximum likelihood), the RFM quintile
cut-points, the Pareto tier thresholds, the margin cut-points of the relationship matrix, the
population's typical gap between purchases and its size. The result is stored as one model
snapshot with its fit time, data size, log-likelihood and time unit.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from datetime import datetime
from functools import cached_property
from typing import Any

import numpy as np
from numpy.typing import NDArray

from services.scoring import clv
from services.scoring.predictions import ModelParams
from services.scoring.rfm import RfmCuts, population_cuts
from services.scoring.tiers import TierThresholds, pareto_thresholds


class NotEnoughData(ValueError):
    """Too few customers (or no repeat purchase) to fit the population models."""


@dataclass(frozen=True)
class PopulationRules:
    a_share: float
    b_share: float
    window_days: int
    margin_quantiles: tuple[float, float]
    """low, high quantile of the window value for the relationship matrix's margin classes."""
    unit_days: float
    penalizer: float
    min_customers: int


@dataclass(frozen=True)
class PurchaseLog:
    """Purchase occasions of the population: one row per customer and day (sums of that day's orders)."""

    customer: NDArray[np.int64]
    day: NDArray[np.int64]
    net: NDArray[np.float64]
    value: NDArray[np.float64]

    def __len__(self) -> int:
        return int(self.customer.size)


@dataclass(frozen=True)
class BgNbdSummary:
    r: float
    alpha: float
    a: float
    b: float
    log_likelihood: float
    converged: bool


@dataclass(frozen=True)
class GammaGammaSummary:
    p: float
    q: float
    v: float
    log_likelihood: float
    n: int
    converged: bool


@dataclass(frozen=True)
class PopulationModel:
    fitted_at: datetime
    as_of: datetime
    as_of_day: int
    trigger: str
    time_unit_days: float
    n_customers: int
    n_repeaters: int
    population_size: int
    bgnbd: BgNbdSummary
    gamma_gamma: GammaGammaSummary | None
    rfm_cuts: RfmCuts
    tier_thresholds: TierThresholds | None
    margin_cuts: tuple[float, float] | None
    typical_gap_days: float | None
    fit_seconds: float = 0.0
    id: int | None = field(default=None, compare=False)

    @property
    def log_likelihood(self) -> float:
        return self.bgnbd.log_likelihood

    @cached_property  # read on every scored event; the model never changes once made
    def params(self) -> ModelParams:
        gg = self.gamma_gamma
        usable = gg is not None and gg.q > 1
        return ModelParams(
            bgnbd=(self.bgnbd.r, self.bgnbd.alpha, self.bgnbd.a, self.bgnbd.b),
            gamma_gamma=(gg.p, gg.q, gg.v) if usable and gg is not None else None,
            unit_days=self.time_unit_days,
        )

    def with_id(self, model_id: int) -> PopulationModel:
        return replace(self, id=model_id)

    def statistics_json(self) -> dict[str, Any]:
        """Everything but the columns the snapshot table has of its own."""
        return {
            "as_of_day": self.as_of_day,
            "population_size": self.population_size,
            "bgnbd": vars(self.bgnbd),
            "gamma_gamma": None if self.gamma_gamma is None else vars(self.gamma_gamma),
            "rfm_cuts": self.rfm_cuts.as_json(),
            "tier_thresholds": None if self.tier_thresholds is None else self.tier_thresholds.as_json(),
            "margin_cuts": None if self.margin_cuts is None else list(self.margin_cuts),
            "typical_gap_days": self.typical_gap_days,
            "fit_seconds": self.fit_seconds,
        }

    @classmethod
    def from_row(
        cls,
        *,
        model_id: int,
        fitted_at: datetime,
        as_of: datetime,
        trigger: str,
        time_unit_days: float,
        n_customers: int,
        n_repeaters: int,
        statistics: dict[str, Any],
    ) -> PopulationModel:
        gg = statistics.get("gamma_gamma")
        tiers = statistics.get("tier_thresholds")
        margins = statistics.get("margin_cuts")
        return cls(
            fitted_at=fitted_at,
            as_of=as_of,
            as_of_day=int(statistics["as_of_day"]),
            trigger=trigger,
            time_unit_days=time_unit_days,
            n_customers=n_customers,
            n_repeaters=n_repeaters,
            population_size=int(statistics["population_size"]),
            bgnbd=BgNbdSummary(**statistics["bgnbd"]),
            gamma_gamma=None if gg is None else GammaGammaSummary(**gg),
            rfm_cuts=RfmCuts.from_json(statistics["rfm_cuts"]),
            tier_thresholds=None if tiers is None else TierThresholds.from_json(tiers),
            margin_cuts=None if margins is None else (float(margins[0]), float(margins[1])),
            typical_gap_days=statistics.get("typical_gap_days"),
            fit_seconds=float(statistics.get("fit_seconds", 0.0)),
            id=model_id,
        )


def occasions_log(
    customer: NDArray[np.int64], day: NDArray[np.int64], net: NDArray[np.float64], value: NDArray[np.float64]
) -> PurchaseLog:
    """Group order rows (customer code, local day, net amount, tier value) into purchase occasions."""
    if customer.size == 0:
        empty_i = np.zeros(0, dtype=np.int64)
        empty_f = np.zeros(0, dtype=np.float64)
        return PurchaseLog(empty_i, empty_i.copy(), empty_f, empty_f.copy())
    dmin = int(day.min())
    span = int(day.max()) - dmin + 1
    key = customer.astype(np.int64) * span + (day - dmin)
    unique, inverse = np.unique(key, return_inverse=True)
    inverse = inverse.reshape(-1)
    return PurchaseLog(
        customer=(unique // span).astype(np.int64),
        day=(unique % span + dmin).astype(np.int64),
        net=np.bincount(inverse, weights=net, minlength=unique.size).astype(np.float64),
        value=np.bincount(inverse, weights=value, minlength=unique.size).astype(np.float64),
    )


def _per_customer_median_gap(customer: NDArray[np.int64], day: NDArray[np.int64]) -> NDArray[np.float64]:
    """Median gap between consecutive occasions, per repeat customer (input sorted by customer, day)."""
    same = customer[1:] == customer[:-1]
    gaps = (day[1:] - day[:-1])[same]
    owners = customer[1:][same]
    if gaps.size == 0:
        return np.zeros(0, dtype=np.float64)
    order = np.lexsort((gaps, owners))
    gaps, owners = gaps[order], owners[order]
    starts = np.flatnonzero(np.r_[True, owners[1:] != owners[:-1]])
    counts = np.diff(np.r_[starts, owners.size])
    lower = gaps[starts + (counts - 1) // 2]
    upper = gaps[starts + counts // 2]
    return np.asarray((lower + upper) / 2.0, dtype=np.float64)


def fit_population(
    log: PurchaseLog,
    *,
    as_of: datetime,
    as_of_day: int,
    rules: PopulationRules,
    fitted_at: datetime,
    trigger: str,
) -> PopulationModel:
    """Fit every population statistic on the occasions up to ``as_of_day`` (inclusive)."""
    keep = log.day <= as_of_day
    customer, day, net, value = log.customer[keep], log.day[keep], log.net[keep], log.value[keep]
    summary = clv.summarize(customer, day, net, as_of=as_of_day, unit_days=rules.unit_days)
    n = len(summary)
    repeaters = int((summary.frequency > 0).sum())
    if n < rules.min_customers or repeaters == 0:
        raise NotEnoughData(
            f"need at least {rules.min_customers} customers with purchases and one repeat purchase up to "
            f"{as_of.isoformat()}; have {n} customers and {repeaters} repeaters"
        )
    bg = clv.fit_bgnbd(summary.frequency, summary.recency, summary.T, rules.penalizer)
    gg_summary = _fit_spend(summary, rules.penalizer)

    # Per-customer aggregates aligned with summary.customer (ascending codes).
    codes = np.searchsorted(summary.customer, customer)
    total_net = np.bincount(codes, weights=net, minlength=n)
    in_window = day > as_of_day - rules.window_days
    window_value = np.bincount(codes[in_window], weights=value[in_window], minlength=n)
    order = np.lexsort((day, customer))
    gaps = _per_customer_median_gap(customer[order], day[order])

    positive = window_value[window_value > 0]
    margin_cuts = (
        None
        if positive.size == 0
        else (
            float(np.quantile(positive, rules.margin_quantiles[0])),
            float(np.quantile(positive, rules.margin_quantiles[1])),
        )
    )
    return PopulationModel(
        fitted_at=fitted_at,
        as_of=as_of,
        as_of_day=as_of_day,
        trigger=trigger,
        time_unit_days=rules.unit_days,
        n_customers=n,
        n_repeaters=repeaters,
        population_size=n,
        bgnbd=BgNbdSummary(bg.r, bg.alpha, bg.a, bg.b, bg.log_likelihood, bg.converged),
        gamma_gamma=gg_summary,
        rfm_cuts=population_cuts((as_of_day - summary.last_day).astype(np.float64), summary.frequency + 1, total_net),
        tier_thresholds=pareto_thresholds(window_value, rules.a_share, rules.b_share),
        margin_cuts=margin_cuts,
        typical_gap_days=float(np.median(gaps)) if gaps.size else None,
    )


def _fit_spend(summary: clv.RfmSummary, penalizer: float) -> GammaGammaSummary | None:
    """Gamma-Gamma on repeaters whose repeat occasions kept some revenue (fully refunded ones carry
    no spend information); None when fewer than two such customers exist."""
    usable = (summary.frequency > 0) & (summary.monetary_value > 0)
    if int(usable.sum()) < 2:
        return None
    try:
        gg = clv.fit_gamma_gamma(summary.frequency[usable], summary.monetary_value[usable], penalizer)
    except ValueError:
        return None
    if not all(math.isfinite(v) for v in (gg.p, gg.q, gg.v, gg.log_likelihood)):
        return None
    return GammaGammaSummary(gg.p, gg.q, gg.v, gg.log_likelihood, gg.n, gg.converged)
