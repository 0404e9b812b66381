"""Value tiers (Pareto, A–D) and membership grades (regular → vip), both with hysteresis.

Pure. A tier or grade with hysteresis depends on the path, so to stay independent of the order in
which events arrive the path is defined by event time: the hysteresis state machine is run over
the customer's own purchase days (and the days purchases leave the trailing window) up to the
as-of day, with the current thresholds. The same purchases and the same as-of day therefore give
the same tier whatever the arrival order, replays included.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import TypeVar

import numpy as np
from numpy.typing import ArrayLike

from services.scoring.purchases import Occasion, TierBasis
from shared.contracts import ValueTier

ZERO = Decimal(0)
TIER_RANK = {ValueTier.D: 0, ValueTier.C: 1, ValueTier.B: 2, ValueTier.A: 3}
REGULAR = "regular"
S = TypeVar("S")


@dataclass(frozen=True)
class TierRules:
    basis: TierBasis
    window_days: int
    a_share: float
    b_share: float
    hysteresis: float


@dataclass(frozen=True)
class TierThresholds:
    """Minimum trailing-window value for tier A and for tier B (population statistics)."""

    a: Decimal
    b: Decimal

    def as_json(self) -> dict[str, str]:
        return {"A": str(self.a), "B": str(self.b)}

    @classmethod
    def from_json(cls, data: dict[str, str]) -> TierThresholds:
        return cls(Decimal(data["A"]), Decimal(data["B"]))


def pareto_thresholds(values: ArrayLike, a_share: float, b_share: float) -> TierThresholds | None:
    """Cut-points of the Pareto ranking: rank customers by value, highest first; A holds the customers
    who together bring the first ``a_share`` of the total (the one crossing the line included), B the
    next ones up to ``b_share``. None when nobody has any value."""
    v = np.asarray(values, dtype=np.float64)
    v = np.sort(v[v > 0])[::-1]
    if v.size == 0:
        return None
    before = (np.cumsum(v) - v) / v.sum()  # share brought by everyone ranked above each customer
    last_a = int(np.flatnonzero(before < a_share)[-1])
    last_b = int(np.flatnonzero(before < b_share)[-1])
    return TierThresholds(_money(v[last_a]), _money(v[last_b]))


def _money(value: float) -> Decimal:
    return Decimal(repr(float(value))).quantize(Decimal("0.0001"))


def raw_tier(value: Decimal, thresholds: TierThresholds) -> ValueTier:
    if value >= thresholds.a:
        return ValueTier.A
    if value >= thresholds.b:
        return ValueTier.B
    if value > 0:
        return ValueTier.C
    return ValueTier.D


def _relaxed_tier_holds(tier: ValueTier, value: Decimal, thresholds: TierThresholds, margin: Decimal) -> bool:
    if tier is ValueTier.A:
        return value >= thresholds.a * (1 - margin)
    if tier is ValueTier.B:
        return value >= thresholds.b * (1 - margin)
    if tier is ValueTier.C:
        return value > 0
    return True


def next_tier(current: ValueTier | None, value: Decimal, thresholds: TierThresholds, margin: Decimal) -> ValueTier:
    """Promote as soon as a threshold is reached; demote only below threshold × (1 − margin)."""
    raw = raw_tier(value, thresholds)
    if current is None or TIER_RANK[raw] >= TIER_RANK[current]:
        return raw
    for tier in sorted(TIER_RANK, key=TIER_RANK.__getitem__, reverse=True):
        if TIER_RANK[raw] < TIER_RANK[tier] <= TIER_RANK[current] and _relaxed_tier_holds(
            tier, value, thresholds, margin
        ):
            return tier
    return raw


@dataclass(frozen=True)
class GradeRule:
    """A membership grade and what qualifies for it: spend or purchase count in the window."""

    name: str
    min_spend: float
    min_orders: int


@dataclass(frozen=True)
class GradeRules:
    window_days: int
    hysteresis: float
    ladder: tuple[GradeRule, ...]
    """Lowest grade first (silver, gold, vip); below all of them a customer is regular."""

    def rank(self, grade: str | None) -> int:
        names = [rule.name for rule in self.ladder]
        return names.index(grade) + 1 if grade in names else 0


def raw_grade(spend: Decimal, count: int, rules: GradeRules) -> str:
    grade = REGULAR
    for rule in rules.ladder:
        if spend >= Decimal(str(rule.min_spend)) or count >= rule.min_orders:
            grade = rule.name
    return grade


def next_grade(current: str | None, spend: Decimal, count: int, rules: GradeRules) -> str:
    raw = raw_grade(spend, count, rules)
    if current is None or rules.rank(raw) >= rules.rank(current):
        return raw
    keep = Decimal(1) - Decimal(str(rules.hysteresis))
    for rule in reversed(rules.ladder):
        rank = rules.rank(rule.name)
        if rules.rank(raw) < rank <= rules.rank(current) and (
            spend >= Decimal(str(rule.min_spend)) * keep or count >= rule.min_orders * float(keep)
        ):
            return rule.name
    return raw


def fold_window(
    history: Sequence[Occasion],
    window_days: int,
    as_of_day: int,
    initial: S,
    step: Callable[[S, Decimal, Decimal, int], S],
) -> tuple[S, Decimal, Decimal, int]:
    """Run ``step(state, value, net, count)`` at every day the trailing window changes, up to as-of.

    The window at day d holds the occasions with d − window_days < day ≤ d. It changes on each
    purchase day and on each day a purchase leaves it; the as-of day is the last checkpoint.
    Returns the final state and the window's value, net revenue and occasion count at as-of.
    """
    in_scope = [o for o in history if o.day <= as_of_day]
    checkpoints = sorted(
        {o.day for o in in_scope}
        | {o.day + window_days for o in in_scope if o.day + window_days <= as_of_day}
        | {as_of_day}
    )
    state = initial
    value = net = ZERO
    count = 0
    enter = leave = 0
    for checkpoint in checkpoints:
        while enter < len(in_scope) and in_scope[enter].day <= checkpoint:
            value += in_scope[enter].value
            net += in_scope[enter].net
            count += 1
            enter += 1
        while leave < enter and in_scope[leave].day <= checkpoint - window_days:
            value -= in_scope[leave].value
            net -= in_scope[leave].net
            count -= 1
            leave += 1
        if enter:  # before the first purchase there is nothing to rank
            state = step(state, value, net, count)
    return state, value, net, count


def window_exit_day(history: Sequence[Occasion], window_days: int, as_of_day: int) -> int | None:
    """The first day after as-of on which a purchase now in the window leaves it."""
    exits = [o.day + window_days for o in history if as_of_day - window_days < o.day <= as_of_day]
    return min(exits) if exits else None


def value_tier(
    history: Sequence[Occasion], thresholds: TierThresholds, rules: TierRules, as_of_day: int
) -> tuple[ValueTier | None, Decimal]:
    """The hysteresis tier at as-of and the window value it was judged on (None before any purchase)."""
    margin = Decimal(str(rules.hysteresis))

    def step(tier: ValueTier | None, value: Decimal, _net: Decimal, _count: int) -> ValueTier | None:
        return next_tier(tier, value, thresholds, margin)

    tier, value, _, _ = fold_window(history, rules.window_days, as_of_day, None, step)
    return tier, value


def membership_grade(history: Sequence[Occasion], rules: GradeRules, as_of_day: int) -> tuple[str | None, Decimal, int]:
    """The hysteresis grade at as-of with the window spend and purchase count (None before any purchase)."""

    def step(grade: str | None, _value: Decimal, net: Decimal, count: int) -> str | None:
        return next_grade(grade, net, count, rules)

    grade, _, spend, count = fold_window(history, rules.window_days, as_of_day, None, step)
    return grade, spend, count
