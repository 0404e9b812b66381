"""Pure intake rules shared by every interface: validation, the in-flight budget, CloudEvents."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime

import pytest

from services.ingest.budget import InFlightBudget, OverBudget
from services.ingest.cloudevents import from_binary, from_structured, huitou_type
from services.ingest.intake import Candidate, MappingError, item_sizes, native_candidates, validate

RECEIVED = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)


def purchase(event_id: str = "e-1", **payload: object) -> dict:
    return {
        "event_id": event_id,
        "type": "purchase",
        "customer_id": "c-1",
        "occurred_at": "2026-11-20T10:00:00+08:00",
        "payload": {"order_id": "o-1", "amount": "9.90", **payload},
    }


def test_source_and_received_at_are_ours_to_set() -> None:
    item = {**purchase(), "source": "forged", "received_at": "2000-01-01T00:00:00Z"}
    verdicts = validate([Candidate(0, item)], source="pos-1", received_at=RECEIVED)
    (event,) = verdicts.valid
    assert event.source == "pos-1" and event.received_at == RECEIVED


def test_the_request_trace_goes_to_events_without_one_of_their_own() -> None:
    request_trace, own = "4bf92f3577b34da6a3ce929d0e0e4736", "0af7651916cd43dd8448eb211c80319c"
    candidates = [
        Candidate(0, purchase("plain")),
        Candidate(1, {**purchase("null"), "trace_id": None}),
        Candidate(2, {**purchase("empty"), "trace_id": ""}),
        Candidate(3, {**purchase("own"), "trace_id": own}),
    ]
    verdicts = validate(candidates, source="s", received_at=RECEIVED, trace_id=request_trace)
    assert [event.trace_id for event in verdicts.valid] == [request_trace, request_trace, request_trace, own]
    (untraced,) = validate([Candidate(0, purchase())], source="s", received_at=RECEIVED).valid
    assert untraced.trace_id is None


def test_rejections_keep_their_request_index_and_renamed_paths() -> None:
    candidates = [
        Candidate(0, purchase("ok")),
        Candidate(4, purchase("bad", amount="-1"), note="as Huitou purchase", renames=(("payload.amount", "total"),)),
    ]
    verdicts = validate(candidates, source="s", received_at=RECEIVED)
    assert [e.event_id for e in verdicts.valid] == ["ok"] and verdicts.indexes == [0]
    (rejection,) = verdicts.rejected
    assert rejection.index == 4 and rejection.event_id == "bad"
    assert rejection.problems[0].startswith("as Huitou purchase: total: Input should be greater than or equal to 0")


def test_rename_only_matches_whole_path_segments() -> None:
    candidate = Candidate(0, purchase(), renames=(("payload.amount", "total"),))
    assert candidate.explain(["payload.amounts: x", "payload.amount.x: y", "body"]) == [
        "payload.amounts: x",
        "total.x: y",
        "body",
    ]


def test_item_sizes_are_measured_only_when_the_body_could_hold_an_oversize_item() -> None:
    items = [{"a": "x" * 10}, {"b": "回头"}]
    assert item_sizes(items, body_size=100, max_event_bytes=1000) == [0, 0]
    assert item_sizes(items, body_size=5000, max_event_bytes=1000) == [
        len('{"a":"xxxxxxxxxx"}'),
        len('{"b":"回头"}'.encode()),
    ]


def test_native_candidates_reject_non_objects_and_oversize_items() -> None:
    candidates, rejected = native_candidates([purchase(), 3, purchase("big")], [10, 1, 99_999], 32768)
    assert [c.index for c in candidates] == [0]
    assert [(r.index, r.event_id) for r in rejected] == [(1, None), (2, "big")]
    assert "limit is 32768 bytes" in rejected[1].problems[0]


# --- the in-flight budget ---------------------------------------------------------------------


def test_budget_refuses_what_does_not_fit_and_releases_on_exit() -> None:
    budget = InFlightBudget(max_events=10, max_bytes=1000)
    with budget.hold(400) as first:
        first.grow(8, 0)
        with pytest.raises(OverBudget, match="8 events / 500 bytes already in flight"), budget.hold(100) as late:
            late.grow(3, 0)
        assert (budget.events, budget.bytes) == (8, 400)  # the refused request let go of its bytes
        with pytest.raises(OverBudget):
            budget.hold(700)
        with budget.hold(600) as second:
            second.grow(2, 0)
            assert (budget.events, budget.bytes) == (10, 1000)
    assert (budget.events, budget.bytes) == (0, 0)


def test_a_request_alone_in_flight_always_fits() -> None:
    budget = InFlightBudget(max_events=10, max_bytes=1000)
    with budget.hold(5000) as lonely:
        lonely.grow(50, 1000)
        assert (budget.events, budget.bytes) == (50, 6000)
        with pytest.raises(OverBudget):
            budget.hold(1)
    assert (budget.events, budget.bytes) == (0, 0)


def test_budget_is_released_when_the_request_fails() -> None:
    budget = InFlightBudget(max_events=10, max_bytes=1000)
    with pytest.raises(RuntimeError), budget.hold(100) as hold:
        hold.grow(3, 0)
        raise RuntimeError("broker gone")
    assert (budget.events, budget.bytes) == (0, 0)


# --- CloudEvents --------------------------------------------------------------------------------


def cloudevent(**overrides: object) -> dict:
    event = {
        "specversion": "1.0",
        "id": "ce-1",
        "source": "/pos/1",
        "type": "com.example.purchase",
        "subject": "c-1",
        "time": "2026-11-20T10:00:00Z",
        "data": {"order_id": "o", "amount": "1"},
    }
    event.update(overrides)
    return event


def test_types_may_carry_a_reverse_dns_prefix() -> None:
    assert [
        huitou_type(t) for t in ("purchase", "huitou.refund", "com.x.pos.alias", "com.x.checkout", "purchases")
    ] == [
        "purchase",
        "refund",
        "alias",
        None,
        None,
    ]


def test_structured_event_maps_onto_the_envelope() -> None:
    traceparent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    candidate = from_structured(cloudevent(customerid="c-9", historical="true", traceparent=traceparent))
    assert candidate.data == {
        "event_id": "ce-1",
        "type": "purchase",
        "customer_id": "c-9",
        "occurred_at": "2026-11-20T10:00:00Z",
        "payload": {"order_id": "o", "amount": "1"},
        "historical": True,
        "trace_id": "0af7651916cd43dd8448eb211c80319c",
    }
    (event,) = validate([candidate], source="s", received_at=RECEIVED).valid
    assert event.trace_id == "0af7651916cd43dd8448eb211c80319c"


def test_data_base64_must_hold_json() -> None:
    encoded = base64.b64encode(json.dumps({"order_id": "o", "amount": "1"}).encode()).decode()
    assert from_structured(cloudevent(data=None, data_base64=encoded)).data["payload"]["amount"] == "1"
    with pytest.raises(MappingError, match="data_base64"):
        from_structured(cloudevent(data_base64="!!!"))
    with pytest.raises(MappingError, match="datacontenttype"):
        from_structured(cloudevent(datacontenttype="application/xml"))


def test_every_missing_attribute_is_named() -> None:
    with pytest.raises(MappingError) as caught:
        from_structured({"specversion": "0.3", "type": "thing", "data": []})
    joined = " | ".join(caught.value.problems)
    for expected in (
        "id: required",
        "source: required",
        "only 1.0",
        "type: must be one of",
        "subject: required",
        "time: required",
        "data: must be a JSON object",
    ):
        assert expected in joined


def test_binary_mode_reads_percent_encoded_headers() -> None:
    headers = {
        "ce-specversion": "1.0",
        "ce-id": "b-1",
        "ce-source": "/x",
        "ce-type": "identify",
        "ce-time": "2026-11-20T10:00:00Z",
        "ce-subject": "%E5%AE%A2%E6%88%B7-1",
        "content-type": "application/json",
    }
    candidate = from_binary(headers, {"traits": {"name": "李"}})
    assert candidate.data["customer_id"] == "客户-1" and candidate.data["type"] == "identify"


def test_contract_problems_use_cloudevents_names() -> None:
    (rejection,) = validate(
        [from_structured(cloudevent(time="2026-11-20T10:00:00"))], source="s", received_at=RECEIVED
    ).rejected
    assert rejection.problems[0].startswith("time:")
