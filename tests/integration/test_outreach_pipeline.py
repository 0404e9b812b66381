"""The outreach process as it runs (the app's lifespan: consumer, dispatcher, planner, API) on a
real broker, real databases, a real SMTP server: customer-file changes become touches, intake
events act at once (complaints, consent, conversion), erasure forgets, and the internal API lets
operators steer care plans, templates, touches, tasks and reports."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

import asyncpg
import httpx
import pytest
from aiokafka import AIOKafkaProducer

from services.outreach.api import create_app
from services.outreach.policy import in_holdout
from services.outreach.settings import OutreachSettings
from shared.contracts import (
    ConsentEvent,
    ConsentPayload,
    CustomerCause,
    CustomerErasedEvent,
    CustomerErasedPayload,
    CustomerSnapshot,
    CustomerUpdatedEvent,
    CustomerUpdatedPayload,
    InteractionEvent,
    InteractionPayload,
    PurchaseEvent,
    PurchasePayload,
    to_wire,
)
from shared.settings import DEV_INTERNAL_TOKEN
from shared.topics import CUSTOMERS, EVENTS, TOUCHES
from tests.conftest import _fresh_pg_database
from tests.integration.test_outreach_dispatch import SmtpRecorder
from tests.support import Broker, eventually, read_topic

pytestmark = pytest.mark.broker
HEADERS = {"X-Huitou-Internal-Token": DEV_INTERNAL_TOKEN}


def daytime_zone() -> str:
    """A fixed-offset zone where it is early afternoon right now, so quiet hours never interfere."""
    now = datetime.now(UTC)
    for offset in range(-12, 15):
        name = f"Etc/GMT{'+' if offset <= 0 else '-'}{abs(offset)}" if offset else "UTC"
        if 13 <= now.astimezone(ZoneInfo(name)).hour < 16:
            return name
    raise AssertionError("no zone found")


@dataclass
class Running:
    api: httpx.AsyncClient
    broker: Broker
    smtp: SmtpRecorder
    settings: OutreachSettings

    async def produce(self, topic: str, *events: Any) -> None:
        producer = AIOKafkaProducer(bootstrap_servers=self.broker.bootstrap, acks="all")
        await producer.start()
        try:
            for event in events:
                await producer.send_and_wait(topic, to_wire(event), key=event.customer_id.encode())
        finally:
            await producer.stop()

    async def touches(self, customer_id: str) -> list[dict[str, Any]]:
        response = await self.api.get(f"/internal/v1/customers/{customer_id}/touches")
        assert response.status_code == 200, response.text
        touches: list[dict[str, Any]] = response.json()
        return touches

    async def touch_of(self, customer_id: str, plan: str, status: str | None = None) -> dict[str, Any]:
        async def found() -> dict[str, Any] | None:
            return next(
                (
                    t
                    for t in await self.touches(customer_id)
                    if t["plan"] == plan and (status is None or t["status"] == status)
                ),
                None,
            )

        return await eventually(found, timeout=45, what=f"{plan} touch ({status or 'any'}) for {customer_id}")


@pytest.fixture
async def outreach(broker: Broker, database_url: str) -> AsyncIterator[Running]:
    async with running_outreach(broker, database_url) as running:
        yield running


@asynccontextmanager
async def running_outreach(broker: Broker, database_url: str, **overrides: Any) -> AsyncIterator[Running]:
    """The outreach app's lifespan on a real broker, database and SMTP server, with fast clocks."""
    smtp = SmtpRecorder().start()
    settings = OutreachSettings(
        **{
            "kafka_bootstrap_servers": broker.bootstrap,
            "database_url": database_url,
            "smtp_port": smtp.port,
            "dispatch_interval_seconds": 0.2,
            "plan_refresh_seconds": 0.2,
            "census_interval_seconds": 0.5,
            "holdout_share": 0.05,
            **overrides,
        }
    )
    app = create_app(settings)
    try:
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://outreach", headers=HEADERS) as api:
                yield Running(api, broker, smtp, settings)
    finally:
        smtp.stop()


def customer_id(prefix: str, settings: OutreachSettings) -> str:
    return next(
        f"{prefix}-{i}"
        for i in range(1000)
        if not in_holdout(f"{prefix}-{i}", salt=settings.holdout_salt, share=settings.holdout_share)
    )


