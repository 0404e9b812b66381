"""The post-purchase follow-up rule."""

from datetime import UTC, datetime, timedelta
from decimal import Decimal

from services.outreach.care import POST_PURCHASE_FOLLOW_UP, plan_follow_up
from shared.contracts import Channel, CustomerCause, CustomerSnapshot, CustomerUpdatedPayload

NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)


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
        snapshot=CustomerSnapshot(email=email, phone=phone),
    )


def test_follow_up_is_due_the_configured_delay_after_the_purchase():
    planned = plan_follow_up("c-1", update(NOW, email="a@b.cn"), now=NOW, delay=timedelta(days=3))
    assert planned is not None
    assert planned.plan == POST_PURCHASE_FOLLOW_UP
    assert planned.due_at == NOW + timedelta(days=3)
    assert planned.channel is Channel.EMAIL
    assert planned.idempotency_key == "post_purchase_follow_up:c-1:o-1"


def test_channel_falls_back_to_sms_then_unknown():
    assert plan_follow_up("c", update(NOW, phone="+86138"), now=NOW, delay=timedelta(days=3)).channel is Channel.SMS
    assert plan_follow_up("c", update(NOW), now=NOW, delay=timedelta(days=3)).channel is None


def test_historical_purchase_whose_moment_passed_gets_no_touch():
    old = NOW - timedelta(days=30)
    assert plan_follow_up("c", update(old, historical=True), now=NOW, delay=timedelta(days=3)) is None


def test_recent_historical_purchase_still_gets_its_future_follow_up():
    recent = NOW - timedelta(days=1)
    planned = plan_follow_up("c", update(recent, historical=True), now=NOW, delay=timedelta(days=3))
    assert planned is not None and planned.due_at == recent + timedelta(days=3)


def test_non_purchase_changes_schedule_nothing():
    assert plan_follow_up("c", update(NOW, type_="identify", order_id=None), now=NOW, delay=timedelta(days=3)) is None
