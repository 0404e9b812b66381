"""The dispatcher against a real SMTP server (aiosmtpd), a real local webhook receiver and real
databases (SQLite and PostgreSQL): policy at send time, retries, template errors, crash recovery
and — on PostgreSQL — concurrent dispatchers. The clock is handed in, so quiet hours and retries
are tested without waiting for them.

The SMTP and webhook receivers defined here are reused by the other outreach integration tests.
"""

from __future__ import annotations

import asyncio
import email
import email.policy
import json
import threading
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from email.message import EmailMessage
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest
from aiosmtpd.controller import Controller
from sqlalchemy import func, select

from services.outreach import repository
from services.outreach.api import MIGRATIONS, build_adapters
from services.outreach.care import plan_update
from services.outreach.dispatcher import Dispatcher
from services.outreach.planning import PlanCatalog, apply_planned
from services.outreach.policy import in_holdout
from services.outreach.settings import OutreachSettings
from services.outreach.signing import verify_webhook_signature
from services.outreach.tables import outbox, suppressions, touch_attempts
from shared.contracts import CustomerCause, CustomerSnapshot, CustomerUpdatedPayload, TouchStatus
from shared.db import create_engine, migrate, session_factory, transaction
from shared.ledger import enqueue
from shared.observability import ServiceMetrics
from tests.support import free_port

SECRET = "webhook-secret-for-tests-0123456789"
NOON_SHANGHAI = datetime(2026, 11, 23, 4, 0, tzinfo=UTC)  # 12:00 local, a Monday


# --- real receivers ---------------------------------------------------------------------------


class SmtpRecorder:
    """An aiosmtpd server on a free port that keeps every message it accepted."""

    def __init__(self, port: int | None = None) -> None:
        self.port = port or free_port()
        self.messages: list[EmailMessage] = []
        self.delay = 0.0
        self._controller: Controller | None = None

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        raw = envelope.original_content or envelope.content
        self.messages.append(email.message_from_bytes(raw, policy=email.policy.default))  # type: ignore[arg-type]
        if self.delay:
            await asyncio.sleep(self.delay)
        return "250 Message accepted for delivery"

    def start(self) -> SmtpRecorder:
        self._controller = Controller(self, hostname="127.0.0.1", port=self.port)
        self._controller.start()
        return self

    def stop(self) -> None:
        if self._controller is not None:
            self._controller.stop()
            self._controller = None

    def message_ids(self) -> list[str]:
        return [str(m["Message-ID"]) for m in self.messages]


@dataclass
class WebhookReceiver:
    """A local HTTP receiver that verifies the HMAC signature and deduplicates by Idempotency-Key,
    as a provider does. ``answers`` queues status codes to answer with (then 200)."""

    secret: str = SECRET
    answers: list[int] = field(default_factory=list)
    requests: list[dict[str, Any]] = field(default_factory=list)
    delivered: dict[str, dict[str, Any]] = field(default_factory=dict)
    port: int = field(default_factory=free_port)

    def __post_init__(self) -> None:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                signed = verify_webhook_signature(
                    receiver.secret, body, self.headers.get("X-Huitou-Signature", ""), now=int(time.time())
                )
                key = self.headers.get("Idempotency-Key", "")
                status = receiver.answers.pop(0) if receiver.answers else 200
                if not signed:
                    status = 401
                receiver.requests.append({"key": key, "signed": signed, "status": status, "body": json.loads(body)})
                if 200 <= status < 300:
                    receiver.delivered.setdefault(key, json.loads(body))
                self.send_response(status)
                self.end_headers()
                self.wfile.write(b"{}")

            def log_message(self, *args: Any) -> None:
                return None

        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hooks"

    def start(self) -> WebhookReceiver:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


# --- harness ----------------------------------------------------------------------------------


@dataclass
class Clock:
    now: datetime = NOON_SHANGHAI

    def __call__(self) -> datetime:
        return self.now

    def advance(self, delta: timedelta) -> None:
        self.now += delta