def snapshot(**fields: Any) -> CustomerSnapshot:
    base: dict[str, Any] = {
        "email": "ana@example.com",
        "first_name": "Ana",
        "locale": "en",
        "timezone": daytime_zone(),
        "consents": {"email:marketing": True},
    }
    return CustomerSnapshot(**{**base, **fields})


def updated(
    cid: str,
    version: int,
    cause_type: str,
    snap: CustomerSnapshot,
    *,
    order_id: str | None = None,
    occurred: datetime | None = None,
    kind: str | None = None,
) -> CustomerUpdatedEvent:
    occurred = occurred or datetime.now(UTC) - timedelta(minutes=1)
    return CustomerUpdatedEvent(
        event_id=f"cu-{cid}-{version}",
        customer_id=cid,
        occurred_at=occurred,
        payload=CustomerUpdatedPayload(
            version=version,
            cause=CustomerCause(
                event_id=f"in-{cid}-{version}",
                type=cause_type,
                occurred_at=occurred,
                order_id=order_id,
                amount=Decimal("42.00") if order_id else None,
                interaction_kind=kind,
            ),
            snapshot=snap,
        ),
    )


async def test_customer_file_changes_become_touches_once_with_lifecycle_events(outreach: Running) -> None:
    cid = customer_id("flow", outreach.settings)
    first = updated(cid, 1, "purchase", snapshot(order_count=1), order_id="o-1")
    await outreach.produce(CUSTOMERS, first, first)  # delivered twice: planned once
    follow_up = await outreach.touch_of(cid, "post_purchase_follow_up")
    welcome = await outreach.touch_of(cid, "welcome")
    occurred = first.payload.cause.occurred_at
    assert datetime.fromisoformat(follow_up["due_at"]) == occurred + timedelta(days=3)
    assert datetime.fromisoformat(welcome["due_at"]) == occurred + timedelta(hours=1)
    assert follow_up["status"] == "scheduled" and follow_up["purpose"] == "marketing"
    # A backfilled purchase from last year gets no follow-up.
    old = updated(
        cid, 2, "purchase", snapshot(order_count=2), order_id="o-old", occurred=datetime.now(UTC) - timedelta(days=365)
    )
    old = old.model_copy(
        update={
            "payload": old.payload.model_copy(
                update={"cause": old.payload.cause.model_copy(update={"historical": True})}
            )
        }
    )
    await outreach.produce(CUSTOMERS, old)

    async def lifecycle() -> list[dict[str, Any]] | None:
        records = await read_topic(outreach.broker.bootstrap, TOUCHES, expect_at_least=2, timeout=5)
        mine = [json.loads(r.value) for r in records if json.loads(r.value)["customer_id"] == cid]
        return mine if len(mine) >= 2 else None

    events = await eventually(lifecycle, timeout=30, what="touch lifecycle on huitou.touches")
    assert sorted(e["payload"]["plan"] for e in events) == ["post_purchase_follow_up", "welcome"]
    assert {e["payload"]["status"] for e in events} == {"scheduled"}
    touches = await outreach.touches(cid)
    assert sorted(t["plan"] for t in touches) == ["post_purchase_follow_up", "welcome"]


async def test_a_complaint_acts_at_once_opens_a_task_and_a_purchase_converts_the_touch(outreach: Running) -> None:
    cid = customer_id("complaint", outreach.settings)
    await outreach.produce(CUSTOMERS, updated(cid, 1, "identify", snapshot(order_count=1)))
    await outreach.touch_of(cid, "welcome")
    complaint = InteractionEvent(
        event_id=f"complaint-{cid}",
        customer_id=cid,
        occurred_at=datetime.now(UTC),
        payload=InteractionPayload(kind="complaint", complaint_id="K-7", text="The tea arrived cold."),
    )
    await outreach.produce(EVENTS, complaint)
    recovery = await outreach.touch_of(cid, "complaint_recovery", "sent")
    mail = next(m for m in outreach.smtp.messages if m["Message-ID"] == f"<{recovery['touch_id']}@huitou.local>")
    assert "K-7" in mail.get_content() and mail["List-Unsubscribe"] is None  # transactional: no unsubscribe

    tasks = (await outreach.api.get("/internal/v1/tasks", params={"customer_id": cid, "status": "open"})).json()
    [task] = tasks["items"]
    assert task["kind"] == "complaint_recovery" and "cold" in task["summary"]
    resolved = await outreach.api.post(
        f"/internal/v1/tasks/{task['task_id']}/resolve", json={"by": "lin", "resolution": "Sent a fresh pack."}
    )
    assert resolved.status_code == 200 and resolved.json()["status"] == "resolved"
    again = await outreach.api.post(
        f"/internal/v1/tasks/{task['task_id']}/resolve", json={"by": "lin", "resolution": "again"}
    )
    assert again.status_code == 409 and "already resolved" in again.json()["error"]

    purchase = PurchaseEvent(
        event_id=f"buy-{cid}",
        customer_id=cid,
        occurred_at=datetime.now(UTC),
        payload=PurchasePayload(order_id="o-after", amount=Decimal("66.00")),
    )
    await outreach.produce(EVENTS, purchase)
    converted = await outreach.touch_of(cid, "complaint_recovery", "converted")
    assert Decimal(converted["revenue"]) == Decimal("66.00") and converted["converted_order_id"] == "o-after"


