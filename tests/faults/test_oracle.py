"""The fault suite's judge can fail: every kind of damage a fault could do is reported."""

from __future__ import annotations

import copy
from collections import Counter
from typing import Any

import pytest

from tests.faults.workload import Outcome, build_workload, differences

pytestmark = pytest.mark.faults


def touch(customer: str, plan: str, status: str = "sent", channel: str = "email") -> dict[str, Any]:
    return {"customer_id": customer, "plan": plan, "status": status, "channel": channel, "reason": None}


def reference() -> Outcome:
    touches: dict[str, dict[str, Any]] = {
        "t1": touch("c1", "welcome"),
        "t2": touch("c1", "post_purchase_follow_up"),
        "t3": touch("c2", "complaint_recovery", channel="sms"),
        "t4": touch("c2", "tier_upgrade_thanks"),
        "t5": touch("c3", "welcome", status="suppressed", channel=""),
    }
    return Outcome(
        files={"c1": (2, "30"), "c2": (1, "12.5"), "c3": (0, "0")},
        touches=touches,
        mail=Counter({"t1": 1, "t2": 1, "t4": 1}),
        hooks=Counter({"t3": 1}),
    )


def damaged(change: str) -> Outcome:
    o = copy.deepcopy(reference())
    if change == "order counted twice":
        o.files["c1"] = (3, "45")
    elif change == "file lost":
        del o.files["c3"]
    elif change == "touch lost":
        del o.touches["t2"]
        del o.mail["t2"]
    elif change == "touch stuck":
        o.touches["t2"]["status"] = "scheduled"
        del o.mail["t2"]
    elif change == "email sent twice":
        o.mail["t1"] = 2
    elif change == "webhook delivered twice":
        o.hooks["t3"] = 2
    elif change == "sent but never delivered":
        del o.mail["t4"]
    elif change == "delivered but not recorded as sent":
        o.mail["t5"] = 1
    return o


def test_the_reference_against_itself_is_clean() -> None:
    assert differences(reference(), reference()) == []
    # An unconfirmed send may lack its delivery (outreach's at-most-once window), and only that.
    unconfirmed = copy.deepcopy(reference())
    unconfirmed.touches["t4"]["reason"] = "unconfirmed: no reply to the end of DATA"
    del unconfirmed.mail["t4"]
    assert differences(reference(), unconfirmed) == []


@pytest.mark.parametrize(
    "change",
    [
        "order counted twice",
        "file lost",
        "touch lost",
        "touch stuck",
        "email sent twice",
        "webhook delivered twice",
        "sent but never delivered",
        "delivered but not recorded as sent",
    ],
)
def test_every_kind_of_damage_is_reported(change: str) -> None:
    assert differences(reference(), damaged(change)) != []


def test_the_workload_is_deterministic() -> None:
    first, second = build_workload(seed=3, customers=10), build_workload(seed=3, customers=10)
    strip = [{k: v for k, v in e.items() if k != "occurred_at"} for e in first.phase_a + first.phase_b]
    assert strip == [{k: v for k, v in e.items() if k != "occurred_at"} for e in second.phase_a + second.phase_b]
    assert build_workload(seed=4, customers=10).phase_b != first.phase_b