@dataclass
class Harness:
    settings: OutreachSettings
    sessions: Any
    catalog: PlanCatalog
    smtp: SmtpRecorder
    hooks: WebhookReceiver
    clock: Clock
    client: httpx.AsyncClient
    dispatchers: list[Dispatcher] = field(default_factory=list)

    def dispatcher(self) -> Dispatcher:
        adapters = build_adapters(self.settings, self.client)
        dispatcher = Dispatcher(
            self.sessions,
            self.settings,
            self.catalog,
            adapters,
            None,
            ServiceMetrics(),
            clock=self.clock,
            jitter=lambda: 1.0,
        )
        self.dispatchers.append(dispatcher)
        return dispatcher

    async def purchase(
        self, customer_id: str, snapshot: CustomerSnapshot, order_id: str = "o-1", plan: str = "post_purchase_follow_up"
    ) -> str:
        """Remember the customer and plan the touch a purchase calls for, due now."""
        book = (await self.catalog.current()).book
        payload = CustomerUpdatedPayload(
            version=1,
            cause=CustomerCause(
                event_id=f"ev-{customer_id}-{order_id}",
                type="purchase",
                occurred_at=self.clock.now - timedelta(days=3),
                order_id=order_id,
                amount=Decimal("88.80"),
            ),
            snapshot=snapshot,
        )
        planned = [p for p in plan_update(customer_id, payload, book, now=self.clock.now) if p.plan == plan]
        assert len(planned) == 1
        async with transaction(self.sessions) as session:
            await repository.remember_customer(session, customer_id, 1, snapshot, self.clock.now)
            for message in await apply_planned(
                session,
                planned[0],
                cause_event_id=payload.cause.event_id,
                book=book,
                settings=self.settings,
                now=self.clock.now,
                snapshot=snapshot,
            ):
                await enqueue(session, outbox, message)
        return repository.touch_id_for(planned[0].idempotency_key)

    async def touch(self, touch_id: str) -> dict[str, Any]:
        async with self.sessions() as session:
            row = await repository.get_touch(session, touch_id)
        assert row is not None
        return row

    async def lifecycle(self, touch_id: str) -> list[str]:
        async with self.sessions() as session:
            rows = (await session.execute(select(outbox.c.value).order_by(outbox.c.id))).scalars().all()
        events = [json.loads(v) for v in rows]
        return [e["payload"]["status"] for e in events if e["payload"]["touch_id"] == touch_id]


@pytest.fixture
async def harness(database_url: str) -> AsyncIterator[Harness]:
    smtp = SmtpRecorder().start()
    hooks = WebhookReceiver().start()
    settings = OutreachSettings(
        database_url=database_url,
        smtp_port=smtp.port,
        sms_webhook_url=hooks.url,
        webhook_url=hooks.url,
        webhook_secret=SECRET,
        unsubscribe_secret="unsubscribe-secret-0123456789",
        holdout_share=0.05,
        retry_base=timedelta(seconds=30),
        retry_cap=timedelta(minutes=10),
        dispatch_lease=timedelta(seconds=30),
        max_attempts=4,
        smtp_timeout_seconds=3,
    )
    engine = create_engine(database_url, "outreach")
    await migrate(engine, MIGRATIONS, "outreach")
    sessions = session_factory(engine)
    catalog = PlanCatalog(sessions, settings)
    await catalog.seed_defaults()
    client = httpx.AsyncClient(timeout=5)
    running = Harness(settings, sessions, catalog, smtp, hooks, Clock(), client)
    try:
        yield running
    finally:
        for dispatcher in running.dispatchers:
            for adapter in dispatcher._adapters.values():
                await adapter.close()
        await client.aclose()
        smtp.stop()
        hooks.stop()
        await engine.dispose()


def consenting(**fields: Any) -> CustomerSnapshot:
    base: dict[str, Any] = {
        "email": "mei@example.cn",
        "phone": "+8613800000000",
        "first_name": "Mei",
        "locale": "zh-CN",
        "timezone": "Asia/Shanghai",
        "order_count": 2,
        "last_order_items": ["oolong 250g"],
        "consents": {"email:marketing": True, "sms:marketing": True},
    }
    return CustomerSnapshot(**{**base, **fields})


def not_held_out(prefix: str, settings: OutreachSettings) -> str:
    return next(
        f"{prefix}-{i}"
        for i in range(1000)
        if not in_holdout(f"{prefix}-{i}", salt=settings.holdout_salt, share=settings.holdout_share)
    )


# --- tests ------------------------------------------------------------------------------------