async def test_consent_events_and_unsubscribe_links_stop_marketing(outreach: Running) -> None:
    cid = customer_id("consent", outreach.settings)
    await outreach.produce(CUSTOMERS, updated(cid, 1, "identify", snapshot()))
    await outreach.touch_of(cid, "welcome")
    revoke = ConsentEvent(
        event_id=f"consent-{cid}",
        customer_id=cid,
        occurred_at=datetime.now(UTC),
        payload=ConsentPayload(channel="all", purpose="marketing", granted=False),
    )
    await outreach.produce(EVENTS, revoke)

    async def recorded() -> list[dict[str, Any]] | None:
        export = (await outreach.api.get(f"/internal/v1/customers/{cid}/export")).json()
        return export["consents"] or None

    consents = await eventually(recorded, timeout=30, what="the consent event to be recorded")
    assert {c["channel"] for c in consents} == {"email", "sms", "push", "webhook"}
    assert not any(c["granted"] for c in consents)

    from services.outreach.dispatcher import unsubscribe_url
    from shared.contracts import Channel

    link = unsubscribe_url(outreach.settings, "someone-else", Channel.EMAIL)
    path = link.split("8003", 1)[1]
    page = await outreach.api.get(path)  # what a link scanner sees: a question, not a change
    assert page.status_code == 200 and '<form method="post"' in page.text and "Unsubscribed" not in page.text
    unchanged = (await outreach.api.get("/internal/v1/customers/someone-else/export")).json()
    assert unchanged["consents"] == []
    for _ in range(2):  # idempotent
        response = await outreach.api.post(path)
        assert response.status_code == 200 and "Unsubscribed" in response.text
    export = (await outreach.api.get("/internal/v1/customers/someone-else/export")).json()
    assert [(c["channel"], c["purpose"], c["granted"]) for c in export["consents"]] == [("email", "marketing", False)]
    for method in ("GET", "POST"):
        broken = await outreach.api.request(method, path[:-3] + "xyz")
        assert broken.status_code == 400 and "copy the whole link" in broken.text


async def test_erasure_forgets_the_customer_and_late_updates_do_not_bring_them_back(outreach: Running) -> None:
    cid = customer_id("erase", outreach.settings)
    await outreach.produce(CUSTOMERS, updated(cid, 1, "purchase", snapshot(order_count=1), order_id="o-1"))
    await outreach.touch_of(cid, "post_purchase_follow_up")
    erased = CustomerErasedEvent(
        event_id=f"erase-{cid}", customer_id=cid, occurred_at=datetime.now(UTC), payload=CustomerErasedPayload()
    )
    late = updated(cid, 1, "purchase", snapshot(order_count=1), order_id="o-1")
    late = late.model_copy(update={"event_id": f"late-{cid}"})
    await outreach.produce(CUSTOMERS, erased, late)

    async def forgotten() -> bool:
        return await outreach.touches(cid) == []

    await eventually(forgotten, timeout=30, what="erasure")
    export = (await outreach.api.get(f"/internal/v1/customers/{cid}/export")).json()
    assert export["snapshot"] is None and export["touches"] == [] and export["consents"] == []
    other = customer_id("erase-api", outreach.settings)
    await outreach.produce(CUSTOMERS, updated(other, 1, "purchase", snapshot(order_count=1), order_id="o-1"))
    await outreach.touch_of(other, "post_purchase_follow_up")
    deleted = await outreach.api.delete(f"/internal/v1/customers/{other}")
    assert deleted.status_code == 200 and deleted.json()["deleted"]["touches"] == 2
    assert await outreach.touches(other) == []


