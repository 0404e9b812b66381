"""Folding events into the customer file is order-independent and exact."""

import itertools
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from services.scoring.customer_file import (
    CustomerFile,
    PurchaseTotals,
    add_purchase,
    add_refund,
    merge_consent,
    merge_traits,
)
from shared.contracts import ConsentPayload, Purpose, Traits

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def test_purchases_in_any_order_give_the_same_totals():
    orders = [(Decimal("10.10"), T0 + timedelta(days=3)), (Decimal("5"), T0), (Decimal("0.01"), T0 + timedelta(days=9))]
    results = set()
    for permutation in itertools.permutations(orders):
        totals = PurchaseTotals()
        for amount, at in permutation:
            totals = add_purchase(totals, amount, at)
        results.add(totals)
    assert len(results) == 1
    (totals,) = results
    assert totals.order_count == 3
    assert totals.revenue == Decimal("15.11")
    assert totals.first_purchase_at == T0
    assert totals.last_purchase_at == T0 + timedelta(days=9)
    assert totals.average_order_value == Decimal("5.04")


def test_refunds_reduce_net_revenue_but_not_gross():
    totals = add_refund(add_purchase(PurchaseTotals(), Decimal("100"), T0), Decimal("30"))
    assert totals.revenue == Decimal("100") and totals.net_revenue == Decimal("70")


def test_latest_trait_wins_whatever_the_arrival_order():
    early, late = T0, T0 + timedelta(hours=1)
    in_order = merge_traits(merge_traits({}, Traits(email="old@x.cn"), early), Traits(email="new@x.cn"), late)
    reversed_ = merge_traits(merge_traits({}, Traits(email="new@x.cn"), late), Traits(email="old@x.cn"), early)
    assert in_order == reversed_
    assert in_order["email"]["value"] == "new@x.cn"


def test_absent_traits_leave_the_file_alone():
    profile = merge_traits({}, Traits(name="王芳", locale="zh-CN"), T0)
    profile = merge_traits(profile, Traits(phone="+8613800000000"), T0 + timedelta(days=1))
    assert profile["name"]["value"] == "王芳" and profile["phone"]["value"] == "+8613800000000"


def test_consent_for_all_channels_and_latest_decision_wins():
    consents = merge_consent({}, ConsentPayload(channel="all", purpose=Purpose.MARKETING, granted=True), T0)
    assert {k for k, v in consents.items() if v["value"]} == {
        "email:marketing",
        "sms:marketing",
        "push:marketing",
        "webhook:marketing",
    }
    older = merge_consent(
        consents, ConsentPayload(channel="email", purpose=Purpose.MARKETING, granted=False), T0 - timedelta(days=1)
    )
    assert older["email:marketing"]["value"] is True


def test_snapshot_carries_contacts_and_totals():
    file = CustomerFile(
        "c-1",
        profile=merge_traits({}, Traits(first_name="Fang", last_name="Wang", email="f@x.cn"), T0),
        totals=add_purchase(PurchaseTotals(), Decimal("8"), T0),
    )
    snapshot = file.snapshot()
    assert snapshot.name == "Fang Wang" and snapshot.email == "f@x.cn"
    assert snapshot.order_count == 1 and snapshot.revenue == Decimal("8")