async def test_email_goes_out_once_with_a_deterministic_message_id_and_an_unsubscribe_link(harness: Harness) -> None:
    customer = not_held_out("mail", harness.settings)
    touch_id = await harness.purchase(customer, consenting())
    dispatcher = harness.dispatcher()
    assert await dispatcher.dispatch_once() == 1
    assert await dispatcher.dispatch_once() == 0  # nothing left: a second round sends nothing
    [mail] = harness.smtp.messages
    assert mail["Message-ID"] == f"<{touch_id}@huitou.local>"
    assert mail["To"] == "mei@example.cn" and "Mei" in str(mail["Subject"])
    assert "oolong 250g" in mail.get_content()
    assert "/public/v1/unsubscribe/" in mail["List-Unsubscribe"]
    touch = await harness.touch(touch_id)
    assert touch["status"] == "sent" and touch["attempts"] == 1 and touch["channel"] == "email"
    assert await harness.lifecycle(touch_id) == ["scheduled", "sent"]


async def test_quiet_hours_defer_to_the_local_morning_then_send(harness: Harness) -> None:
    customer = not_held_out("quiet", harness.settings)
    harness.clock.now = datetime(2026, 11, 23, 14, 30, tzinfo=UTC)  # 22:30 in Shanghai
    touch_id = await harness.purchase(customer, consenting())
    dispatcher = harness.dispatcher()
    await dispatcher.dispatch_once()
    touch = await harness.touch(touch_id)
    assert touch["status"] == "scheduled" and touch["reason"] == "deferred: quiet_hours"
    # Quiet hours end at 08:00, but the follow-up's own send window opens at 10:00 local.
    assert touch["due_at"] == datetime(2026, 11, 24, 2, 0, tzinfo=UTC)
    harness.clock.now = datetime(2026, 11, 24, 1, 0, tzinfo=UTC)
    assert await dispatcher.dispatch_once() == 0  # not due yet
    harness.clock.now = touch["due_at"]
    await dispatcher.dispatch_once()
    assert (await harness.touch(touch_id))["status"] == "sent"
    assert len(harness.smtp.messages) == 1


async def test_daily_cap_lets_the_higher_priority_touch_go_and_defers_the_other(harness: Harness) -> None:
    customer = not_held_out("cap", harness.settings)
    snapshot = consenting(order_count=1)
    follow_up = await harness.purchase(customer, snapshot, order_id="o-1")
    # welcome is transactional: bypasses the marketing cap. A second follow-up collides.
    second = await harness.purchase(customer, snapshot, order_id="o-2")
    welcome = await harness.purchase(customer, snapshot, order_id="o-1", plan="welcome")
    dispatcher = harness.dispatcher()
    await dispatcher.dispatch_once()
    states = {t: (await harness.touch(t))["status"] for t in (follow_up, second, welcome)}
    assert states[welcome] == "sent"
    assert sorted([states[follow_up], states[second]]) == ["scheduled", "sent"]
    waiting = follow_up if states[follow_up] == "scheduled" else second
    deferred = await harness.touch(waiting)
    assert deferred["reason"].startswith("deferred: frequency_cap: day") or "priority" in deferred["reason"]
    assert deferred["due_at"] == datetime(2026, 11, 24, 2, 0, tzinfo=UTC)  # next local day, 10:00 window
    assert len(harness.smtp.messages) == 2


async def test_consent_revoked_between_scheduling_and_sending_suppresses_with_the_reason(harness: Harness) -> None:
    customer = not_held_out("revoke", harness.settings)
    touch_id = await harness.purchase(customer, consenting(consents={"email:marketing": True}))
    async with transaction(harness.sessions) as session:
        await repository.record_consent(
            session, customer, "email", "marketing", False, harness.clock.now, "consent_event", "ev-revoke"
        )
    await harness.dispatcher().dispatch_once()
    touch = await harness.touch(touch_id)
    assert touch["status"] == "suppressed" and touch["reason"] == "no_consent: email, sms (marketing)"
    assert harness.smtp.messages == []
    async with harness.sessions() as session:
        reasons = (
            (await session.execute(select(suppressions.c.reason).where(suppressions.c.touch_id == touch_id)))
            .scalars()
            .all()
        )
    assert reasons == ["no_consent: email, sms (marketing)"]
    assert await harness.lifecycle(touch_id) == ["scheduled", "suppressed"]