@pytest.mark.postgres
async def test_an_erasure_that_loses_a_deadlock_answers_503_and_erases_on_retry(
    broker: Broker, pg_base_url: str
) -> None:
    """Another transaction (a dispatcher claiming the customer's touches, a consumer batch) may
    lock the same rows in the other order. PostgreSQL breaks the deadlock by aborting one side;
    when that is the operator's DELETE, it answers 503 to retry, not 500, keeps everything, and
    the retry erases."""
    url = await _fresh_pg_database(pg_base_url)
    async with running_outreach(broker, url) as outreach:
        cid = customer_id("deadlock", outreach.settings)
        await outreach.produce(CUSTOMERS, updated(cid, 1, "purchase", snapshot(order_count=1), order_id="o-1"))
        await outreach.touch_of(cid, "post_purchase_follow_up")
        held = len(await outreach.touches(cid))
        other = await asyncpg.connect(url.replace("postgresql+asyncpg://", "postgresql://"))
        try:
            async with other.transaction():
                await other.execute("SELECT 1 FROM outreach.touches WHERE customer_id = $1 FOR UPDATE", cid)
                erasure = asyncio.create_task(outreach.api.delete(f"/internal/v1/customers/{cid}"))

                async def erasure_waits() -> bool:
                    waiting = await other.fetchval(
                        "SELECT count(*) FROM pg_stat_activity"
                        " WHERE datname = current_database() AND wait_event_type = 'Lock'"
                    )
                    return bool(waiting)

                # The erasure locked the customer's row, then waits for the touches ...
                await eventually(erasure_waits, timeout=30, what="the erasure waiting for the touches")
                # ... which the other side holds while it now wants the customer's row: a deadlock.
                # The erasure has waited longer, so its check finds the cycle first and it is aborted.
                await other.execute("SELECT 1 FROM outreach.customers WHERE customer_id = $1 FOR UPDATE", cid)
                answer = await asyncio.wait_for(erasure, 30)
        finally:
            await other.close()
        assert answer.status_code == 503, answer.text
        assert answer.json() == {"error": "the database is unavailable or busy; retry shortly", "retryable": True}
        assert answer.headers["Retry-After"] == "1"
        assert len(await outreach.touches(cid)) == held  # rolled back: nothing half-erased
        retried = await outreach.api.delete(f"/internal/v1/customers/{cid}")
        assert retried.status_code == 200, retried.text
        assert retried.json()["deleted"]["touches"] == held
        assert await outreach.touches(cid) == []


