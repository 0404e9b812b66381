"""RFM scores 1–5 by population quintiles. Pure.

Recency is days since the last purchase occasion (fewer is better), frequency the number of
purchase occasions, monetary the net revenue. The cut-points are the population's 20/40/60/80 %
quantiles, refreshed with the other population statistics; a customer's score is 1 plus the
number of cut-points their value exceeds (reversed for recency). Ties at a cut-point share the
lower score, so a population where most bought once still gives them all the same F.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike

QUINTILES = (0.2, 0.4, 0.6, 0.8)
Cuts = tuple[float, float, float, float]


@dataclass(frozen=True)
class RfmCuts:
    recency_days: Cuts
    frequency: Cuts
    monetary: Cuts

    def as_json(self) -> dict[str, list[float]]:
        return {
            "recency_days": list(self.recency_days),
            "frequency": list(self.frequency),
            "monetary": list(self.monetary),
        }

    @classmethod
    def from_json(cls, data: dict[str, list[float]]) -> RfmCuts:
        return cls(_cuts(data["recency_days"]), _cuts(data["frequency"]), _cuts(data["monetary"]))


def _cuts(values: ArrayLike) -> Cuts:
    a, b, c, d = (float(v) for v in np.asarray(values, dtype=np.float64))
    return (a, b, c, d)


def quintile_cuts(values: ArrayLike) -> Cuts:
    return _cuts(np.quantile(np.asarray(values, dtype=np.float64), QUINTILES))


def population_cuts(recency_days: ArrayLike, frequency: ArrayLike, monetary: ArrayLike) -> RfmCuts:
    return RfmCuts(quintile_cuts(recency_days), quintile_cuts(frequency), quintile_cuts(monetary))


def higher_is_better(value: float, cuts: Cuts) -> int:
    return 1 + _above(value, cuts)


def lower_is_better(value: float, cuts: Cuts) -> int:
    return 5 - _above(value, cuts)


def _above(value: float, cuts: Cuts) -> int:
    """How many cut-points ``value`` exceeds (written out: a generator costs more than the comparisons)."""
    a, b, c, d = cuts
    return (value > a) + (value > b) + (value > c) + (value > d)


def rfm_scores(recency_days: float, frequency: float, monetary: float, cuts: RfmCuts) -> tuple[int, int, int]:
    return (
        lower_is_better(recency_days, cuts.recency_days),
        higher_is_better(frequency, cuts.frequency),
        higher_is_better(monetary, cuts.monetary),
    )