async def test_smtp_down_then_up_retries_with_backoff_and_sends_one_email(harness: Harness) -> None:
    customer = not_held_out("down", harness.settings)
    touch_id = await harness.purchase(customer, consenting(consents={"email:marketing": True}))
    harness.smtp.stop()
    dispatcher = harness.dispatcher()
    await dispatcher.dispatch_once()
    touch = await harness.touch(touch_id)
    assert touch["status"] == "scheduled" and touch["attempts"] == 1 and "unreachable" in touch["reason"]
    assert touch["due_at"] == harness.clock.now + timedelta(seconds=30)
    harness.clock.advance(timedelta(seconds=31))
    await dispatcher.dispatch_once()
    touch = await harness.touch(touch_id)
    assert touch["attempts"] == 2 and touch["due_at"] == harness.clock.now + timedelta(seconds=60)  # doubled
    harness.smtp.start()
    harness.clock.advance(timedelta(seconds=61))
    await dispatcher.dispatch_once()
    assert (await harness.touch(touch_id))["status"] == "sent"
    assert harness.smtp.message_ids() == [f"<{touch_id}@huitou.local>"]
    async with harness.sessions() as session:
        states = (
            (
                await session.execute(
                    select(touch_attempts.c.state)
                    .where(touch_attempts.c.touch_id == touch_id)
                    .order_by(touch_attempts.c.number)
                )
            )
            .scalars()
            .all()
        )
    assert states == ["failed", "failed", "sent"]


async def test_a_touch_that_keeps_failing_ends_failed(harness: Harness) -> None:
    customer = not_held_out("fail", harness.settings)
    touch_id = await harness.purchase(customer, consenting(consents={"email:marketing": True}))
    harness.smtp.stop()
    dispatcher = harness.dispatcher()
    for _ in range(harness.settings.max_attempts):
        await dispatcher.dispatch_once()
        harness.clock.advance(timedelta(minutes=11))
    touch = await harness.touch(touch_id)
    assert touch["status"] == "failed" and touch["reason"].startswith("failed after 4 attempt(s)")
    assert await harness.lifecycle(touch_id) == ["scheduled", "failed"]


async def test_template_error_fails_the_touch_visibly_and_sends_nothing(harness: Harness) -> None:
    customer = not_held_out("tmpl", harness.settings)
    touch_id = await harness.purchase(customer, consenting())
    broken = {
        "zh-CN": {"subject": "hi", "body": "{{ customer.no_such_field.deeper }}"},
        "en": {"subject": "hi", "body": "{{ 1 / 0 }}"},
    }
    async with transaction(harness.sessions) as session:
        await repository.save_template(
            session, "post_purchase_follow_up", broken, origin="operator", by="t", now=harness.clock.now
        )
    harness.catalog.invalidate()
    await harness.dispatcher().dispatch_once()
    touch = await harness.touch(touch_id)
    assert touch["status"] == "failed" and touch["reason"].startswith(
        "template_error: template post_purchase_follow_up"
    )
    assert "no_such_field" in touch["reason"]
    assert harness.smtp.messages == []
    assert await harness.lifecycle(touch_id) == ["scheduled", "failed"]


async def test_sms_goes_through_a_signed_webhook_and_a_provider_error_is_retried(harness: Harness) -> None:
    customer = not_held_out("sms", harness.settings)
    harness.hooks.answers = [503]
    touch_id = await harness.purchase(customer, consenting(email=None, consents={"sms:marketing": True}))
    dispatcher = harness.dispatcher()
    await dispatcher.dispatch_once()
    assert (await harness.touch(touch_id))["status"] == "scheduled"
    harness.clock.advance(timedelta(seconds=31))
    await dispatcher.dispatch_once()
    assert (await harness.touch(touch_id))["status"] == "sent"
    assert [r["status"] for r in harness.hooks.requests] == [503, 200]
    assert all(r["signed"] and r["key"] == touch_id for r in harness.hooks.requests)
    delivered = harness.hooks.delivered[touch_id]
    assert delivered["channel"] == "sms" and delivered["to"] == "+8613800000000" and "Mei" in delivered["body"]


