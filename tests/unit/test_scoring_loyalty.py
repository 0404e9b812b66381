"""Loyalty components, satisfaction levels, the quadrant, Kotler's relationship matrix, prospect grades."""

import pytest

from services.scoring.loyalty import (
    LoyaltyRules,
    behavioural_loyalty,
    emotional_loyalty,
    intentional_loyalty,
    loyalty,
    loyalty_quadrant,
    margin_class,
    prospect_grade,
    relationship_type,
    satisfaction_level,
    size_class,
)

RULES = LoyaltyRules(
    repeat_target=5,
    tenure_target_days=365,
    engagement_half_saturation=10,
    weights=(0.5, 0.25, 0.25),
    loyal_threshold=50,
    satisfied_rating=4,
)


def test_behavioural_loyalty_from_repeats_tenure_and_share_of_wallet():
    assert behavioural_loyalty(0, 0, None, RULES) == 0
    assert behavioural_loyalty(5, 365, None, RULES) == 100
    assert behavioural_loyalty(10, 3000, None, RULES) == 100  # capped at the targets
    assert behavioural_loyalty(5, 0, None, RULES) == 50
    assert behavioural_loyalty(5, 365, 0.25, RULES) == 75  # a small share of wallet lowers it


def test_emotional_loyalty_saturates_and_ignores_service_contacts():
    assert emotional_loyalty({}, 0, RULES) == 0
    assert emotional_loyalty({"visit": 10}, 0, RULES) == 50
    assert emotional_loyalty({"complaint": 50, "support_contact": 50}, 0, RULES) == 0
    assert emotional_loyalty({"email_click": 5}, 5, RULES) > emotional_loyalty({"email_click": 5}, 0, RULES)


def test_intentional_loyalty_prefers_what_the_customer_said():
    assert intentional_loyalty(True, 1.0) == 100
    assert intentional_loyalty(False, 5.0) == 0
    assert intentional_loyalty(None, 5.0) == 100
    assert intentional_loyalty(None, 3.0) == 50
    assert intentional_loyalty(None, None) is None


def test_the_three_loyalties_stay_separate_and_the_index_weighs_the_known_ones():
    result = loyalty(
        repeat_purchases=5,
        tenure_days=365,
        share_of_wallet=None,
        interactions={},
        referrals=0,
        stated_intent=None,
        mean_rating=None,
        rules=RULES,
    )
    assert (result.behavioural, result.emotional, result.intentional) == (100, 0, None)
    assert result.index == pytest.approx(100 * 0.5 / 0.75, abs=0.01)  # intentional unknown: left out
    with_intent = loyalty(
        repeat_purchases=5,
        tenure_days=365,
        share_of_wallet=None,
        interactions={},
        referrals=0,
        stated_intent=False,
        mean_rating=None,
        rules=RULES,
    )
    assert with_intent.index == 50


@pytest.mark.parametrize(
    ("rating", "complaints", "repeats", "referrals", "purchased", "level"),
    [
        (None, 0, 0, 0, False, None),  # a prospect with no feedback: unknown
        (None, 0, 0, 0, True, 0),  # bought once, said nothing: no evidence yet
        (5, 0, 0, 0, True, 1),  # satisfied
        (5, 0, 2, 0, True, 2),  # satisfied and buys again
        (5, 0, 2, 1, True, 3),  # satisfied, buys again and refers friends
        (None, 0, 2, 1, True, 3),  # no rating, but the behaviour says it
        (2, 0, 9, 3, True, 0),  # an unhappy latest rating outweighs the history
        (5, 1, 9, 3, True, 0),  # an open complaint too
        (4, 0, 0, 0, False, 1),  # feedback before buying
    ],
)
def test_satisfaction_levels_are_behavioural(rating, complaints, repeats, referrals, purchased, level):
    found, reason = satisfaction_level(
        latest_rating=rating,
        open_complaints=complaints,
        repeat_purchases=repeats,
        referrals=referrals,
        has_purchased=purchased,
        satisfied_rating=4,
    )
    assert found == level and reason


def test_quadrant():
    assert loyalty_quadrant(2, 80, 50) == "evangelist"
    assert loyalty_quadrant(1, 10, 50) == "profit_seeker"
    assert loyalty_quadrant(0, 80, 50) == "captive"
    assert loyalty_quadrant(0, 10, 50) == "destroyer"
    assert loyalty_quadrant(None, 80, 50) is None


def test_relationship_matrix_corners_and_diagonal():
    assert relationship_type("many", "low") == "basic"
    assert relationship_type("few", "high") == "partnership"
    assert relationship_type("medium", "medium") == "accountable"
    assert relationship_type("many", "high") == "accountable"
    assert relationship_type("few", "low") == "accountable"
    assert relationship_type("medium", "high") == "proactive"
    assert relationship_type("many", "medium") == "reactive"


def test_size_and_margin_classes():
    assert [size_class(n, few=100, many=1000) for n in (50, 100, 500, 1000)] == ["few", "few", "medium", "many"]
    assert [margin_class(v, low_cut=10, high_cut=100) for v in (0, 9, 10, 99, 100)] == [
        "low",
        "low",
        "medium",
        "medium",
        "high",
    ]


def test_prospect_grades():
    def grade(tags=(), consents=(), **interactions):
        return prospect_grade(tags=tags, marketing_consents=consents, interactions=interactions, a_product_views=3)[0]

    assert grade() == "C"
    assert grade(email_open=3) == "C"
    assert grade(product_viewed=1) == "B"
    assert grade(product_viewed=3, support_contact=1) == "A"
    assert grade(product_viewed=9) == "B"  # looking a lot, but no question or click
    assert grade(consents=[False, False], product_viewed=3, support_contact=1) == "D"
    assert grade(consents=[False, True]) == "C"  # declined one channel, not us
    assert grade(tags=["prospect:A"], consents=[False]) == "A"  # staff know intent and means
    assert grade(tags=["Prospect:d"]) == "D"