async def test_operators_steer_care_plans_templates_touches_and_reports(outreach: Running) -> None:
    api = outreach.api
    assert (
        await httpx.AsyncClient(transport=api._transport, base_url="http://outreach").get("/internal/v1/care-plans")
    ).status_code == 401
    plans = (await api.get("/internal/v1/care-plans")).json()
    assert len(plans) >= 14 and all(p["origin"] == "default" for p in plans)

    birthday = (await api.get("/internal/v1/care-plans/birthday")).json()
    changed = {**birthday["definition"], "priority": 90}
    updated_plan = await api.put("/internal/v1/care-plans/birthday", json=changed, params={"by": "lin"})
    assert updated_plan.status_code == 200 and updated_plan.json()["version"] == 2
    assert updated_plan.json()["origin"] == "operator"
    versions = (await api.get("/internal/v1/care-plans/birthday/versions")).json()
    assert [v["version"] for v in versions] == [2, 1] and versions[0]["created_by"] == "lin"

    bad = await api.post(
        "/internal/v1/care-plans",
        json={"name": "x", "trigger": {}, "channels": ["fax"], "template": "nope", "purpose": "marketing"},
    )
    assert bad.status_code == 422
    problems = " ".join(bad.json()["problems"])
    assert "name" in problems and "channels.0" in problems and "exactly one of event, change or calendar" in problems
    missing_template = {**changed, "name": "vip_birthday", "template": "no_such_template"}
    refused = await api.post("/internal/v1/care-plans", json=missing_template)
    assert refused.status_code == 422 and "does not exist" in refused.json()["problems"][0]
    created = await api.post("/internal/v1/care-plans", json={**missing_template, "template": "birthday"})
    assert created.status_code == 201 and created.json()["version"] == 1
    assert (
        await api.post("/internal/v1/care-plans", json={**missing_template, "template": "birthday"})
    ).status_code == 409
    in_use = await api.delete("/internal/v1/templates/birthday")
    assert in_use.status_code == 409 and "vip_birthday" in in_use.json()["plans"]
    assert (await api.delete("/internal/v1/care-plans/vip_birthday")).status_code == 204
    assert (await api.get("/internal/v1/care-plans/vip_birthday")).status_code == 404

    syntax = await api.put("/internal/v1/templates/birthday", json={"locales": {"en": {"body": "{% if %}"}}})
    assert syntax.status_code == 422 and "locales.en.body" in syntax.json()["problems"][0]

    cid = customer_id("preview", outreach.settings)
    await outreach.produce(
        CUSTOMERS,
        updated(
            cid,
            1,
            "identify",
            snapshot(first_name="Zhang", locale="zh-CN", value_tier="A", communication_style="friendly"),
        ),
    )
    await outreach.touch_of(cid, "welcome")
    preview = await api.post("/internal/v1/care-plans/birthday/preview", json={"customer_id": cid})
    assert preview.status_code == 200, preview.text
    body = preview.json()
    assert body["locale"] == "zh-CN" and body["tone"] == "friendly" and "Zhang" in body["subject"]
    assert "BDAY-A" in body["body"]
    english = await api.post("/internal/v1/care-plans/birthday/preview", json={"customer_id": cid, "locale": "en"})
    assert "birthday" in english.json()["body"].lower()
    draft = {"en": {"subject": "Draft for {{ customer.display_name }}", "body": "Unsaved {{ offer.code }}"}}
    drafted = await api.post(
        "/internal/v1/care-plans/birthday/preview", json={"customer_id": cid, "locale": "en", "draft_locales": draft}
    )
    assert drafted.status_code == 200, drafted.text
    assert drafted.json()["subject"] == "Draft for Zhang" and drafted.json()["body"] == "Unsaved BDAY-A"
    stored = (await api.get("/internal/v1/templates/birthday")).json()
    assert "Draft" not in stored["locales"]["en"]["subject"]  # a draft preview stores nothing
    broken = await api.post(
        "/internal/v1/care-plans/birthday/preview",
        json={"customer_id": cid, "draft_locales": {"en": {"subject": "Hi {{ customer.", "body": "x"}}},
    )
    assert broken.status_code == 422 and "locales.en.subject" in broken.json()["problems"][0]
    unknown = await api.post("/internal/v1/care-plans/birthday/preview", json={"customer_id": "nobody"})
    assert unknown.status_code == 404 and "nobody" in unknown.json()["error"]

    sent = await api.post(
        "/internal/v1/care-plans/birthday/test-send", json={"to": "qa@example.com", "customer_id": cid}
    )
    assert sent.status_code == 200, sent.text
    test_mail = next(m for m in outreach.smtp.messages if m["Message-ID"] == sent.json()["message_id"])
    assert test_mail["To"] == "qa@example.com" and str(test_mail["Subject"]).startswith("[TEST]")

    page = (await api.get("/internal/v1/touches", params={"customer_id": cid, "limit": 1})).json()
    assert page["total"] >= 1 and len(page["items"]) == 1
    assert (await api.get("/internal/v1/touches", params={"status": "bogus"})).status_code == 422
    welcome = await outreach.touch_of(cid, "welcome")
    cancelled = await api.post(f"/internal/v1/touches/{welcome['touch_id']}/cancel", json={"by": "lin"})
    assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled"
    assert (await api.post(f"/internal/v1/touches/{welcome['touch_id']}/approve", json={})).status_code == 409
    detail = (await api.get(f"/internal/v1/touches/{welcome['touch_id']}")).json()
    assert detail["attempt_log"] == [] and detail["context"]["cause"]["type"] == "identify"

    report = (await api.get("/internal/v1/reports/touches")).json()
    assert {"plan": "welcome", "status": "cancelled", "count": 1} in report
    assert (await api.get("/internal/v1/reports/lift")).status_code == 200
    assert (await api.get("/internal/v1/reports/lift", params={"since": "2026-01-01T00:00:00"})).status_code == 422
    assert (await api.get("/internal/v1/suppressions")).json()["total"] >= 0
    schema = (await api.get("/openapi.json")).json()
    assert "/internal/v1/care-plans/{name}/preview" in schema["paths"]
    assert "/public/v1/unsubscribe/{token}" in schema["paths"]