async def test_interrupted_attempts_are_recovered_without_a_second_send(harness: Harness) -> None:
    settings = harness.settings
    dispatcher = harness.dispatcher()
    # 1. Died while preparing (nothing armed): retried after the lease, sent once.
    first = await harness.purchase(not_held_out("crash-a", settings), consenting())
    await dispatcher._claim()
    flight, outcome = await dispatcher._decide(first)
    assert outcome == "sending" and flight is not None
    assert (await harness.touch(first))["status"] == "sending"
    harness.clock.advance(settings.dispatch_lease + timedelta(seconds=1))
    assert await dispatcher.recover() == 1
    assert (await harness.touch(first))["status"] == "scheduled"
    await dispatcher.dispatch_once()
    assert harness.smtp.message_ids() == [f"<{first}@huitou.local>"]

    # 2. Died after the SMTP server had the whole message (armed, committed, not recorded):
    #    recorded as sent-unconfirmed, never resent.
    second = await harness.purchase(not_held_out("crash-b", settings), consenting())
    await dispatcher._claim()
    flight, _ = await dispatcher._decide(second)
    assert flight is not None
    prepared = await flight.adapter.prepare(flight.message)
    assert await dispatcher._arm(flight, prepared)
    await prepared.commit()
    harness.clock.advance(settings.dispatch_lease + timedelta(seconds=1))
    await dispatcher.recover()
    touch = await harness.touch(second)
    assert touch["status"] == "sent" and touch["reason"].startswith("unconfirmed")
    await dispatcher.dispatch_once()
    assert harness.smtp.message_ids().count(f"<{second}@huitou.local>") == 1

    # 3. Died mid-webhook: resent with the same Idempotency-Key; the provider keeps one.
    third = await harness.purchase(not_held_out("crash-c", settings), consenting(email=None))
    await dispatcher._claim()
    flight, _ = await dispatcher._decide(third)
    assert flight is not None
    prepared = await flight.adapter.prepare(flight.message)
    assert await dispatcher._arm(flight, prepared)
    await prepared.commit()
    harness.clock.advance(settings.dispatch_lease + timedelta(seconds=1))
    await dispatcher.recover()
    assert (await harness.touch(third))["status"] == "scheduled"
    await dispatcher.dispatch_once()
    assert (await harness.touch(third))["status"] == "sent"
    assert [r["key"] for r in harness.hooks.requests] == [third, third]
    assert list(harness.hooks.delivered) == [third]


async def test_holdout_gets_no_marketing_but_its_conversions_count_for_lift(harness: Harness) -> None:
    settings = harness.settings
    held = next(
        f"held-{i}"
        for i in range(10_000)
        if in_holdout(f"held-{i}", salt=settings.holdout_salt, share=settings.holdout_share)
    )
    treated = not_held_out("treated", settings)
    held_touch = await harness.purchase(held, consenting())
    treated_touch = await harness.purchase(treated, consenting())
    assert (await harness.touch(held_touch))["status"] == "suppressed"
    assert (await harness.touch(held_touch))["reason"] == "holdout"
    await harness.dispatcher().dispatch_once()
    assert harness.smtp.message_ids() == [f"<{treated_touch}@huitou.local>"]
    later = harness.clock.now + timedelta(days=1)
    async with transaction(harness.sessions) as session:
        converted = await repository.attribute_purchase(session, treated, "o-9", Decimal("120"), later, later)
        assert [r["touch_id"] for r in converted] == [treated_touch]
        assert await repository.attribute_purchase(session, treated, "o-9", Decimal("120"), later, later) == []
        await repository.attribute_purchase(session, held, "o-10", Decimal("50"), later, later)
        lift = await repository.lift_rows(session, None, None)
    rows = {(r["plan"], r["holdout"]): r for r in lift}
    assert rows[("post_purchase_follow_up", False)]["conversions"] == 1
    assert rows[("post_purchase_follow_up", False)]["revenue"] == Decimal("120")
    assert rows[("post_purchase_follow_up", True)]["conversions"] == 1
    assert (await harness.touch(treated_touch))["status"] == "converted"
    assert (await harness.touch(held_touch))["status"] == "suppressed"


async def test_a_costly_offer_waits_for_approval(harness: Harness) -> None:
    settings = harness.settings
    customer = not_held_out("offer", settings)
    book = (await harness.catalog.current()).book
    plan = book.get("win_back").plan.model_dump(mode="json", by_alias=True, exclude_none=True)
    plan["offer"]["approval_above"] = 10
    async with transaction(harness.sessions) as session:
        await repository.save_plan(
            session, "win_back", plan, origin="operator", action="updated", by="t", now=harness.clock.now
        )
    harness.catalog.invalidate()
    book = (await harness.catalog.current()).book
    from shared.contracts import FieldChange

    payload = CustomerUpdatedPayload(
        version=2,
        cause=CustomerCause(event_id="ev-lapse", type="clock", occurred_at=harness.clock.now - timedelta(hours=12)),
        snapshot=consenting(value_tier="A"),
        changes=[FieldChange(field="stage", before="at_risk", after="lapsed", reason="recency")],
    )
    [planned] = [p for p in plan_update(customer, payload, book, now=harness.clock.now) if p.plan == "win_back"]
    async with transaction(harness.sessions) as session:
        await repository.remember_customer(session, customer, 2, payload.snapshot, harness.clock.now)
        await apply_planned(
            session,
            planned,
            cause_event_id="ev-lapse",
            book=book,
            settings=settings,
            now=harness.clock.now,
            snapshot=payload.snapshot,
        )
    touch_id = repository.touch_id_for(planned.idempotency_key)
    assert (await harness.touch(touch_id))["status"] == "pending_approval"
    dispatcher = harness.dispatcher()
    assert await dispatcher.dispatch_once() == 0
    async with transaction(harness.sessions) as session:
        await repository.set_touch(session, touch_id, harness.clock.now, status="scheduled", approved_by="boss")
    await dispatcher.dispatch_once()
    [mail] = harness.smtp.messages
    assert "BACK-A" in mail.get_content()


