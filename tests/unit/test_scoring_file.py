"""The customer file's folds are order-independent, and its scorecard is a pure function of the
file, the population model and the as-of time."""

import dataclasses
import itertools
import json
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from services.scoring.customer_file import (
    CustomerFile,
    PurchaseTotals,
    evolve,
    merge_consent,
    merge_traits,
    note_complaint,
    note_engagement,
    note_order,
    preferred_category,
)
from services.scoring.population import BgNbdSummary, GammaGammaSummary, PopulationModel
from services.scoring.purchases import Occasion, day_start, local_day
from services.scoring.rfm import RfmCuts
from services.scoring.scorecard import FileFacts, changes, score
from services.scoring.settings import ScoringSettings
from services.scoring.tiers import TierThresholds
from shared.contracts import (
    ChurnBand,
    ConsentPayload,
    InteractionKind,
    InteractionPayload,
    LifecycleStage,
    LineItem,
    PurchasePayload,
    Purpose,
    Traits,
    ValueTier,
)

T0 = datetime(2026, 3, 1, 9, 30, tzinfo=UTC)
RULES = ScoringSettings().rules()
MODEL = PopulationModel(
    fitted_at=T0,
    as_of=T0,
    as_of_day=local_day(T0, UTC),
    trigger="test",
    time_unit_days=7.0,
    n_customers=2357,
    n_repeaters=1000,
    population_size=2357,
    bgnbd=BgNbdSummary(0.243, 4.414, 0.793, 2.426, -9582.4, True),
    gamma_gamma=GammaGammaSummary(6.25, 3.74, 15.44, -4055.9, 946, True),
    rfm_cuts=RfmCuts((10, 60, 120, 240), (1, 1, 2, 3), (15, 30, 50, 100)),
    tier_thresholds=TierThresholds(Decimal(100), Decimal(20)),
    margin_cuts=(20.0, 100.0),
    typical_gap_days=30.0,
    id=7,
)


def interaction(kind, **fields) -> InteractionPayload:
    return InteractionPayload(kind=kind, **fields)


def test_engagement_and_complaints_fold_the_same_in_any_order():
    events = [
        (interaction(InteractionKind.FEEDBACK, rating=2), T0),
        (interaction(InteractionKind.FEEDBACK, rating=5), T0 + timedelta(days=1)),
        (interaction(InteractionKind.FEEDBACK, rating=3), T0 + timedelta(days=1)),  # same instant: the lower wins
        (interaction(InteractionKind.COMPLAINT_RESOLVED, complaint_id="k-1"), T0 + timedelta(days=3)),
        (interaction(InteractionKind.COMPLAINT, complaint_id="k-1", text="late delivery"), T0 + timedelta(days=2)),
        (interaction(InteractionKind.COMPLAINT, complaint_id="k-2"), T0 + timedelta(days=4)),
        (interaction(InteractionKind.VISIT, properties={"would_buy_again": True}), T0 + timedelta(days=5)),
    ]
    results = set()
    for permutation in itertools.permutations(events):
        engagement: dict = {}
        complaints: dict = {}
        for payload, at in permutation:
            engagement = note_engagement(engagement, payload, at)
            complaints = note_complaint(complaints, payload, at, "e-x")
        results.add(json.dumps([engagement, complaints], sort_keys=True))  # as stored: JSON, key order aside
    assert len(results) == 1
    file = CustomerFile("c-1", engagement=engagement, complaints=complaints)
    assert engagement["last_rating"]["value"] == 3 and engagement["rating_count"] == 3
    assert engagement["stated_intent"]["value"] is True
    assert file.open_complaints == 1 and complaints["k-1"]["text"] == "late delivery"


def test_ties_in_event_time_are_broken_by_value_not_by_arrival():
    first = merge_traits(merge_traits({}, Traits(email="a@x.cn"), T0), Traits(email="b@x.cn"), T0)
    second = merge_traits(merge_traits({}, Traits(email="b@x.cn"), T0), Traits(email="a@x.cn"), T0)
    assert first == second
    granted = ConsentPayload(channel="email", purpose=Purpose.MARKETING, granted=True)
    withdrawn = ConsentPayload(channel="email", purpose=Purpose.MARKETING, granted=False)
    one = merge_consent(merge_consent({}, granted, T0), withdrawn, T0)
    other = merge_consent(merge_consent({}, withdrawn, T0), granted, T0)
    assert one == other and one["email:marketing"]["value"] is False  # a withdrawal wins a tie


def test_latest_order_and_preferred_category():
    tea = PurchasePayload(
        order_id="o-1", amount=Decimal(30), items=[LineItem(name="Oolong", category="tea", quantity=3)]
    )
    cups = PurchasePayload(order_id="o-2", amount=Decimal(50), items=[LineItem(name="Cup", category="ware")])
    results = set()
    for first, second in ((tea, cups), (cups, tea)):
        categories, last = note_order({}, None, first, T0 + timedelta(days=1 if first is cups else 0))
        categories, last = note_order(categories, last, second, T0 + timedelta(days=1 if second is cups else 0))
        results.add(json.dumps([categories, last], sort_keys=True))
        assert last is not None and last["order_id"] == "o-2" and last["items"] == ["Cup"]
        assert preferred_category(categories) == "tea"
    assert len(results) == 1


def purchases(*days: int, amount: str = "40") -> tuple[Occasion, ...]:
    start = local_day(T0, UTC)
    return tuple(Occasion(start + d, Decimal(amount), Decimal(amount), 1) for d in days)


