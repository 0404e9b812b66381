"""Segment's Tracking API on ingest, with the real SDKs and by hand, against a real broker."""

from __future__ import annotations

import asyncio
import gzip
import json
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from rudderstack.analytics.client import Client as RudderClient
from segment.analytics.client import Client as SegmentClient

from tests.integration.test_ingest_support import (
    WRITE_KEY,
    ServedIngest,
    basic,
    events_on_topic,
    ingest_settings,
    running_ingest,
)
from tests.support import Broker, read_topic

pytestmark = pytest.mark.broker


@pytest.fixture
async def ingest(broker: Broker, tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    async with running_ingest(ingest_settings(broker.bootstrap, tmp_path)) as (_app, client):
        yield client


@pytest.fixture
def served(broker: Broker, tmp_path: Path) -> Iterator[ServedIngest]:
    server = ServedIngest(ingest_settings(broker.bootstrap, tmp_path))
    server.start()
    try:
        yield server
    finally:
        server.stop()


def _by_id(events: list[dict]) -> dict[str, dict]:
    return {event["event_id"]: event for event in events}


async def _deliver_with(client: SegmentClient | RudderClient, errors: list[Exception], tag: str) -> None:
    """The calls a shop backend makes, then a flush (which waits until the upload is answered)."""
    moment = datetime(2026, 11, 20, 10, 0, tzinfo=UTC)
    client.identify(
        user_id=f"{tag}-42",
        anonymous_id=f"{tag}-anon-1",
        traits={"email": "Li.Wei@Example.com", "name": "Li Wei", "birthday": "1990-05-17", "vip_level": 3},
        context={"timezone": "Asia/Shanghai", "locale": "zh-CN"},
        message_id=f"{tag}-identify-1",
        timestamp=moment,
    )
    client.track(
        user_id=f"{tag}-42",
        event="Order Completed",
        properties={
            "order_id": f"{tag}-A-1001",
            "total": 129.5,
            "currency": "CNY",
            "products": [
                {"product_id": "oolong-250g", "name": "Oolong", "category": "tea", "quantity": 2, "price": 64.75}
            ],
        },
        message_id=f"{tag}-order-1",
        timestamp=moment,
    )
    client.track(
        anonymous_id=f"{tag}-anon-2",
        event="Wishlist Shared",
        properties={"list": "autumn teas", "items": 3},
        message_id=f"{tag}-other-1",
        timestamp=moment,
    )
    client.page(user_id=f"{tag}-42", name="Tea guide", properties={"path": "/guide"}, message_id=f"{tag}-page-1")
    client.alias(previous_id=f"{tag}-anon-2", user_id=f"{tag}-42", message_id=f"{tag}-alias-1")
    await asyncio.to_thread(client.flush)
    client.join()
    assert errors == [], errors


def _check_delivered(events: list[dict], tag: str) -> None:
    by_id = _by_id(events)
    identify = by_id[f"{tag}-identify-1"]
    assert identify["key"] == f"{tag}-42" and identify["type"] == "identify"
    traits = identify["payload"]["traits"]
    assert traits["email"] == "li.wei@example.com" and traits["name"] == "Li Wei"
    assert traits["birthday"] == "1990-05-17" and traits["timezone"] == "Asia/Shanghai" and traits["locale"] == "zh-CN"
    assert traits["custom"] == {"vip_level": 3}
    link = by_id[f"{tag}-identify-1#alias"]
    assert link["type"] == "alias" and link["payload"]["previous_ids"] == [f"anon:{tag}-anon-1"]

    order = by_id[f"{tag}-order-1"]
    assert order["type"] == "purchase" and order["key"] == f"{tag}-42"
    assert order["payload"]["order_id"] == f"{tag}-A-1001" and order["payload"]["amount"] == "129.5"
    assert order["payload"]["items"] == [
        {"sku": "oolong-250g", "name": "Oolong", "category": "tea", "quantity": 2, "price": "64.75"}
    ]
    # The SDK stamped timestamp and sentAt on this machine's clock, so the skew correction must
    # land back on the timestamp it was given (within the upload's own delay).
    occurred = datetime.fromisoformat(order["occurred_at"])
    assert abs(occurred - datetime(2026, 11, 20, 10, 0, tzinfo=UTC)) < timedelta(seconds=5)

    other = by_id[f"{tag}-other-1"]
    assert other["key"] == f"anon:{tag}-anon-2" and other["payload"]["kind"] == "other"
    assert other["payload"]["name"] == "Wishlist Shared" and other["payload"]["properties"] == {
        "list": "autumn teas",
        "items": 3,
    }
    assert by_id[f"{tag}-page-1"]["payload"]["kind"] == "page_view"
    assert by_id[f"{tag}-page-1"]["payload"]["name"] == "Tea guide"
    alias = by_id[f"{tag}-alias-1"]
    assert alias["key"] == f"{tag}-42"
    assert alias["payload"]["previous_ids"] == [f"{tag}-anon-2", f"anon:{tag}-anon-2"]


async def test_segment_python_sdk_delivers_intact(served: ServedIngest, broker: Broker) -> None:
    errors: list[Exception] = []
    client = SegmentClient(
        write_key=WRITE_KEY, host=served.url, gzip=True, on_error=lambda e, _batch: errors.append(e), max_retries=2
    )
    await _deliver_with(client, errors, "seg")
    events = await events_on_topic(broker.bootstrap, expect_at_least=6)
    assert len(events) == 6  # five calls, and the identify's anonymous-id link
    _check_delivered(events, "seg")


async def test_rudderstack_python_sdk_delivers_intact(served: ServedIngest, broker: Broker) -> None:
    errors: list[Exception] = []
    client = RudderClient(WRITE_KEY, host=served.url, on_error=lambda e, _batch: errors.append(e), max_retries=2)
    await _deliver_with(client, errors, "rs")  # gzip is RudderStack's default; traits travel in context.traits
    events = await events_on_topic(broker.bootstrap, expect_at_least=6)
    assert len(events) == 6
    _check_delivered(events, "rs")


async def test_sdk_sync_batch_is_answered_only_after_the_broker_stored_it(served: ServedIngest, broker: Broker) -> None:
    client = SegmentClient(write_key=WRITE_KEY, host=served.url, sync_mode=True)
    for n in range(3):
        client.track(user_id="c-1", event="Product Viewed", properties={"sku": f"s-{n}"}, message_id=f"pv-{n}")
    # sync_mode posts each call and returns after the 200: by then the event must be readable.
    events = await events_on_topic(broker.bootstrap, expect_at_least=3)
    assert sorted(e["event_id"] for e in events) == ["pv-0", "pv-1", "pv-2"]
    assert {e["payload"]["kind"] for e in events} == {"product_viewed"}


def track(message_id: str, **overrides: object) -> dict:
    message: dict = {
        "userId": "c-1",
        "event": "Order Completed",
        "messageId": message_id,
        "timestamp": "2026-11-20T10:00:00+08:00",
        "properties": {"order_id": f"o-{message_id}", "revenue": "88.00"},
    }
    message.update(overrides)
    return message


async def test_single_calls_and_short_paths(ingest: httpx.AsyncClient, broker: Broker) -> None:
    for path, body in [
        ("/v1/track", track("t-1")),
        ("/v1/t", track("t-2")),
        ("/v1/identify", {"userId": "c-1", "messageId": "i-1", "traits": {"phone": 8613800000000}}),
        ("/v1/page", {"anonymousId": "a-9", "messageId": "p-1", "name": "Home"}),
        ("/v1/screen", {"userId": "c-1", "messageId": "s-1", "name": "Cart"}),
        ("/v1/group", {"userId": "c-1", "messageId": "g-1", "groupId": "acme", "traits": {"employees": 40}}),
        ("/v1/alias", {"userId": "c-1", "previousId": "a-9", "messageId": "a-1"}),
    ]:
        response = await ingest.post(path, json=body)
        assert response.status_code == 200, (path, response.text)
        assert response.json()["success"] is True
    by_id = _by_id(await events_on_topic(broker.bootstrap, expect_at_least=7))
    assert by_id["t-2"]["payload"]["amount"] == "88.00" and by_id["t-2"]["payload"]["currency"] == "CNY"
    assert by_id["i-1"]["payload"]["traits"]["phone"] == "8613800000000"
    assert by_id["p-1"]["key"] == "anon:a-9"
    assert by_id["s-1"]["payload"]["properties"] == {"segment_type": "screen"}
    assert by_id["g-1"]["payload"]["traits"]["account_id"] == "acme"
    assert by_id["a-1"]["payload"]["previous_ids"] == ["a-9", "anon:a-9"]


async def test_batch_reports_rejections_and_keeps_the_rest(ingest: httpx.AsyncClient, broker: Broker) -> None:
    response = await ingest.post(
        "/v1/batch",
        json={
            "batch": [
                {"type": "track", **track("b-1")},
                {"type": "track", **track("b-2", properties={"order_id": "o-2", "total": -3})},
                {"type": "track", **track("b-3", userId=None)},
                {"type": "identify", "userId": "c-2", "messageId": "b-4", "traits": {"email": "not-an-email"}},
                {"type": "shout", "userId": "c-2", "messageId": "b-5"},
            ]
        },
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["success"] is True and body["accepted"] == ["b-1"]
    problems = {r["event_id"]: " ".join(r["problems"]) for r in body["rejected"]}
    assert "properties.total" in problems["b-2"] and "greater than or equal to 0" in problems["b-2"]
    assert "userId or anonymousId" in problems["b-3"]
    assert "traits.email" in problems["b-4"]
    assert "type: must be one of track" in problems["b-5"]
    assert [r["index"] for r in body["rejected"]] == [1, 2, 3, 4]
    assert [e["event_id"] for e in await events_on_topic(broker.bootstrap, expect_at_least=1)] == ["b-1"]


async def test_nothing_valid_is_400_with_segments_code_and_message(ingest: httpx.AsyncClient) -> None:
    response = await ingest.post("/v1/track", json={"userId": "c-1", "messageId": "x"})
    assert response.status_code == 400
    body = response.json()
    assert body["success"] is False and body["code"] == "invalid_request"
    assert "event: required" in body["message"] and body["error"] == body["message"]


async def test_duplicates_are_answered_but_not_republished(ingest: httpx.AsyncClient, broker: Broker) -> None:
    first = await ingest.post("/v1/batch", json={"batch": [{"type": "track", **track("d-1")}]})
    again = await ingest.post(
        "/v1/batch", json={"batch": [{"type": "track", **track("d-1")}, {"type": "track", **track("d-2")}]}
    )
    assert first.status_code == again.status_code == 200
    assert again.json()["duplicates"] == ["d-1"] and again.json()["accepted"] == ["d-2"]
    no_id = {"type": "track", "userId": "c-3", "event": "Tea Tasted", "timestamp": "2026-11-20T10:00:00Z"}
    one = await ingest.post("/v1/batch", json={"batch": [no_id], "sentAt": "2026-11-20T10:00:05Z"})
    two = await ingest.post("/v1/batch", json={"batch": [no_id], "sentAt": "2026-11-20T10:00:09Z"})
    derived = one.json()["accepted"][0]
    assert derived.startswith("seg-") and two.json()["duplicates"] == [derived]  # a retry without messageId
    ids = sorted(e["event_id"] for e in await events_on_topic(broker.bootstrap, expect_at_least=3))
    assert ids == sorted(["d-1", "d-2", derived])


async def test_clock_skew_is_corrected_from_sent_at(ingest: httpx.AsyncClient, broker: Broker) -> None:
    # The device clock runs a year fast; it sent the event 30 s after it happened.
    fast = datetime.now(UTC) + timedelta(days=365)
    body = {
        "batch": [{"type": "track", **track("k-1", timestamp=(fast - timedelta(seconds=30)).isoformat())}],
        "sentAt": fast.isoformat(),
    }
    response = await ingest.post("/v1/batch", json=body)
    assert response.status_code == 200, response.text
    (event,) = await events_on_topic(broker.bootstrap, expect_at_least=1)
    lag = datetime.fromisoformat(event["received_at"]) - datetime.fromisoformat(event["occurred_at"])
    assert timedelta(seconds=29) < lag < timedelta(seconds=31)


async def test_import_endpoint_marks_history(ingest: httpx.AsyncClient, broker: Broker) -> None:
    response = await ingest.post("/v1/import", json={"batch": [{"type": "track", **track("h-1")}]})
    assert response.status_code == 200
    (event,) = await events_on_topic(broker.bootstrap, expect_at_least=1)
    assert event["historical"] is True


async def test_analytics_js_style_text_plain_with_write_key_in_body(ingest: httpx.AsyncClient, broker: Broker) -> None:
    body = json.dumps({"writeKey": WRITE_KEY, "batch": [{"type": "page", "anonymousId": "v-1", "messageId": "w-1"}]})
    response = await ingest.post(
        "/v1/b", content=body, headers={"Authorization": "", "Content-Type": "text/plain;charset=UTF-8"}
    )
    assert response.status_code == 200, response.text
    wrong = json.dumps({"writeKey": "wk_nope", "batch": [{"type": "page", "anonymousId": "v-1"}]})
    refused = await ingest.post("/v1/b", content=wrong, headers={"Authorization": "", "Content-Type": "text/plain"})
    assert refused.status_code == 401 and refused.json()["code"] == "unauthorized"
    missing = await ingest.post("/v1/track", json=track("w-2"), headers={"Authorization": ""})
    assert missing.status_code == 401 and "write key" in missing.json()["message"]
    assert [e["event_id"] for e in await events_on_topic(broker.bootstrap, expect_at_least=1)] == ["w-1"]


async def test_gzip_bodies_limits_and_content_types(ingest: httpx.AsyncClient, broker: Broker) -> None:
    packed = gzip.compress(json.dumps({"batch": [{"type": "track", **track("z-1")}]}).encode())
    response = await ingest.post(
        "/v1/batch", content=packed, headers={"Content-Type": "application/json", "Content-Encoding": "gzip"}
    )
    assert response.status_code == 200, response.text

    broken = await ingest.post(
        "/v1/batch",
        content=b"\x1f\x8bnot gzip",
        headers={"Content-Type": "application/json", "Content-Encoding": "gzip"},
    )
    assert broken.status_code == 400 and "gzip" in broken.json()["error"]
    bomb = gzip.compress(b"[" + b" " * 2_000_000 + b"]")  # 2 MB of JSON inside a ~2 KB body
    exploded = await ingest.post(
        "/v1/batch", content=bomb, headers={"Content-Type": "application/json", "Content-Encoding": "gzip"}
    )
    assert exploded.status_code == 413 and "smaller batches" in exploded.json()["error"]
    brotli = await ingest.post(
        "/v1/batch", content=b"{}", headers={"Content-Type": "application/json", "Content-Encoding": "br"}
    )
    assert brotli.status_code == 415 and "gzip" in brotli.json()["error"]
    form = await ingest.post("/v1/track", content=b"a=b", headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert form.status_code == 415 and "application/json" in form.json()["error"]

    big = track("big-1", properties={"order_id": "o", "total": 1, "note": "x" * 40_000})
    single = await ingest.post("/v1/track", json=big)
    assert single.status_code == 413 and "32768" in single.json()["message"]
    batch = await ingest.post(
        "/v1/batch", json={"batch": [{"type": "track", **big}, {"type": "track", **track("ok-1")}]}
    )
    assert batch.status_code == 200 and batch.json()["accepted"] == ["ok-1"]
    assert "limit is 32768 bytes" in batch.json()["rejected"][0]["problems"][0]
    many = [
        {"type": "track", **track(f"m-{n}", properties={"order_id": "o", "total": 1, "pad": "y" * 2000})}
        for n in range(300)
    ]
    over = await ingest.post("/v1/batch", json={"batch": many})
    assert over.status_code == 413 and over.json()["code"] == "payload_too_large"
    empty = await ingest.post("/v1/batch", json={"batch": []})
    assert empty.status_code == 400 and "non-empty list" in empty.json()["error"]
    ids = sorted(e["event_id"] for e in await events_on_topic(broker.bootstrap, expect_at_least=2))
    assert ids == ["ok-1", "z-1"]


async def test_consent_and_service_events_map_to_their_kinds(ingest: httpx.AsyncClient, broker: Broker) -> None:
    calls = [
        track("c-1", event="Unsubscribed", properties={}),
        track("c-2", event="Consent Updated", properties={"channel": "sms", "granted": True}),
        track("c-3", event="Feedback Submitted", properties={"rating": 2, "comment": "cold tea"}),
        track(
            "c-4", event="Complaint Submitted", properties={"complaint_id": "cp-9", "churn_reason": "product_quality"}
        ),
        track("c-5", event="Referral Completed", properties={"referred_user_id": "c-77"}),
        track("c-6", event="Email Opened", properties={"touch_id": "t-1"}),
    ]
    response = await ingest.post("/v1/batch", json={"batch": [{"type": "track", **c} for c in calls]})
    assert response.status_code == 200 and len(response.json()["accepted"]) == 6, response.text
    by_id = _by_id(await events_on_topic(broker.bootstrap, expect_at_least=6))
    assert by_id["c-1"]["payload"] == {"channel": "email", "purpose": "marketing", "granted": False}
    assert by_id["c-2"]["payload"] == {"channel": "sms", "purpose": "marketing", "granted": True}
    assert (by_id["c-3"]["payload"]["kind"], by_id["c-3"]["payload"]["rating"]) == ("feedback", 2)
    assert by_id["c-4"]["payload"]["churn_reason"] == "product_quality"
    assert by_id["c-5"]["payload"]["referred_customer_id"] == "c-77"
    assert (by_id["c-6"]["payload"]["kind"], by_id["c-6"]["payload"]["touch_id"]) == ("email_open", "t-1")


async def test_unique_ids_keep_per_customer_order_on_one_partition(ingest: httpx.AsyncClient, broker: Broker) -> None:
    batch = [{"type": "track", **track(str(uuid.uuid4()), userId=f"c-{n % 3}")} for n in range(30)]
    response = await ingest.post("/v1/batch", json={"batch": batch})
    assert response.status_code == 200 and len(response.json()["accepted"]) == 30
    records = await read_topic(broker.bootstrap, "huitou.events", expect_at_least=30)
    partitions: dict[bytes, set[int]] = {}
    for record in records:
        partitions.setdefault(record.key, set()).add(record.partition)
    assert all(len(p) == 1 for p in partitions.values()) and len(partitions) == 3
    for key in partitions:
        on_topic = [json.loads(r.value)["event_id"] for r in sorted(records, key=lambda r: r.offset) if r.key == key]
        assert on_topic == [m["messageId"] for m in batch if m["userId"].encode() == key]


async def test_bad_basic_auth_header_is_401(ingest: httpx.AsyncClient) -> None:
    response = await ingest.post("/v1/track", json=track("x"), headers=basic("wk_wrong_key"))
    assert response.status_code == 401 and response.json()["message"] == "unknown write key"
    assert response.headers["www-authenticate"].startswith("Basic")
