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
from functools import lru_cache
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


_TIERS_DOWN = (ValueTier.A, ValueTier.B, ValueTier.C, ValueTier.D)
"""Highest tier first."""


@lru_cache(maxsize=64)
def _relaxed(thresholds: TierThresholds, margin: Decimal) -> tuple[Decimal, Decimal]:
    """The demotion bounds of A and B — products of Decimals, the same every time, so made once."""
    return thresholds.a * (1 - margin), thresholds.b * (1 - margin)


_last_relaxed: tuple[TierThresholds, float, tuple[Decimal, Decimal]] | None = None


def _relaxed_for(thresholds: TierThresholds, hysteresis: float) -> tuple[Decimal, Decimal]:
    """_relaxed of the model and rules in force: the same objects event after event, so an identity
    check saves hashing Decimals (and parsing the hysteresis) on every fold."""
    global _last_relaxed
    last = _last_relaxed
    if last is not None and last[0] is thresholds and last[1] == hysteresis:
        return last[2]
    relaxed = _relaxed(thresholds, Decimal(str(hysteresis)))
    _last_relaxed = (thresholds, hysteresis, relaxed)
    return relaxed


def _next_tier(
    current: ValueTier | None, value: Decimal, thresholds: TierThresholds, relaxed: tuple[Decimal, Decimal]
) -> ValueTier:
    # raw_tier, inlined: this runs at every checkpoint of every fold
    if value >= thresholds.a:
        raw = ValueTier.A
    elif value >= thresholds.b:
        raw = ValueTier.B
    elif value > 0:
        raw = ValueTier.C
    else:
        raw = ValueTier.D
    if current is None or TIER_RANK[raw] >= TIER_RANK[current]:
        return raw
    lowest, highest = TIER_RANK[raw], TIER_RANK[current]
    for tier in _TIERS_DOWN:
        if lowest < TIER_RANK[tier] <= highest:
            if tier is ValueTier.A:
                holds = value >= relaxed[0]
            elif tier is ValueTier.B:
                holds = value >= relaxed[1]
            else:
                holds = tier is ValueTier.D or value > 0
            if holds:
                return tier
    return raw


def next_tier(current: ValueTier | None, value: Decimal, thresholds: TierThresholds, margin: Decimal) -> ValueTier:
    """Promote as soon as a threshold is reached; demote only below threshold × (1 − margin)."""
    return _next_tier(current, value, thresholds, _relaxed(thresholds, margin))


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


@dataclass(frozen=True, eq=False, slots=True)
class _Ladder:
    """A GradeRules' thresholds as Decimals and its ranks as a dict, made once per rules rather than
    at every step of every fold."""

    rank: dict[str, int]
    qualify: tuple[tuple[str, Decimal, int], ...]
    """name, min spend, min orders — lowest grade first."""
    hold: tuple[tuple[str, int, Decimal, float], ...]
    """name, rank, min spend × (1 − hysteresis), min orders × (1 − hysteresis) — highest grade first."""


_last_ladder: tuple[GradeRules, _Ladder] | None = None


def _ladder(rules: GradeRules) -> _Ladder:
    """The ladder of the rules in force, found by identity (hashing GradeRules means hashing every rule)."""
    global _last_ladder
    last = _last_ladder
    if last is not None and last[0] is rules:
        return last[1]
    ladder = _make_ladder(rules)
    _last_ladder = (rules, ladder)
    return ladder


@lru_cache(maxsize=16)
def _make_ladder(rules: GradeRules) -> _Ladder:
    rank: dict[str, int] = {}
    for number, rule in enumerate(rules.ladder):
        rank.setdefault(rule.name, number + 1)  # GradeRules.rank: the first rule of a name
    keep = Decimal(1) - Decimal(str(rules.hysteresis))
    return _Ladder(
        rank=rank,
        qualify=tuple((rule.name, Decimal(str(rule.min_spend)), rule.min_orders) for rule in rules.ladder),
        hold=tuple(
            (rule.name, rank[rule.name], Decimal(str(rule.min_spend)) * keep, rule.min_orders * float(keep))
            for rule in reversed(rules.ladder)
        ),
    )


def _raw_grade(spend: Decimal, count: int, ladder: _Ladder) -> str:
    grade = REGULAR
    for name, min_spend, min_orders in ladder.qualify:
        if spend >= min_spend or count >= min_orders:
            grade = name
    return grade


def _next_grade(current: str | None, spend: Decimal, count: int, ladder: _Ladder) -> str:
    raw = _raw_grade(spend, count, ladder)
    rank = ladder.rank
    lowest = rank.get(raw, 0)
    if current is None or lowest >= rank.get(current, 0):
        return raw
    highest = rank.get(current, 0)
    for name, number, min_spend, min_orders in ladder.hold:
        if lowest < number <= highest and (spend >= min_spend or count >= min_orders):
            return name
    return raw


def raw_grade(spend: Decimal, count: int, rules: GradeRules) -> str:
    return _raw_grade(spend, count, _ladder(rules))