def test_a_prospect_gets_a_stage_and_a_pipeline_grade_but_no_purchase_scores():
    card = score(FileFacts(interactions={"product_viewed": 1}), MODEL, T0, RULES)
    assert card.stage is LifecycleStage.PROSPECT and card.prospect_grade == "B"
    assert card.value_tier is None and card.churn_band is None and card.grade is None
    assert card.next_check_at is None  # nothing changes with time alone


def test_without_a_model_the_rhythm_rules_still_work():
    rules = ScoringSettings(max_score_age=timedelta(days=365)).rules()
    card = score(FileFacts(occasions=purchases(0)), None, T0, rules)
    assert card.stage is LifecycleStage.NEW and card.grade == "regular"
    assert card.value_tier is None and card.p_alive is None and card.rfm is None
    # new, with the default rhythm of 30 days: at risk from day 46
    assert card.next_check_at == day_start(local_day(T0, UTC) + 46, UTC)
    # and nobody goes unchecked longer than max_score_age (30 days by default)
    assert score(FileFacts(occasions=purchases(0)), None, T0, RULES).next_check_at == day_start(
        local_day(T0, UTC) + 30, UTC
    )


def test_full_scorecard_with_a_model():
    facts = FileFacts(occasions=purchases(0, 20, 40, amount="60"), latest_rating=5, mean_rating=5.0, referrals=1)
    card = score(facts, MODEL, T0 + timedelta(days=40), RULES)
    assert card.value_tier is ValueTier.A and card.computed_tier is ValueTier.A  # 180 ≥ 100
    assert card.stage is LifecycleStage.ACTIVE and card.occasion_count == 3
    assert card.satisfaction_level == 3 and card.loyalty_quadrant in {"evangelist", "profit_seeker"}
    assert card.churn_band in set(ChurnBand) and 0 < card.p_alive <= 1
    assert card.clv_365 is not None and card.clv_365 > 0
    assert card.expected_next_order_at is not None and card.expected_next_order_at > card.as_of
    assert card.relationship_type == "accountable"  # many customers × high margin
    assert card.rfm == (5, 4, 5)
    assert card.next_check_at is not None and card.next_check_at > card.as_of
    assert score(facts, MODEL, T0 + timedelta(days=40), RULES) == card  # pure


def test_an_operator_override_replaces_the_tier_but_keeps_the_computed_one():
    facts = FileFacts(
        occasions=purchases(0, amount="5"), tier_override=ValueTier.A, tier_override_reason="refers friends"
    )
    card = score(facts, MODEL, T0, RULES)
    assert card.value_tier is ValueTier.A and card.computed_tier is ValueTier.C
    assert "refers friends" in card.reasons["value_tier"]


def test_changes_name_the_snapshot_fields_with_their_reasons():
    before = score(FileFacts(occasions=purchases(0, 20, 40)), MODEL, T0 + timedelta(days=40), RULES)
    after = score(FileFacts(occasions=purchases(0, 20, 40)), MODEL, T0 + timedelta(days=120), RULES)
    found = {c.field: c for c in changes(before.tracked(), after)}
    assert found["stage"].before == "active" and found["stage"].after == "lapsed"
    assert "rhythm" in found["stage"].reason
    assert "value_tier" not in found or found["value_tier"].reason
    assert changes(after.tracked(), after) == []
    first = changes({}, before)
    assert {c.field for c in first} >= {"stage", "value_tier", "grade", "churn_band"}


def test_the_snapshot_carries_scores_and_purchase_details():
    card = score(FileFacts(occasions=purchases(0)), MODEL, T0, RULES)
    categories, last = note_order(
        {}, None, PurchasePayload(order_id="o-1", amount=Decimal(40), items=[LineItem(name="Tea", category="tea")]), T0
    )
    file = replace(
        CustomerFile("c-1", tags=("vip-event",)), scores=card, categories=categories, last_order=last, referred_by="c-0"
    )
    snapshot = file.snapshot()
    assert snapshot.stage is LifecycleStage.NEW and snapshot.value_tier is card.value_tier
    assert snapshot.last_order_id == "o-1" and snapshot.last_order_items == ["Tea"]
    assert snapshot.preferred_category == "tea" and snapshot.referred_by == "c-0"
    assert snapshot.tags == ["vip-event"] and snapshot.scores["model_id"] == 7


def test_evolve_is_dataclasses_replace_for_every_field() -> None:
    file = CustomerFile(
        "c1",
        version=3,
        profile={"name": {"value": "Li", "at": "2026-01-01T00:00:00+00:00"}},
        totals=PurchaseTotals(order_count=2, revenue=Decimal("10.5"), first_purchase_at=T0),
        tags=("vip",),
        referred_by="c0",
    )
    for kind in (CustomerFile, PurchaseTotals):
        # What evolve relies on: __init__ only assigns the fields.
        assert not hasattr(kind, "__post_init__")
        assert all(f.init for f in dataclasses.fields(kind))
    other = CustomerFile("c2", version=9, tier_override=ValueTier.A, last_event_at=T0, referred_by="c9")
    for f in dataclasses.fields(CustomerFile):
        if f.name == "customer_id":
            continue
        changed = {f.name: getattr(other, f.name)}
        got, expected = evolve(file, **changed), replace(file, **changed)
        assert got == expected and vars(got) == vars(expected), f.name
        assert got.referred_by == expected.referred_by  # not compared by ==
    assert vars(evolve(file.totals, margin=Decimal(1))) == vars(replace(file.totals, margin=Decimal(1)))
    assert evolve(file) == file and evolve(file) is not file
    assert vars(file)["version"] == 3  # the original is untouched


def test_evolve_refuses_a_field_the_file_does_not_have() -> None:
    with pytest.raises(TypeError, match="no field 'verison'"):
        evolve(CustomerFile("c1"), verison=2)
