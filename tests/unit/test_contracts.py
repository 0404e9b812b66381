"""The contracts reject bad events with messages that say what to fix."""

from datetime import UTC, datetime
from decimal import Decimal

import pytest

from shared.contracts import (
    ContractError,
    CustomerCause,
    CustomerSnapshot,
    CustomerUpdatedEvent,
    CustomerUpdatedPayload,
    PurchaseEvent,
    parse_event,
    parse_intake,
    to_wire,
)


def purchase(**overrides):
    event = {
        "event_id": "e-1",
        "type": "purchase",
        "customer_id": "c-1",
        "occurred_at": "2026-11-20T10:00:00+08:00",
        "payload": {"order_id": "o-1", "amount": "99.90", "currency": "CNY"},
    }
    event.update(overrides)
    return event


def problems_of(data) -> str:
    with pytest.raises(ContractError) as caught:
        parse_intake(data)
    return "; ".join(caught.value.problems)


def test_a_valid_purchase_parses_with_exact_money_and_aware_time():
    event = parse_intake(purchase())
    assert isinstance(event, PurchaseEvent)
    assert event.payload.amount == Decimal("99.90")
    assert event.occurred_at.utcoffset() is not None
    assert event.schema_version == 1


def test_unknown_type_names_the_allowed_types():
    message = problems_of(purchase(type="purchased"))
    assert "type: must be one of identify, purchase, refund, interaction, consent" in message


def test_negative_amount_is_rejected_at_its_path():
    message = problems_of(purchase(payload={"order_id": "o-1", "amount": "-5"}))
    assert "payload.amount" in message and "greater than or equal to 0" in message


def test_naive_timestamp_is_rejected():
    message = problems_of(purchase(occurred_at="2026-11-20T10:00:00"))
    assert "occurred_at" in message and "timezone" in message


def test_currency_must_be_iso_4217():
    assert "payload.currency" in problems_of(purchase(payload={"order_id": "o", "amount": 1, "currency": "yuan"}))


def test_unknown_fields_are_errors_not_silently_dropped():
    assert "payload.amout" in problems_of(purchase(payload={"order_id": "o", "amount": 1, "amout": 2}))


def test_missing_event_id_is_reported():
    data = purchase()
    del data["event_id"]
    assert "event_id: Field required" in problems_of(data)


def test_feedback_needs_a_rating_and_referral_needs_the_referred_customer():
    feedback = {"event_id": "e", "type": "interaction", "customer_id": "c", "occurred_at": "2026-11-20T10:00:00Z"}
    assert "needs a rating" in problems_of({**feedback, "payload": {"kind": "feedback"}})
    assert "referred_customer_id" in problems_of({**feedback, "payload": {"kind": "referral"}})
    assert "less than or equal to 5" in problems_of({**feedback, "payload": {"kind": "feedback", "rating": 9}})


def test_identify_validates_email_and_time_zone():
    identify = {"event_id": "e", "type": "identify", "customer_id": "c", "occurred_at": "2026-11-20T10:00:00Z"}
    message = problems_of({**identify, "payload": {"traits": {"email": "not-an-email", "timezone": "Mars/Base"}}})
    assert "name@example.com" in message
    assert "unknown time zone 'Mars/Base'" in message


def test_consent_needs_channel_purpose_and_decision():
    consent = {"event_id": "e", "type": "consent", "customer_id": "c", "occurred_at": "2026-11-20T10:00:00Z"}
    message = problems_of({**consent, "payload": {"channel": "pigeon", "purpose": "marketing"}})
    assert "payload.channel" in message and "payload.granted" in message


def test_blank_customer_id_is_rejected():
    assert "customer_id" in problems_of(purchase(customer_id="   "))


def test_wire_round_trip_keeps_every_field():
    at = datetime(2026, 11, 20, 2, 0, tzinfo=UTC)
    update = CustomerUpdatedEvent(
        event_id="u-1",
        customer_id="c-1",
        occurred_at=at,
        payload=CustomerUpdatedPayload(
            version=3,
            cause=CustomerCause(event_id="e-1", type="purchase", occurred_at=at, order_id="o-1", amount=Decimal("5")),
            snapshot=CustomerSnapshot(order_count=2, revenue=Decimal("12.50"), last_purchase_at=at),
        ),
    )
    assert parse_event(to_wire(update)) == update


def test_garbage_bytes_are_a_contract_error():
    with pytest.raises(ContractError) as caught:
        parse_event(b"\x00not json")
    assert caught.value.problems