def next_grade(current: str | None, spend: Decimal, count: int, rules: GradeRules) -> str:
    return _next_grade(current, spend, count, _ladder(rules))


@dataclass(frozen=True, slots=True)
class WindowSeries:
    """The trailing window at every day it changes, up to as-of (the days ``fold_window`` steps on).

    The window at day d holds the occasions with d − window_days < day ≤ d. It changes on each
    purchase day and on each day a purchase leaves it; the as-of day is the last checkpoint. Days
    before the first purchase are left out (there is nothing to rank yet). The tier and the grade
    walk the same series when their windows are equal, so it is built once for both.
    """

    values: list[Decimal]
    nets: list[Decimal]
    counts: list[int]

    def at_end(self) -> tuple[Decimal, Decimal, int]:
        """The window's value, net revenue and occasion count at as-of."""
        if not self.counts:
            return ZERO, ZERO, 0
        return self.values[-1], self.nets[-1], self.counts[-1]


def window_series(history: Sequence[Occasion], window_days: int, as_of_day: int) -> WindowSeries:
    in_scope = [o for o in history if o.day <= as_of_day]
    days = [o.day for o in in_scope]
    checkpoints = sorted({*days, *(day + window_days for day in days if day + window_days <= as_of_day), as_of_day})
    values: list[Decimal] = []
    nets: list[Decimal] = []
    counts: list[int] = []
    value = net = ZERO
    count = 0
    enter = leave = 0
    scope = len(in_scope)
    for checkpoint in checkpoints:
        while enter < scope and days[enter] <= checkpoint:
            entering = in_scope[enter]
            value += entering.value
            net += entering.net
            count += 1
            enter += 1
        left_before = checkpoint - window_days
        while leave < enter and days[leave] <= left_before:
            leaving = in_scope[leave]
            value -= leaving.value
            net -= leaving.net
            count -= 1
            leave += 1
        if enter:
            values.append(value)
            nets.append(net)
            counts.append(count)
    return WindowSeries(values, nets, counts)


def fold_window(
    history: Sequence[Occasion],
    window_days: int,
    as_of_day: int,
    initial: S,
    step: Callable[[S, Decimal, Decimal, int], S],
) -> tuple[S, Decimal, Decimal, int]:
    """Run ``step(state, value, net, count)`` at every day the trailing window changes, up to as-of
    (see WindowSeries). Returns the final state and the window's value, net revenue and occasion
    count at as-of."""
    series = window_series(history, window_days, as_of_day)
    state = initial
    for value, net, count in zip(series.values, series.nets, series.counts, strict=True):
        state = step(state, value, net, count)
    return (state, *series.at_end())


def window_exit_day(history: Sequence[Occasion], window_days: int, as_of_day: int) -> int | None:
    """The first day after as-of on which a purchase now in the window leaves it."""
    exits = [o.day + window_days for o in history if as_of_day - window_days < o.day <= as_of_day]
    return min(exits) if exits else None


def tier_along(series: WindowSeries, thresholds: TierThresholds, rules: TierRules) -> tuple[ValueTier | None, Decimal]:
    """The hysteresis tier at the end of ``series`` and the window value it was judged on."""
    relaxed = _relaxed_for(thresholds, rules.hysteresis)
    a, b = thresholds.a, thresholds.b
    rank = TIER_RANK
    tier: ValueTier | None = None
    for value in series.values:
        # _next_tier with its common case — no demotion — inlined: this runs at every checkpoint.
        raw = ValueTier.A if value >= a else ValueTier.B if value >= b else ValueTier.C if value > 0 else ValueTier.D
        tier = raw if tier is None or rank[raw] >= rank[tier] else _next_tier(tier, value, thresholds, relaxed)
    return tier, series.at_end()[0]


def grade_along(series: WindowSeries, rules: GradeRules) -> tuple[str | None, Decimal, int]:
    """The hysteresis grade at the end of ``series`` with the window spend and purchase count."""
    ladder = _ladder(rules)
    rank = ladder.rank
    grade: str | None = None
    for net, count in zip(series.nets, series.counts, strict=True):
        # _next_grade with its common case — no demotion — inlined: this runs at every checkpoint.
        raw = _raw_grade(net, count, ladder)
        if grade is None or rank.get(raw, 0) >= rank.get(grade, 0):
            grade = raw
        else:
            grade = _next_grade(grade, net, count, ladder)
    _, spend, count = series.at_end()
    return grade, spend, count


def value_tier(
    history: Sequence[Occasion], thresholds: TierThresholds, rules: TierRules, as_of_day: int
) -> tuple[ValueTier | None, Decimal]:
    """The hysteresis tier at as-of and the window value it was judged on (None before any purchase)."""
    return tier_along(window_series(history, rules.window_days, as_of_day), thresholds, rules)


def membership_grade(history: Sequence[Occasion], rules: GradeRules, as_of_day: int) -> tuple[str | None, Decimal, int]:
    """The hysteresis grade at as-of with the window spend and purchase count (None before any purchase)."""
    return grade_along(window_series(history, rules.window_days, as_of_day), rules)
