"""Segment's spec mapped onto Huitou's contracts: pure rules, no broker, no clock."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from services.ingest.intake import MappingError, validate
from services.ingest.segment import (
    SegmentContext,
    birthday_date,
    map_batch,
    map_message,
    message_id,
    normalise_event_name,
    normalise_locale,
    occurred_at_of,
)
from shared.contracts import AliasEvent, IdentifyEvent, InteractionEvent, PurchaseEvent, RefundEvent

RECEIVED = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)
CONTEXT = SegmentContext(received_at=RECEIVED)


def track(event: str, properties: dict | None = None, **extra: object) -> dict:
    return {
        "type": "track",
        "userId": "c-1",
        "messageId": "m-1",
        "event": event,
        "properties": properties or {},
        **extra,
    }


def one(message: dict, context: SegmentContext = CONTEXT) -> dict:
    (candidate,) = map_message(message, 0, context)
    return candidate.data


def parsed(message: dict, context: SegmentContext = CONTEXT):
    candidates = map_message(message, 0, context)
    verdicts = validate(candidates, source="shop", received_at=RECEIVED)
    assert not verdicts.rejected, verdicts.rejected
    return verdicts.valid


def problems(message: dict) -> str:
    with pytest.raises(MappingError) as caught:
        map_message(message, 0, CONTEXT)
    return "; ".join(caught.value.problems)


def test_order_completed_is_a_purchase_with_items_and_currency() -> None:
    (event,) = parsed(
        track(
            "Order Completed",
            {
                "order_id": "A-1",
                "total": 129.9,
                "revenue": 100,
                "currency": "usd",
                "products": [{"product_id": 42, "name": "Oolong", "category": "tea", "quantity": 2, "price": 64.95}],
            },
        )
    )
    assert isinstance(event, PurchaseEvent)
    assert str(event.payload.amount) == "129.9" and event.payload.currency == "USD"
    (item,) = event.payload.items
    assert (item.sku, item.name, item.category, item.quantity, str(item.price)) == ("42", "Oolong", "tea", 2, "64.95")


def test_purchase_amount_falls_back_to_revenue_then_products() -> None:
    assert one(track("Order Completed", {"order_id": "A", "revenue": "80"}))["payload"]["amount"] == "80"
    products = [{"price": "10.50", "quantity": 2}, {"price": 3}]
    assert one(track("Order Completed", {"order_id": "A", "products": products}))["payload"]["amount"] == "24.00"
    assert "properties.total: required for Order Completed" in problems(track("Order Completed", {"order_id": "A"}))
    assert "properties.order_id: required" in problems(track("Order Completed", {"total": 1}))


def test_currency_defaults_to_the_configured_one() -> None:
    context = SegmentContext(received_at=RECEIVED, default_currency="USD")
    assert one(track("Order Completed", {"order_id": "A", "total": 1}), context)["payload"]["currency"] == "USD"
    assert one(track("Order Completed", {"order_id": "A", "total": 1}))["payload"]["currency"] == "CNY"


def test_order_refunded_is_a_refund_with_reason() -> None:
    (event,) = parsed(track("Order Refunded", {"order_id": "A-1", "total": 20, "reason": "broken lid"}))
    assert isinstance(event, RefundEvent) and event.payload.reason == "broken lid"


def test_event_names_match_in_any_spelling() -> None:
    assert normalise_event_name("order_completed") == normalise_event_name(" Order  Completed ") == "order completed"
    assert one(track("product-viewed", {"sku": "x"}))["payload"]["kind"] == "product_viewed"


def test_unknown_track_events_are_kept_as_other_interactions() -> None:
    (event,) = parsed(track("Gift Card Sent", {"to": "mum", "value": 100}))
    assert isinstance(event, InteractionEvent)
    assert (event.payload.kind, event.payload.name) == ("other", "Gift Card Sent")
    assert event.payload.properties == {"to": "mum", "value": 100}


@pytest.mark.parametrize(
    ("name", "properties", "expected"),
    [
        ("Unsubscribed", {}, {"channel": "email", "purpose": "marketing", "granted": False}),
        ("Subscribed", {"channel": "sms"}, {"channel": "sms", "purpose": "marketing", "granted": True}),
        ("Email Marked as Spam", {}, {"channel": "email", "purpose": "marketing", "granted": False}),
        (
            "Consent Updated",
            {"granted": True, "purpose": "transactional"},
            {"channel": "all", "purpose": "transactional", "granted": True},
        ),
    ],
)
def test_consent_events(name: str, properties: dict, expected: dict) -> None:
    data = one(track(name, properties))
    assert data["type"] == "consent" and data["payload"] == expected
    parsed(track(name, properties))


def test_consent_updated_needs_granted() -> None:
    assert "properties.granted" in problems(track("Consent Updated", {"channel": "email"}))


@pytest.mark.parametrize(
    ("name", "properties", "kind", "field", "value"),
    [
        ("Feedback Submitted", {"rating": 4, "comment": "lovely"}, "feedback", "rating", 4),
        ("Product Reviewed", {"rating": 1, "review_body": "stale"}, "feedback", "text", "stale"),
        ("Complaint Submitted", {"ticket_id": 77, "churn_reason": "price"}, "complaint", "complaint_id", "77"),
        ("Complaint Resolved", {"complaint_id": "cp-1"}, "complaint_resolved", "complaint_id", "cp-1"),
        ("Referral Completed", {"referred_user_id": "c-9"}, "referral", "referred_customer_id", "c-9"),
        ("Email Link Clicked", {"touch_id": "t-1"}, "email_click", "touch_id", "t-1"),
        ("Support Ticket Created", {}, "support_contact", "kind", "support_contact"),
        ("Store Visited", {"store": "Jing'an"}, "visit", "kind", "visit"),
    ],
)
def test_service_events_map_to_interaction_kinds(
    name: str, properties: dict, kind: str, field: str, value: object
) -> None:
    (event,) = parsed(track(name, properties))
    assert event.payload.kind == kind and getattr(event.payload, field) == value


def test_feedback_without_rating_is_rejected_by_the_contract_with_the_segment_field() -> None:
    verdicts = validate(map_message(track("Feedback Submitted", {}), 0, CONTEXT), source="s", received_at=RECEIVED)
    (rejection,) = verdicts.rejected
    assert rejection.problems == [
        "as Huitou interaction: properties: a feedback interaction needs a rating from 1 to 5"
    ]


def test_identify_maps_reserved_traits_and_keeps_the_rest() -> None:
    message = {
        "type": "identify",
        "userId": "c-1",
        "messageId": "m-1",
        "traits": {
            "firstName": "Wei",
            "lastName": "Li",
            "email": "WEI@EXAMPLE.COM",
            "phone": 8613800000000,
            "birthday": "1990-05-16T16:00:00.000Z",
            "address": {"city": "Shanghai", "postalCode": 200040},
            "createdAt": "2024-01-02T03:04:05",
            "plan": "gold",
        },
        "context": {"timezone": "Asia/Shanghai", "locale": "zh_CN"},
    }
    (event,) = parsed(message)
    assert isinstance(event, IdentifyEvent)
    traits = event.payload.traits
    assert (traits.first_name, traits.last_name, traits.email, traits.phone) == (
        "Wei",
        "Li",
        "wei@example.com",
        "8613800000000",
    )
    assert traits.birthday.isoformat() == "1990-05-17"  # midnight in Shanghai, not the day before
    assert (traits.timezone, traits.locale) == ("Asia/Shanghai", "zh-CN")
    assert traits.address == {"city": "Shanghai", "postalCode": "200040"}
    assert traits.signup_at == datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC)
    assert traits.custom == {"plan": "gold"}


def test_identify_reads_rudderstack_context_traits_and_root_traits_win() -> None:
    message = {
        "type": "identify",
        "userId": "c-1",
        "traits": {"name": "Root"},
        "context": {"traits": {"name": "Ctx", "email": "a@b.cn"}},
    }
    traits = one(message)["payload"]["traits"]
    assert traits["name"] == "Root" and traits["email"] == "a@b.cn"


def test_identify_with_an_anonymous_id_also_links_it() -> None:
    candidates = map_message(
        {"type": "identify", "userId": "c-1", "anonymousId": "v-7", "messageId": "m-1"}, 3, CONTEXT
    )
    identify, link = (c.data for c in candidates)
    assert identify["customer_id"] == link["customer_id"] == "c-1"
    assert link["event_id"] == "m-1#alias" and link["payload"] == {"previous_ids": ["anon:v-7"]}
    assert {c.index for c in candidates} == {3}


def test_alias_names_both_ids_the_previous_one_may_have_been_filed_under() -> None:
    (event,) = parsed({"type": "alias", "userId": "c-1", "previousId": "v-7", "messageId": "m"})
    assert isinstance(event, AliasEvent) and event.payload.previous_ids == ["v-7", "anon:v-7"]
    assert one({"type": "alias", "userId": "c-1", "previousId": "anon:v-7"})["payload"]["previous_ids"] == ["anon:v-7"]
    assert "previousId: required" in problems({"type": "alias", "userId": "c-1"})
    assert "userId: required" in problems({"type": "alias", "anonymousId": "v", "previousId": "x"})


def test_group_sets_the_account() -> None:
    data = one({"type": "group", "userId": "c-1", "groupId": 12, "traits": {"industry": "tea"}})
    assert data["payload"]["traits"] == {"account_id": "12", "custom": {"account_traits": {"industry": "tea"}}}


def test_customer_id_is_the_user_id_or_the_namespaced_anonymous_id() -> None:
    assert one(track("X", anonymousId="v-1", userId=None))["customer_id"] == "anon:v-1"
    assert one(track("X", anonymousId="v-1", userId=7))["customer_id"] == "7"
    assert "userId or anonymousId" in problems(track("X", userId=None))
    assert "userId: must be a string" in problems(track("X", userId={"id": 1}))


def test_page_and_screen_are_page_views() -> None:
    page = one({"type": "page", "userId": "c", "name": "Home", "category": "Docs", "properties": {"path": "/"}})
    assert page["payload"] == {"kind": "page_view", "name": "Home", "properties": {"path": "/", "category": "Docs"}}
    screen = one({"type": "screen", "userId": "c", "name": "Cart"})
    assert screen["payload"]["properties"] == {"segment_type": "screen"}


def test_message_id_is_derived_stably_when_missing() -> None:
    message = track("X", messageId=None, timestamp="2026-11-20T10:00:00Z")
    assert message_id(message) == message_id({**message, "sentAt": "2026-11-20T10:00:09Z", "writeKey": "k"})
    assert message_id(message) != message_id({**message, "timestamp": "2026-11-20T10:00:01Z"})
    assert message_id(message).startswith("seg-")


def test_clock_skew_correction() -> None:
    fast = RECEIVED + timedelta(hours=3)  # the device clock is three hours ahead
    message = {"timestamp": (fast - timedelta(minutes=2)).isoformat(), "sentAt": fast.isoformat()}
    assert occurred_at_of(message, CONTEXT) == RECEIVED - timedelta(minutes=2)
    batch_level = SegmentContext(received_at=RECEIVED, sent_at=fast.isoformat())
    assert occurred_at_of({"timestamp": message["timestamp"]}, batch_level) == RECEIVED - timedelta(minutes=2)
    assert occurred_at_of({"timestamp": "2026-01-01T00:00:00Z"}, CONTEXT) == datetime(2026, 1, 1, tzinfo=UTC)
    assert occurred_at_of({}, CONTEXT) == RECEIVED
    # Without sentAt a future timestamp cannot be corrected, only capped at receipt.
    assert occurred_at_of({"timestamp": "2030-01-01T00:00:00Z"}, CONTEXT) == RECEIVED
    # A time without an offset is UTC, as Segment reads it.
    assert occurred_at_of({"timestamp": "2026-01-01T08:00:00"}, CONTEXT) == datetime(2026, 1, 1, 8, tzinfo=UTC)
    assert "timestamp: must be an ISO 8601" in problems(track("X", timestamp="yesterday"))
    assert "sentAt: must be an ISO 8601" in problems(track("X", timestamp="2026-01-01T00:00:00Z", sentAt=5))


def test_historical_context_marks_events() -> None:
    assert one(track("X"), SegmentContext(received_at=RECEIVED, historical=True))["historical"] is True


def test_batch_keeps_going_past_bad_messages_and_reports_them_by_index() -> None:
    messages = [track("X", messageId="a"), "nonsense", {"type": "explode", "userId": "c"}, track("", messageId="d")]
    candidates, rejected = map_batch(messages, [0, 0, 0, 0], CONTEXT, 32768)
    assert [c.data["event_id"] for c in candidates] == ["a"]
    assert [(r.index, r.problems[0].split(":")[0]) for r in rejected] == [
        (1, "each message must be a JSON object"),
        (2, "type"),
        (3, "event"),
    ]
    assert rejected[2].event_id == "d"


def test_oversize_messages_are_rejected_before_mapping() -> None:
    candidates, rejected = map_batch([track("X", messageId="big")], [40_000], CONTEXT, 32768)
    assert candidates == [] and rejected[0].event_id == "big" and "limit is 32768 bytes" in rejected[0].problems[0]


def test_locale_and_birthday_helpers() -> None:
    assert [normalise_locale(v) for v in ("zh_CN", "zh-Hans-CN", "EN", "en-us", "123", None)] == [
        "zh-CN",
        "zh-CN",
        "en",
        "en-US",
        None,
        None,
    ]
    assert birthday_date("1990-05-17", None) == "1990-05-17"
    assert birthday_date("1990-05-16T16:00:00Z", "Asia/Shanghai") == "1990-05-17"
    assert birthday_date("1990-05-16T16:00:00Z", None) == "1990-05-16"
