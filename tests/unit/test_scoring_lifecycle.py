"""Lifecycle stage against each customer's own purchase rhythm."""

from services.scoring.lifecycle import LifecycleRules, judge_stage, rhythm
from shared.contracts import LifecycleStage

RULES = LifecycleRules(
    default_rhythm_days=30,
    rhythm_prior_weight=2,
    rhythm_min_days=1,
    rhythm_max_days=365,
    at_risk_factor=1.5,
    lapsed_factor=3.0,
)


def test_rhythm_is_the_population_gap_until_the_customer_has_gaps_of_their_own():
    assert rhythm([100], population_gap=20, rules=RULES) == 20
    assert rhythm([100], population_gap=None, rules=RULES) == 30  # no population yet: the default
    # one own gap of 10 against a prior of 40 with weight 2: (10 + 2·40) / 3
    assert rhythm([0, 10], population_gap=40, rules=RULES) == 30
    # many weekly purchases: the customer's own habit dominates
    assert abs(rhythm(list(range(0, 7 * 40, 7)), population_gap=90, rules=RULES) - (39 * 7 + 180) / 41) < 1e-9


def test_rhythm_is_clamped():
    assert rhythm([0, 2000], population_gap=2000, rules=RULES) == 365
    assert rhythm([0, 0], population_gap=0.1, rules=RULES) == 1


def test_the_same_silence_is_fine_for_one_customer_and_a_lapse_for_another():
    weekly = list(range(0, 70, 7))  # rhythm ≈ 7 days
    monthly = list(range(0, 300, 30))  # rhythm ≈ 30 days
    silence = 40
    weekly_stage = judge_stage(weekly, weekly[-1] + silence, population_gap=None, rules=RULES)
    monthly_stage = judge_stage(monthly, monthly[-1] + silence, population_gap=None, rules=RULES)
    assert weekly_stage.stage is LifecycleStage.LAPSED
    assert monthly_stage.stage is LifecycleStage.ACTIVE


def test_stages_in_order_as_the_silence_grows():
    days = [0, 30, 60]  # rhythm 30 (own median 30, prior 30)
    stages = {silence: judge_stage(days, 60 + silence, None, RULES).stage for silence in (0, 45, 46, 90, 91)}
    assert stages == {
        0: LifecycleStage.ACTIVE,
        45: LifecycleStage.ACTIVE,  # 1.5 × 30: not yet beyond
        46: LifecycleStage.AT_RISK,
        90: LifecycleStage.AT_RISK,
        91: LifecycleStage.LAPSED,
    }


def test_next_check_day_is_the_first_day_the_stage_would_change():
    judged = judge_stage([0, 30, 60], 70, None, RULES)
    assert judged.next_check_day == 60 + 45 + 1
    at_risk = judge_stage([0, 30, 60], 110, None, RULES)
    assert at_risk.stage is LifecycleStage.AT_RISK and at_risk.next_check_day == 60 + 90 + 1
    lapsed = judge_stage([0, 30, 60], 200, None, RULES)
    assert lapsed.next_check_day is None  # only a purchase changes a lapse


def test_prospect_new_and_won_back():
    assert judge_stage([], 10, None, RULES).stage is LifecycleStage.PROSPECT
    assert judge_stage([5], 10, None, RULES).stage is LifecycleStage.NEW
    assert judge_stage([5], 60, None, RULES).stage is LifecycleStage.AT_RISK  # new customers can slip too
    won_back = judge_stage([0, 30, 60, 300], 305, None, RULES)
    assert won_back.stage is LifecycleStage.WON_BACK and "240 days" in won_back.reason
    # the next purchase inside the rhythm makes them active again
    assert judge_stage([0, 30, 60, 300, 320], 321, None, RULES).stage is LifecycleStage.ACTIVE
