"""The shipped care plans and templates, and the engine's event and change triggers."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest

from services.outreach.calendar import load_holidays
from services.outreach.care import (
    ActivePlan,
    PlanBook,
    audience_matches,
    decide_offer,
    plan_calendar,
    plan_intake,
    plan_update,
    sample_facts,
)
from services.outreach.plans import AudienceFilter, PlanError, load_plan_file, parse_plan
from services.outreach.render import build_context, check_syntax, load_template_file, render
from shared.contracts import (
    CommunicationStyle,
    CustomerCause,
    CustomerSnapshot,
    CustomerUpdatedPayload,
    FieldChange,
    InteractionEvent,
    InteractionKind,
    InteractionPayload,
    Purpose,
)

HERE = Path(__file__).parents[2] / "services/outreach"
PLANS = load_plan_file(HERE / "care_plans.yaml")
TEMPLATES = {t.name: t for t in load_template_file(HERE / "templates.yaml")}
HOLIDAYS = load_holidays(HERE / "holidays.yaml")
BOOK = PlanBook(
    plans=tuple(ActivePlan(p, 1) for p in PLANS.plans),
    grade_order=tuple(PLANS.grade_order),
    tier_benefits={t.value: v for t, v in PLANS.tier_benefits.items()},
    holidays=HOLIDAYS,
)
NOW = datetime(2026, 11, 23, 4, 0, tzinfo=UTC)


def snapshot(**fields) -> CustomerSnapshot:
    base = {"email": "li@example.cn", "first_name": "Li", "locale": "zh-CN", "timezone": "Asia/Shanghai"}
    return CustomerSnapshot(**{**base, **fields})


def updated(cause_type="purchase", *, changes=(), order_id="o-1", snap=None, kind=None, occurred=NOW, historical=False):
    return CustomerUpdatedPayload(
        version=2,
        cause=CustomerCause(
            event_id="ev-1",
            type=cause_type,
            occurred_at=occurred,
            historical=historical,
            order_id=order_id if cause_type == "purchase" else None,
            amount=Decimal("88.80") if cause_type == "purchase" else None,
            interaction_kind=kind,
        ),
        snapshot=snap or snapshot(order_count=2),
        changes=list(changes),
    )


def plans_of(touches) -> set[str]:
    return {t.plan for t in touches}


def test_every_touch_of_the_domain_brief_ships_as_a_plan_with_templates_in_both_locales():
    names = {p.name for p in PLANS.plans}
    assert {
        "welcome",
        "post_purchase_follow_up",
        "birthday",
        "regular_care_monthly",
        "regular_care_quarterly",
        "prospect_care",
        "tier_upgrade_thanks",
        "tier_at_risk",
        "replenishment",
        "complaint_recovery",
        "win_back",
        "holiday_greetings",
        "loyalty_notice",
        "referral_thanks",
    } <= names
    for plan in PLANS.plans:
        assert plan.template in TEMPLATES, plan.name
        assert {"zh-CN", "en"} <= set(TEMPLATES[plan.template].locales), plan.name
        for name in plan.trigger.calendar.holidays if plan.trigger.calendar else []:
            assert name in HOLIDAYS
    assert all(not check_syntax(t) for t in TEMPLATES.values())
    recovery = next(p for p in PLANS.plans if p.name == "complaint_recovery")
    assert recovery.purpose is Purpose.TRANSACTIONAL and recovery.opens_task is not None


@pytest.mark.parametrize("plan", PLANS.plans, ids=lambda p: p.name)
@pytest.mark.parametrize("locale", ["zh-CN", "en"])
@pytest.mark.parametrize("style", [None, *CommunicationStyle])
def test_every_shipped_template_renders_in_every_locale_and_tone(plan, locale, style):
    snap = snapshot(
        locale=locale,
        communication_style=style,
        value_tier="A",
        grade="gold",
        order_count=3,
        last_order_id="o-9",
        last_order_amount=Decimal("59"),
        last_order_items=["oolong 250g"],
        last_purchase_at=NOW,
        preferred_category="tea",
    )
    terms = plan.offer.by_tier.get(snap.value_tier) if plan.offer else None
    context = build_context(
        customer_id="c-1",
        snapshot=snap,
        locale=locale,
        plan=plan.name,
        channel=plan.channels[0],
        facts=sample_facts(plan, snap, HOLIDAYS, locale),
        offer=terms,
        tier_benefits=BOOK.tier_benefits,
        unsubscribe_url="https://x/u" if plan.purpose is Purpose.MARKETING else None,
    )
    rendered = render(
        TEMPLATES[plan.template], context, locale=locale, default_locale="zh-CN", tone=style.value if style else None
    )
    assert rendered.locale == locale and rendered.subject and rendered.body
    assert "None" not in rendered.subject + rendered.body
    if plan.purpose is Purpose.MARKETING:
        assert "https://x/u" in rendered.body


def test_engine_facts_render_the_templates_they_trigger():
    """Facts from real triggers (not the preview's samples) satisfy the strict templates."""
    snap = snapshot(order_count=1, value_tier="B", referred_by="ref-1", grade="silver")
    changes = [
        FieldChange(field="value_tier", before="C", after="B", reason="rank"),
        FieldChange(field="grade", before="regular", after="silver", reason="spend"),
    ]
    touches = plan_update("c-1", updated(snap=snap, changes=changes), BOOK, now=NOW, referrer=snapshot())
    assert {
        "welcome",
        "post_purchase_follow_up",
        "tier_upgrade_thanks",
        "loyalty_notice",
        "referral_thanks",
    } <= plans_of(touches)
    for touch in touches:
        plan = BOOK.get(touch.plan).plan
        context = build_context(
            customer_id=touch.customer_id,
            snapshot=snap,
            locale="en",
            plan=touch.plan,
            channel=touch.channel,
            facts=touch.context,
            offer=touch.offer,
            tier_benefits=BOOK.tier_benefits,
            unsubscribe_url="u",
        )
        assert render(TEMPLATES[plan.template], context, locale="en", default_locale="zh-CN", tone=None).body


def test_welcome_only_for_the_first_purchase_and_referral_thanks_go_to_the_referrer():
    first = plan_update("c-1", updated(snap=snapshot(order_count=1, referred_by="ref-9")), BOOK, now=NOW)
    assert {"welcome", "referral_thanks"} <= plans_of(first)
    thanks = next(t for t in first if t.plan == "referral_thanks")
    assert thanks.customer_id == "ref-9" and thanks.context["referred_customer_id"] == "c-1"
    welcome = next(t for t in first if t.plan == "welcome")
    assert welcome.idempotency_key == "welcome:c-1:once" and welcome.purpose is Purpose.TRANSACTIONAL
    second = plan_update("c-1", updated(snap=snapshot(order_count=2, referred_by="ref-9")), BOOK, now=NOW)
    assert plans_of(second) == {"post_purchase_follow_up"}


def test_tier_up_and_down_trigger_different_plans():
    up = plan_update(
        "c",
        updated("clock", changes=[FieldChange(field="value_tier", before="C", after="A", reason="x")]),
        BOOK,
        now=NOW,
    )
    assert "tier_upgrade_thanks" in plans_of(up)
    down = plan_update(
        "c",
        updated("clock", changes=[FieldChange(field="value_tier", before="A", after="C", reason="x")]),
        BOOK,
        now=NOW,
    )
    assert "tier_upgrade_thanks" not in plans_of(down)


def test_tier_at_risk_only_for_valuable_customers():
    rising = [FieldChange(field="churn_band", before="low", after="high", reason="p_alive fell")]
    valuable = plan_update("c", updated("clock", changes=rising, snap=snapshot(value_tier="A")), BOOK, now=NOW)
    assert "tier_at_risk" in plans_of(valuable)
    ordinary = plan_update("c", updated("clock", changes=rising, snap=snapshot(value_tier="D")), BOOK, now=NOW)
    assert "tier_at_risk" not in plans_of(ordinary)


def test_win_back_is_sincere_by_default_and_offers_only_to_the_top_tier():
    lapsed = [FieldChange(field="stage", before="at_risk", after="lapsed", reason="recency")]
    top = next(
        t
        for t in plan_update("c", updated("clock", changes=lapsed, snap=snapshot(value_tier="A")), BOOK, now=NOW)
        if t.plan == "win_back"
    )
    assert top.offer is not None and top.offer.code == "BACK-A"
    middle = next(
        t
        for t in plan_update("c", updated("clock", changes=lapsed, snap=snapshot(value_tier="B")), BOOK, now=NOW)
        if t.plan == "win_back"
    )
    assert middle.offer is None


def test_offer_budget_and_approval():
    plan = BOOK.get("win_back").plan
    terms = plan.offer.by_tier["A"]
    assert decide_offer(plan, terms, spent_this_period=Decimal(0)).terms == terms
    exhausted = decide_offer(plan, terms, spent_this_period=Decimal("9990"))
    assert exhausted.terms is None and "budget" in exhausted.note
    costly = plan.model_copy(update={"offer": plan.offer.model_copy(update={"approval_above": Decimal(10)})})
    assert decide_offer(costly, terms, spent_this_period=Decimal(0)).needs_approval


def test_complaint_recovery_fires_from_intake_on_complaints_and_low_ratings_only():
    def interaction(kind, rating=None):
        return InteractionEvent(
            event_id=f"i-{kind}-{rating}",
            customer_id="c-1",
            occurred_at=NOW,
            payload=InteractionPayload(
                kind=kind, rating=rating, complaint_id="K-1" if kind == "complaint" else None, text="cold tea"
            ),
        )

    complaint = plan_intake(interaction(InteractionKind.COMPLAINT), snapshot(), BOOK, now=NOW)
    assert plans_of(complaint) == {"complaint_recovery"}
    assert complaint[0].idempotency_key == "complaint_recovery:c-1:i-complaint-None"
    assert complaint[0].due_at == NOW and complaint[0].opens_task is not None
    assert plans_of(plan_intake(interaction(InteractionKind.FEEDBACK, 2), snapshot(), BOOK, now=NOW))
    assert not plan_intake(interaction(InteractionKind.FEEDBACK, 4), snapshot(), BOOK, now=NOW)
    # The same complaint seen later through customer.updated keys the same touch.
    later = plan_update("c-1", updated("interaction", kind=InteractionKind.COMPLAINT), BOOK, now=NOW)
    assert [t.idempotency_key for t in later if t.plan == "complaint_recovery"] == ["complaint_recovery:c-1:ev-1"]


def test_historical_causes_never_trigger_a_passed_moment():
    old = NOW - timedelta(days=40)
    changes = [FieldChange(field="stage", before="at_risk", after="lapsed", reason="r")]
    assert not plan_update(
        "c",
        updated("clock", changes=changes, occurred=old, historical=True, snap=snapshot(value_tier="A")),
        BOOK,
        now=NOW,
    )


def test_audience_null_matches_unknown_and_any_of_alternatives():
    audience = AudienceFilter(stages=["active", None])
    assert audience_matches(audience, snapshot())
    assert not audience_matches(audience, snapshot(stage="lapsed"))
    either = AudienceFilter(any_of=[AudienceFilter(tiers=["A"]), AudienceFilter(relationship_types=["partnership"])])
    assert audience_matches(either, snapshot(value_tier="A"))
    assert audience_matches(either, snapshot(relationship_type="partnership"))
    assert not audience_matches(either, snapshot(value_tier="B"))


def test_invalid_plans_are_refused_with_lines_that_say_what_to_fix():
    with pytest.raises(PlanError) as error:
        parse_plan(
            {
                "name": "Bad Name",
                "trigger": {"event": {"types": ["purchase"]}, "change": {"field": "stage"}},
                "channels": [],
                "template": "x",
                "purpose": "marketing",
            }
        )
    text = "; ".join(error.value.problems)
    assert "name" in text and "channels" in text and "exactly one of event, change or calendar" in text
    with pytest.raises(PlanError) as unknown:
        parse_plan(
            {
                "name": "ok",
                "trigger": {"change": {"field": "shoe_size"}},
                "channels": ["email"],
                "template": "x",
                "purpose": "marketing",
            }
        )
    assert "change trigger field must be one of" in str(unknown.value)


def test_calendar_plans_found_through_the_engine():
    snap = snapshot(birthday="1990-11-24", value_tier="A")
    planned = plan_calendar("c-1", snap, BOOK, now=NOW, horizon=timedelta(days=2))
    birthday = next(t for t in planned if t.plan == "birthday")
    assert birthday.idempotency_key == "birthday:c-1:2026"
    assert birthday.due_at == datetime(2026, 11, 24, 2, 0, tzinfo=UTC)  # 10:00 in Shanghai
    assert birthday.offer is not None and birthday.offer.code == "BDAY-A"
