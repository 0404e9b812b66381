"""Lifecycle stage judged against each customer's own purchase rhythm, not one global cut-off.

Pure. The rhythm is the customer's typical gap between purchase occasions (median), blended with
the population's typical gap while the customer has few gaps of their own. Silence longer than
``at_risk_factor`` × rhythm makes the customer at-risk, longer than ``lapsed_factor`` × rhythm
lapsed; a purchase after a lapse makes them won-back until their next purchase.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass

from shared.contracts import LifecycleStage


@dataclass(frozen=True)
class LifecycleRules:
    default_rhythm_days: float
    rhythm_prior_weight: float
    rhythm_min_days: float
    rhythm_max_days: float
    at_risk_factor: float
    lapsed_factor: float


@dataclass(frozen=True)
class StageJudgement:
    stage: LifecycleStage
    rhythm_days: float | None
    days_silent: int | None
    reason: str
    next_check_day: int | None
    """First day the stage would change if nothing else happens (None: only a purchase changes it)."""


def rhythm(days: Sequence[int], population_gap: float | None, rules: LifecycleRules) -> float:
    """Typical days between purchase occasions: own median gap, shrunk towards the population's.

    With n own gaps and prior weight k, rhythm = (n·median + k·population) / (n + k), so a
    customer with one gap is not judged on that gap alone, and one with many on their own habit.
    """
    return _rhythm([b - a for a, b in itertools.pairwise(days)], population_gap, rules)


def _median(values: list[int]) -> float | int:
    """statistics.median, without its generality (it is most of this module's time otherwise)."""
    ordered = sorted(values)
    middle = len(ordered) // 2
    return ordered[middle] if len(ordered) % 2 else (ordered[middle - 1] + ordered[middle]) / 2


def _rhythm(gaps: list[int], population_gap: float | None, rules: LifecycleRules) -> float:
    prior = population_gap if population_gap and population_gap > 0 else rules.default_rhythm_days
    if gaps:
        own = float(_median(gaps))
        n = len(gaps)
        value = (n * own + rules.rhythm_prior_weight * prior) / (n + rules.rhythm_prior_weight)
    else:
        value = prior
    return min(max(value, rules.rhythm_min_days), rules.rhythm_max_days)


def judge_stage(
    days: Sequence[int], as_of_day: int, population_gap: float | None, rules: LifecycleRules
) -> StageJudgement:
    """The stage of a customer whose purchase occasions fell on ``days`` (sorted, ≤ as-of)."""
    if not days:
        return StageJudgement(LifecycleStage.PROSPECT, None, None, "no purchase yet", None)
    last = days[-1]
    silent = max(as_of_day - last, 0)
    gaps = [b - a for a, b in itertools.pairwise(days)]
    own = _rhythm(gaps, population_gap, rules)
    at_risk_after = rules.at_risk_factor * own
    lapsed_after = rules.lapsed_factor * own
    pace = f"{silent} days since the last purchase; own rhythm {own:.1f} days"
    if silent > lapsed_after:
        return StageJudgement(
            LifecycleStage.LAPSED, own, silent, f"{pace}: silent beyond {rules.lapsed_factor:g}× rhythm", None
        )
    if silent > at_risk_after:
        return StageJudgement(
            LifecycleStage.AT_RISK,
            own,
            silent,
            f"{pace}: silent beyond {rules.at_risk_factor:g}× rhythm",
            last + math.floor(lapsed_after) + 1,
        )
    next_check = last + math.floor(at_risk_after) + 1
    if len(days) == 1:
        return StageJudgement(LifecycleStage.NEW, own, silent, f"first purchase; {pace}", next_check)
    gap = gaps[-1]
    rhythm_before = _rhythm(gaps[:-1], population_gap, rules)  # the rhythm of days[:-1]
    if gap > rules.lapsed_factor * rhythm_before:
        return StageJudgement(
            LifecycleStage.WON_BACK,
            own,
            silent,
            f"bought again after {gap} days of silence, beyond {rules.lapsed_factor:g}× "
            f"the rhythm of {rhythm_before:.1f} days",
            next_check,
        )
    return StageJudgement(LifecycleStage.ACTIVE, own, silent, f"buying within rhythm; {pace}", next_check)
