"""Value tiers (Pareto) and membership grades, with hysteresis judged along event time."""

import itertools
from decimal import Decimal

import pytest

from services.scoring.purchases import Occasion
from services.scoring.settings import ScoringSettings
from services.scoring.tiers import (
    GradeRule,
    GradeRules,
    TierRules,
    TierThresholds,
    membership_grade,
    next_grade,
    next_tier,
    pareto_thresholds,
    raw_tier,
    value_tier,
    window_exit_day,
)
from shared.contracts import ValueTier

D = Decimal
THRESHOLDS = TierThresholds(a=D(100), b=D(40))
TIERS = TierRules(basis="revenue", window_days=365, a_share=0.8, b_share=0.95, hysteresis=0.1)
GRADES = GradeRules(
    window_days=365,
    hysteresis=0.1,
    ladder=(GradeRule("silver", 1000, 4), GradeRule("gold", 5000, 12), GradeRule("vip", 20000, 24)),
)


def occasion(day: int, amount: str) -> Occasion:
    return Occasion(day, D(amount), D(amount), 1)


def test_pareto_thresholds_cut_at_the_cumulative_share_including_the_customer_crossing_it():
    # total 100; shares before each customer: 0, .5, .8, .9, .95
    cuts = pareto_thresholds([5, 50, 0, 10, 30, 5], a_share=0.8, b_share=0.95)
    assert cuts == TierThresholds(a=D("30"), b=D("5"))
    assert pareto_thresholds([0, 0], 0.8, 0.95) is None


def test_pareto_thresholds_follow_the_configured_shares():
    values = list(range(1, 101))
    strict = pareto_thresholds(values, a_share=0.5, b_share=0.9)
    loose = pareto_thresholds(values, a_share=0.8, b_share=0.95)
    assert strict is not None and loose is not None
    assert strict.a > loose.a and strict.b > loose.b


def test_raw_tier_by_threshold():
    assert [raw_tier(D(v), THRESHOLDS) for v in ("100", "99.99", "40", "0.01", "0")] == [
        ValueTier.A,
        ValueTier.B,
        ValueTier.B,
        ValueTier.C,
        ValueTier.D,
    ]


def test_tier_promotes_at_the_threshold_and_demotes_only_below_the_margin():
    margin = D("0.1")
    assert next_tier(ValueTier.B, D(100), THRESHOLDS, margin) is ValueTier.A
    assert next_tier(ValueTier.A, D(91), THRESHOLDS, margin) is ValueTier.A  # inside the band: stays
    assert next_tier(ValueTier.A, D(89), THRESHOLDS, margin) is ValueTier.B
    assert next_tier(ValueTier.A, D(35), THRESHOLDS, margin) is ValueTier.C  # below B's band too
    assert next_tier(ValueTier.A, D(37), THRESHOLDS, margin) is ValueTier.B  # B's own band holds
    assert next_tier(None, D(91), THRESHOLDS, margin) is ValueTier.B  # no history: no benefit of the doubt


def test_value_tier_is_judged_along_event_time_with_hysteresis():
    # Reaches A (120 in the window), then a year later the first order leaves the window and
    # the window holds 95: inside A's band, so the customer stays A…
    history = [occasion(0, "60"), occasion(10, "60"), occasion(300, "95")]
    tier, value = value_tier(history, THRESHOLDS, TIERS, as_of_day=380)
    assert value == D(95) and tier is ValueTier.A
    # …while a customer who never reached A, with the same window today, is B.
    tier, _ = value_tier([occasion(300, "95")], THRESHOLDS, TIERS, as_of_day=380)
    assert tier is ValueTier.B


def test_value_tier_falls_to_d_once_every_purchase_left_the_window():
    tier, value = value_tier([occasion(0, "500")], THRESHOLDS, TIERS, as_of_day=365)
    assert (tier, value) == (ValueTier.D, D(0))
    tier, _ = value_tier([occasion(0, "500")], THRESHOLDS, TIERS, as_of_day=364)
    assert tier is ValueTier.A


def test_value_tier_does_not_depend_on_the_order_occasions_are_listed_in():
    history = [occasion(0, "60"), occasion(10, "60"), occasion(300, "95"), occasion(200, "1")]
    results = {
        value_tier(sorted(p, key=lambda o: o.day), THRESHOLDS, TIERS, 400) for p in itertools.permutations(history)
    }
    assert len(results) == 1


def test_window_exit_day_is_when_the_first_purchase_in_the_window_leaves_it():
    history = [occasion(0, "1"), occasion(100, "1"), occasion(200, "1")]
    assert window_exit_day(history, 365, as_of_day=300) == 365
    assert window_exit_day(history, 365, as_of_day=365) == 465
    assert window_exit_day(history, 365, as_of_day=600) is None


def test_grade_qualifies_by_spend_or_by_purchase_count():
    assert next_grade(None, D(0), 0, GRADES) == "regular"
    assert next_grade(None, D(1000), 1, GRADES) == "silver"
    assert next_grade(None, D(10), 12, GRADES) == "gold"
    assert next_grade(None, D(20000), 1, GRADES) == "vip"


def test_grade_hysteresis_keeps_a_grade_inside_the_margin():
    assert next_grade("gold", D(4600), 3, GRADES) == "gold"  # 4,600 ≥ 5,000 × 0.9
    assert next_grade("gold", D(4400), 11, GRADES) == "gold"  # 11 ≥ 12 × 0.9
    assert next_grade("gold", D(4400), 10, GRADES) == "silver"
    assert next_grade("silver", D(4999), 11, GRADES) == "silver"


def test_membership_grade_over_the_trailing_window():
    history = [occasion(day, "100") for day in range(0, 40, 10)]  # 4 occasions, 400 spent
    grade, spend, count = membership_grade(history, GRADES, as_of_day=40)
    assert (grade, spend, count) == ("silver", D(400), 4)
    grade, spend, count = membership_grade(history, GRADES, as_of_day=400)
    assert (grade, spend, count) == ("regular", D(0), 0)


def test_settings_build_the_same_rules_the_tests_use():
    rules = ScoringSettings().rules()
    assert rules.tiers == TIERS
    assert rules.grades == GRADES


def test_settings_refuse_thresholds_out_of_order():
    with pytest.raises(ValueError, match="TIER_A_SHARE"):
        ScoringSettings(tier_a_share=0.96)
    with pytest.raises(ValueError, match="silver to gold to vip"):
        ScoringSettings(grade_gold_spend=500)
    with pytest.raises(ValueError, match="time zone"):
        ScoringSettings(occasion_timezone="Mars/Olympus")