@pytest.mark.postgres
async def test_concurrent_dispatchers_on_postgres_never_send_a_touch_twice(harness: Harness) -> None:
    if harness.settings.effective_database_url.startswith("sqlite"):
        pytest.skip("SKIP LOCKED claims are a PostgreSQL feature; SQLite runs one dispatcher")
    customers = [
        c
        for c in (f"pg-{i}" for i in range(200))
        if not in_holdout(c, salt=harness.settings.holdout_salt, share=harness.settings.holdout_share)
    ][:40]
    touch_ids = [await harness.purchase(c, consenting(email=f"{c}@example.cn")) for c in customers]
    harness.smtp.delay = 0.01
    first, second = harness.dispatcher(), harness.dispatcher()

    async def drain(dispatcher: Dispatcher) -> None:
        while await dispatcher.dispatch_once():
            pass

    await asyncio.gather(drain(first), drain(second), drain(first), drain(second))
    ids = harness.smtp.message_ids()
    assert sorted(ids) == sorted(f"<{t}@huitou.local>" for t in touch_ids)
    async with harness.sessions() as session:
        sent = await session.scalar(
            select(func.count()).select_from(touch_attempts).where(touch_attempts.c.state == "sent")
        )
    assert sent == len(touch_ids)
    statuses = {(await harness.touch(t))["status"] for t in touch_ids}
    assert statuses == {TouchStatus.SENT.value}


async def test_birthday_greetings_leave_at_ten_local_across_zones_and_a_dst_change(harness: Harness) -> None:
    from services.outreach.calendar_planner import CalendarPlanner

    settings = harness.settings
    shanghai, new_york = not_held_out("bday-sh", settings), not_held_out("bday-ny", settings)
    harness.clock.now = datetime(2026, 3, 7, 0, 0, tzinfo=UTC)  # New York springs forward on 8 March
    born = datetime(1990, 3, 8).date()
    for cid, zone in ((shanghai, "Asia/Shanghai"), (new_york, "America/New_York")):
        snapshot = consenting(email=f"{cid}@example.com", timezone=zone, birthday=born, locale="en")
        async with transaction(harness.sessions) as session:
            await repository.remember_customer(session, cid, 1, snapshot, harness.clock.now)
    planner = CalendarPlanner(harness.sessions, settings, harness.catalog, None, clock=harness.clock)
    assert await planner.scan_once() == 2
    assert await planner.scan_once() == 0  # idempotent: birthday:<customer>:2026 exists
    dispatcher = harness.dispatcher()

    async def sent_to() -> list[str]:
        await dispatcher.dispatch_once()
        return [str(m["To"]) for m in harness.smtp.messages]

    harness.clock.now = datetime(2026, 3, 8, 1, 59, tzinfo=UTC)
    assert await sent_to() == []
    harness.clock.now = datetime(2026, 3, 8, 2, 0, tzinfo=UTC)  # 10:00 in Shanghai
    assert await sent_to() == [f"{shanghai}@example.com"]
    harness.clock.now = datetime(2026, 3, 8, 13, 59, tzinfo=UTC)
    assert await sent_to() == [f"{shanghai}@example.com"]
    harness.clock.now = datetime(2026, 3, 8, 14, 0, tzinfo=UTC)  # 10:00 EDT — it was UTC-5 the day before
    assert await sent_to() == [f"{shanghai}@example.com", f"{new_york}@example.com"]
    assert "birthday" in str(harness.smtp.messages[1]["Subject"]).lower()
