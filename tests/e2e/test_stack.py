"""The whole stack as a newcomer runs it: the dev launcher starts the broker, the SMTP sink and
the four services as subprocesses; a purchase posted to ingest becomes a customer file and a
scheduled follow-up touch visible through the gateway."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from tests.support import RunningStack, dev_stack

pytestmark = [pytest.mark.e2e, pytest.mark.broker]
WRITE_KEY = "wk_e2e_write_key_0123456789abcdef"
ADMIN_KEY = "hk_e2e_admin_key_0123456789abcdef"


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningStack]:
    env = {
        "HUITOU_DEV_WRITE_KEY": WRITE_KEY,
        "HUITOU_DEV_ADMIN_KEY": ADMIN_KEY,
        "HUITOU_OUTREACH_FOLLOW_UP_DELAY": "P2DT6H",
    }
    with dev_stack(tmp_path_factory.mktemp("var"), env) as running:
        yield running
    assert any("stopped." in line for line in running.output)


def test_banner_prints_urls_and_the_dev_keys(stack: RunningStack) -> None:
    text = "".join(stack.output)
    assert stack.url("gateway") in text and stack.url("ingest") in text
    assert WRITE_KEY in text and ADMIN_KEY in text
    assert stack.url("smtp_http") in text
    assert httpx.get(stack.url("smtp_http") + "/messages").status_code == 200


def test_every_service_is_healthy_ready_and_exports_metrics(stack: RunningStack) -> None:
    for service in ("gateway", "ingest", "scoring", "outreach"):
        assert httpx.get(stack.url(service) + "/healthz").json()["status"] == "ok"
        ready = httpx.get(stack.url(service) + "/readyz")
        assert ready.status_code == 200, ready.text
        assert "database" in ready.json()["checks"]
        assert "huitou_http_requests_total" in httpx.get(stack.url(service) + "/metrics").text


def test_purchase_becomes_a_customer_file_and_a_scheduled_follow_up(stack: RunningStack) -> None:
    occurred = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=5)
    event = {
        "event_id": f"e2e-{time.time_ns()}",
        "type": "purchase",
        "customer_id": "e2e-customer",
        "occurred_at": occurred.isoformat(),
        "payload": {
            "order_id": "e2e-order-1",
            "amount": "88.80",
            "currency": "CNY",
            "items": [{"sku": "oolong-250g", "category": "tea", "quantity": 2}],
        },
    }
    posted = httpx.post(stack.url("ingest") + "/v1/events", json=event, auth=(WRITE_KEY, ""))
    assert posted.status_code == 202, posted.text

    admin = {"Authorization": f"Bearer {ADMIN_KEY}"}
    deadline = time.monotonic() + 60
    touches: list[dict] = []
    while time.monotonic() < deadline:
        response = httpx.get(stack.url("gateway") + "/api/v1/customers/e2e-customer/touches", headers=admin)
        assert response.status_code == 200, response.text
        touches = response.json()
        if touches:
            break
        time.sleep(0.3)
    assert len(touches) == 1, "no follow-up touch appeared within 60 s"
    touch = touches[0]
    assert touch["plan"] == "post_purchase_follow_up"
    assert touch["status"] == "scheduled"
    due = datetime.fromisoformat(touch["due_at"].replace("Z", "+00:00"))
    assert due == occurred + timedelta(days=2, hours=6)

    file = httpx.get(stack.url("gateway") + "/api/v1/customers/e2e-customer", headers=admin)
    assert file.status_code == 200
    purchases = file.json()["purchases"]
    assert purchases["order_count"] == 1
    assert purchases["revenue"] in ("88.8", "88.80")
    assert datetime.fromisoformat(purchases["first_purchase_at"].replace("Z", "+00:00")) == occurred
    assert datetime.fromisoformat(purchases["last_purchase_at"].replace("Z", "+00:00")) == occurred


def test_gateway_requires_a_known_api_key(stack: RunningStack) -> None:
    url = stack.url("gateway") + "/api/v1/customers/e2e-customer"
    missing = httpx.get(url)
    assert missing.status_code == 401 and "API key" in missing.json()["error"]
    wrong = httpx.get(url, headers={"Authorization": "Bearer nope"})
    assert wrong.status_code == 401
    unknown = httpx.get(stack.url("gateway") + "/api/v1/customers/nobody", headers={"X-API-Key": ADMIN_KEY})
    assert unknown.status_code == 404 and "nobody" in unknown.json()["error"]


def test_internal_apis_refuse_callers_without_the_service_token(stack: RunningStack) -> None:
    response = httpx.get(stack.url("scoring") + "/internal/v1/customers/e2e-customer")
    assert response.status_code == 401
