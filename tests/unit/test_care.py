"""The post-purchase follow-up rule, through the care-plan engine and the shipped plans."""

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

from services.outreach.care import POST_PURCHASE_FOLLOW_UP, ActivePlan, PlanBook, plan_update
from services.outreach.plans import load_plan_file, with_follow_up_delay
from shared.contracts import Channel, CustomerCause, CustomerSnapshot, CustomerUpdatedPayload

NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
PLANS = load_plan_file(Path(__file__).parents[2] / "services/outreach/care_plans.yaml")


def book(delay=timedelta(days=3)) -> PlanBook:
    follow_up = [p for p in with_follow_up_delay(PLANS.plans, delay) if p.name == POST_PURCHASE_FOLLOW_UP]
    return PlanBook(plans=tuple(ActivePlan(p, 1) for p in follow_up))


def update(occurred_at, *, historical=False, type_="purchase", order_id="o-1", email=None, phone=None):
    return CustomerUpdatedPayload(
        version=1,
        cause=CustomerCause(
            event_id="e",
            type=type_,
            occurred_at=occurred_at,
            historical=historical,
            order_id=order_id,
            amount=Decimal(1),
        ),
        snapshot=CustomerSnapshot(email=email, phone=phone, order_count=1),
    )


def follow_up(payload, delay=timedelta(days=3)):
    planned = plan_update("c-1", payload, book(delay), now=NOW)
    assert len(planned) <= 1
    return planned[0] if planned else None


def test_follow_up_is_due_the_configured_delay_after_the_purchase():
    planned = follow_up(update(NOW, email="a@b.cn"))
    assert planned is not None
    assert planned.plan == POST_PURCHASE_FOLLOW_UP
    assert planned.due_at == NOW + timedelta(days=3)
    assert planned.channel is Channel.EMAIL
    assert planned.idempotency_key == "post_purchase_follow_up:c-1:o-1"


def test_the_delay_setting_overrides_the_shipped_plan():
    planned = follow_up(update(NOW, email="a@b.cn"), delay=timedelta(days=2, hours=6))
    assert planned is not None and planned.due_at == NOW + timedelta(days=2, hours=6)


def test_channel_falls_back_to_sms_then_unknown():
    assert follow_up(update(NOW, phone="+86138")).channel is Channel.SMS
    assert follow_up(update(NOW)).channel is None


def test_historical_purchase_whose_moment_passed_gets_no_touch():
    assert follow_up(update(NOW - timedelta(days=30), historical=True)) is None


def test_recent_historical_purchase_still_gets_its_future_follow_up():
    recent = NOW - timedelta(days=1)
    planned = follow_up(update(recent, historical=True))
    assert planned is not None and planned.due_at == recent + timedelta(days=3)


def test_non_purchase_changes_schedule_nothing():
    assert follow_up(update(NOW, type_="identify", order_id=None)) is None
