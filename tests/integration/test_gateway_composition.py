"""The gateway composed over the real services: ingest, scoring and outreach run in this process
with their own lifespans, SQLite databases and a real broker; the gateway reaches them through
its ordinary HTTP client (mounted on their ASGI apps instead of sockets).

Data enters the way it does in production: events posted to ingest, folded by scoring, turned
into touches by outreach. The stack is shared by the tests of this module; each test uses its
own customer ids.
"""

from __future__ import annotations

import asyncio
import base64
import re
import uuid
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio
from fastapi import FastAPI

from services.gateway.api import create_app as create_gateway
from services.gateway.settings import GatewaySettings
from services.ingest.api import create_app as create_ingest
from services.ingest.settings import IngestSettings
from services.outreach.api import create_app as create_outreach
from services.outreach.settings import OutreachSettings
from services.scoring.api import create_app as create_scoring
from services.scoring.settings import ScoringSettings
from shared.kafka import ensure_topics
from tests.support import Broker, eventually, free_port

pytestmark = [pytest.mark.broker, pytest.mark.asyncio(loop_scope="module")]

ADMIN = "hk_composition_admin_key_0123456789"
# An upper bound only (it takes well under a second when the machine is idle): scoring's and
# outreach's consumers back off when SQLite is busy, which on a loaded CI box can take a while.
PIPELINE_TIMEOUT = 120
WRITE_KEY = "wk_composition_write_key_0123456789"


class ServiceRouter(httpx.AsyncBaseTransport):
    """Sends each request to the ASGI app named by its host (http://scoring/... → scoring)."""

    def __init__(self, apps: dict[str, FastAPI]) -> None:
        self.transports = {name: httpx.ASGITransport(app=app) for name, app in apps.items()}

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        return await self.transports[request.url.host].handle_async_request(request)


@dataclass
class Stack:
    gateway: httpx.AsyncClient  # as admin
    ingest: httpx.AsyncClient  # with the write key
    gateway_app: FastAPI
    apps: dict[str, FastAPI]
    issued: dict[str, str] = field(default_factory=dict)  # key name -> secret

    def as_key(self, key: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {key}"}

    async def key(self, role: str) -> str:
        name = f"{role}-{uuid.uuid4().hex[:8]}"
        response = await self.gateway.post("/api/v1/keys", json={"name": name, "role": role})
        assert response.status_code == 201, response.text
        self.issued[name] = str(response.json()["key"])
        return self.issued[name]

    async def post(self, *events: dict[str, Any]) -> None:
        response = await self.ingest.post("/v1/events", json=list(events))
        assert response.status_code == 202, response.text
        assert not response.json()["rejected"], response.text

    async def customer_file(self, customer_id: str, check: Any = bool) -> dict[str, Any]:
        async def ready() -> dict[str, Any] | None:
            response = await self.gateway.get(f"/api/v1/customers/{customer_id}")
            if response.status_code != 200:
                return None
            body: dict[str, Any] = response.json()
            return body if check(body) else None

        return await eventually(ready, PIPELINE_TIMEOUT, f"the customer file of {customer_id}")


def basic(key: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{key}:".encode()).decode()}


def purchase(customer_id: str, amount: str = "88.00", *, days_ago: float = 0.01, order: str | None = None) -> dict:
    occurred = datetime.now(UTC) - timedelta(days=days_ago)
    return {
        "event_id": f"e-{uuid.uuid4().hex}",
        "type": "purchase",
        "customer_id": customer_id,
        "occurred_at": occurred.isoformat(),
        "payload": {
            "order_id": order or f"o-{uuid.uuid4().hex[:10]}",
            "amount": amount,
            "currency": "CNY",
            "items": [{"sku": "oolong-250g", "name": "Oolong", "category": "tea", "quantity": 1}],
        },
    }


def identify(customer_id: str, **traits: Any) -> dict:
    return {
        "event_id": f"e-{uuid.uuid4().hex}",
        "type": "identify",
        "customer_id": customer_id,
        "occurred_at": (datetime.now(UTC) - timedelta(days=30)).isoformat(),
        "payload": {"traits": traits},
    }


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def stack(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Stack]:
    root: Path = tmp_path_factory.mktemp("composition")
    broker = Broker(free_port(), root / "broker.log")
    broker.start()
    try:
        await ensure_topics(broker.bootstrap)
        common: dict[str, Any] = {"kafka_bootstrap_servers": broker.bootstrap, "var_dir": root}
        apps = {
            "ingest": create_ingest(
                IngestSettings(database_url=f"sqlite+aiosqlite:///{root / 'ingest.db'}", write_key=WRITE_KEY, **common)
            ),
            "scoring": create_scoring(
                ScoringSettings(database_url=f"sqlite+aiosqlite:///{root / 'scoring.db'}", **common)
            ),
            "outreach": create_outreach(
                OutreachSettings(
                    database_url=f"sqlite+aiosqlite:///{root / 'outreach.db'}",
                    smtp_port=free_port(),  # nothing listens: sends fail and are retried, never delivered
                    **common,
                )
            ),
        }
        gateway_app = create_gateway(
            GatewaySettings(
                database_url=f"sqlite+aiosqlite:///{root / 'gateway.db'}",
                admin_key=ADMIN,
                scoring_url="http://scoring",
                outreach_url="http://outreach",
                ingest_url="http://ingest",
                downstream_timeout_seconds=10,
                rate_limit_per_second=1000,
                rate_limit_burst=10_000,
            ),
            transport=ServiceRouter(apps),
        )
        async with AsyncExitStack() as running:
            for app in [*apps.values(), gateway_app]:
                await running.enter_async_context(app.router.lifespan_context(app))
            for name in ("ingest", "scoring", "outreach"):
                producer = apps[name].state.runtime.producer
                await eventually(lambda p=producer: _ready(p), 30, f"{name}'s producer")
            gateway = await running.enter_async_context(
                httpx.AsyncClient(
                    transport=httpx.ASGITransport(app=gateway_app),
                    base_url="http://gateway",
                    headers={"Authorization": f"Bearer {ADMIN}"},
                    timeout=30,
                )
            )
            ingest = await running.enter_async_context(
                httpx.AsyncClient(
                    transport=httpx.ASGITransport(app=apps["ingest"]),
                    base_url="http://ingest",
                    headers=basic(WRITE_KEY),
                )
            )
            yield Stack(gateway, ingest, gateway_app, apps)
    finally:
        broker.stop()


async def _ready(producer: Any) -> bool:
    return bool(producer.ready)


def new_customer() -> str:
    return f"cust-{uuid.uuid4().hex[:10]}"


# --- customers -------------------------------------------------------------------------------


async def test_a_purchase_becomes_a_customer_file_and_touches_behind_the_gateway(stack: Stack) -> None:
    customer = new_customer()
    await stack.post(identify(customer, name="李雷", email="lilei@example.com", locale="zh-CN"), purchase(customer))
    file = await stack.customer_file(customer, lambda f: f["purchases"]["order_count"] == 1)
    assert file["customer_id"] == customer and file["name"] == "李雷"

    async def touches() -> list[dict[str, Any]] | None:
        response = await stack.gateway.get(f"/api/v1/customers/{customer}/touches")
        assert response.status_code == 200, response.text
        body = response.json()
        items: list[dict[str, Any]] = body["items"] if isinstance(body, dict) else body
        return items or None

    assert all(t["customer_id"] == customer for t in await eventually(touches, PIPELINE_TIMEOUT, "a touch"))


async def test_an_unknown_customer_is_the_services_own_404(stack: Stack) -> None:
    response = await stack.gateway.get("/api/v1/customers/nobody-at-all")
    assert response.status_code == 404
    assert "nobody-at-all" in response.json()["error"]


async def test_a_viewer_reads_but_cannot_write(stack: Stack) -> None:
    viewer = stack.as_key(await stack.key("viewer"))
    assert (await stack.gateway.get("/api/v1/customers/nobody", headers=viewer)).status_code == 404
    refused = await stack.gateway.post("/api/v1/sources", json={"name": "pos-x"}, headers=viewer)
    assert refused.status_code == 403


# --- sources and write keys for ingest -------------------------------------------------------


async def test_a_source_created_through_the_gateway_can_send_and_its_key_is_never_audited(stack: Stack) -> None:
    name = f"pos-{uuid.uuid4().hex[:6]}"
    created = await stack.gateway.post("/api/v1/sources", json={"name": name})
    assert created.status_code == 201, created.text
    key = created.json()["write_key"]
    customer = new_customer()
    accepted = await stack.ingest.post("/v1/events", json=purchase(customer), headers=basic(key))
    assert accepted.status_code == 202, accepted.text

    listed = await stack.gateway.get("/api/v1/sources")
    assert key not in listed.text and any(s["name"] == name for s in listed.json())

    rotated = await stack.gateway.post(f"/api/v1/sources/{name}/rotate")
    new_key = rotated.json()["write_key"]
    assert (await stack.ingest.post("/v1/events", json=purchase(customer), headers=basic(key))).status_code == 401
    disabled = await stack.gateway.post(f"/api/v1/sources/{name}/disable")
    assert disabled.json()["enabled"] is False
    refused = await stack.ingest.post("/v1/events", json=purchase(customer), headers=basic(new_key))
    assert refused.status_code == 403

    audit = await stack.gateway.get("/api/v1/audit", params={"target": f"/api/v1/sources/{name}", "limit": 100})
    actions = {entry["action"] for entry in audit.json()["items"]}
    assert actions == {"POST /api/v1/sources/{name}/rotate", "POST /api/v1/sources/{name}/disable"}
    everything = (await stack.gateway.get("/api/v1/audit", params={"limit": 500})).text
    assert key not in everything and new_key not in everything
    creation = [
        e
        for e in (await stack.gateway.get("/api/v1/audit", params={"target": "/api/v1/sources"})).json()["items"]
        if e["action"] == "POST /api/v1/sources" and e["after"] and e["after"]["name"] == name
    ]
    assert creation and creation[0]["after"]["write_key"] == "[secret]" and creation[0]["status"] == 201


async def test_the_services_validation_problems_reach_the_caller(stack: Stack) -> None:
    response = await stack.gateway.post("/api/v1/sources", json={"name": "no spaces allowed"})
    assert response.status_code == 422
    assert any("name" in problem for problem in response.json()["problems"])
    duplicate = await stack.gateway.post("/api/v1/sources", json={"name": "default"})
    assert duplicate.status_code == 409 and "rotate" in duplicate.json()["error"]


async def test_a_refused_write_is_audited_with_its_status(stack: Stack) -> None:
    await stack.gateway.post("/api/v1/sources/never-made/disable")
    entries = (await stack.gateway.get("/api/v1/audit", params={"target": "/api/v1/sources/never-made"})).json()
    assert entries["items"][0]["status"] == 404 and entries["items"][0]["after"] is None


async def test_concurrent_reads_do_not_interfere(stack: Stack) -> None:
    responses = await asyncio.gather(*(stack.gateway.get("/api/v1/sources") for _ in range(20)))
    assert {r.status_code for r in responses} == {200}


# --- customer edits, audited with the state before and after ---------------------------------


async def _filed_customer(stack: Stack, **traits: Any) -> str:
    customer = new_customer()
    await stack.post(identify(customer, **traits), purchase(customer, "120.00"))
    await stack.customer_file(customer, lambda f: f["purchases"]["order_count"] == 1)
    return customer


async def test_an_operator_edits_the_customer_file_and_every_edit_is_audited(stack: Stack) -> None:
    customer = await _filed_customer(stack, name="Emma Wilson", locale="en")
    operator = stack.as_key(key := await stack.key("operator"))
    base = f"/api/v1/customers/{customer}"
    tagged = await stack.gateway.post(f"{base}/tags", json={"tags": ["tea-lover"]}, headers=operator)
    assert tagged.json() == ["tea-lover"]
    note = await stack.gateway.post(f"{base}/notes", json={"text": "corner seat, two sugars"}, headers=operator)
    assert note.status_code == 201 and note.json()["author"] == key_name(stack, key)
    contact = await stack.gateway.post(f"{base}/contacts", json={"name": "Li Lei", "role": "buyer"}, headers=operator)
    assert contact.status_code == 201
    override = await stack.gateway.put(
        f"{base}/tier-override", json={"tier": "A", "reason": "loyal for ten years, refers friends"}, headers=operator
    )
    assert override.json()["tier_override"] == {"tier": "A", "reason": "loyal for ten years, refers friends"}
    file = (await stack.gateway.get(base)).json()
    assert file["tags"] == ["tea-lover"] and file["notes"][0]["text"] == "corner seat, two sugars"
    assert file["contacts"][0]["name"] == "Li Lei" and file["scores"]["value_tier"] == "A"

    entries = (await stack.gateway.get("/api/v1/audit", params={"customer_id": customer})).json()["items"]
    by_action = {entry["action"]: entry for entry in entries}
    assert set(by_action) == {
        "POST /api/v1/customers/{customer_id}/tags",
        "POST /api/v1/customers/{customer_id}/notes",
        "POST /api/v1/customers/{customer_id}/contacts",
        "PUT /api/v1/customers/{customer_id}/tier-override",
    }
    assert {entry["actor"] for entry in entries} == {key_name(stack, key)}
    tags = by_action["POST /api/v1/customers/{customer_id}/tags"]
    assert (tags["before"], tags["after"]) == ([], ["tea-lover"])
    tier = by_action["PUT /api/v1/customers/{customer_id}/tier-override"]
    assert tier["before"]["tier_override"] is None and tier["after"]["tier_override"]["tier"] == "A"

    released = await stack.gateway.delete(f"{base}/tier-override", params={"reason": "no"}, headers=operator)
    assert released.status_code == 422 and "reason" in " ".join(released.json()["problems"])  # scoring's rule
    released = await stack.gateway.delete(f"{base}/tier-override", params={"reason": "moved away"}, headers=operator)
    assert released.status_code == 200 and released.json()["tier_override"] is None
    removed = await stack.gateway.delete(f"{base}/notes/{note.json()['id']}", headers=operator)
    assert removed.status_code == 204 and removed.content == b""


def key_name(stack: Stack, key: str) -> str:
    return next(name for name, secret in stack.issued.items() if secret == key)


async def test_search_filters_and_pages_pass_through(stack: Stack) -> None:
    customers = [await _filed_customer(stack, name=f"Page {n}") for n in range(3)]
    for customer in customers:
        await stack.gateway.post(f"/api/v1/customers/{customer}/tags", json={"tags": ["paging-test"]})
    first = (await stack.gateway.get("/api/v1/customers", params={"tag": "paging-test", "limit": 2})).json()
    assert first["total"] == 3 and len(first["items"]) == 2 and first["next_offset"] == 2
    rest = (await stack.gateway.get("/api/v1/customers", params={"tag": "paging-test", "offset": 2})).json()
    assert {c["customer_id"] for c in first["items"] + rest["items"]} == set(customers)
    bad_sort = await stack.gateway.get("/api/v1/customers", params={"sort": "shoe_size"})
    assert bad_sort.status_code == 400 and "sort by one of" in bad_sort.json()["error"]
    bad_tier = await stack.gateway.get("/api/v1/customers", params={"value_tier": "Z"})
    assert bad_tier.status_code == 422 and "value_tier" in bad_tier.json()["problems"][0]  # checked at the gateway


# --- touches ---------------------------------------------------------------------------------


async def _a_scheduled_touch(stack: Stack) -> dict[str, Any]:
    """A post-purchase follow-up that is scheduled. A customer in the holdout (5% by default) gets
    it suppressed instead, so try another customer then."""
    for _ in range(5):
        customer = await _filed_customer(stack, name="王芳", locale="zh-CN")

        async def planned(customer: str = customer) -> list[dict[str, Any]] | None:
            page = (await stack.gateway.get("/api/v1/touches", params={"customer_id": customer})).json()
            items: list[dict[str, Any]] = page["items"]
            return items or None

        touches = await eventually(planned, PIPELINE_TIMEOUT, "a touch")
        scheduled = [t for t in touches if t["status"] == "scheduled"]
        if scheduled:
            return scheduled[0]
    raise AssertionError("five customers in a row got no scheduled touch")


async def test_cancelling_a_touch_names_the_operator_and_is_audited(stack: Stack) -> None:
    touch = await _a_scheduled_touch(stack)
    operator = stack.as_key(key := await stack.key("operator"))
    path = f"/api/v1/touches/{touch['touch_id']}"
    not_pending = await stack.gateway.post(f"{path}/approve", headers=operator)
    assert not_pending.status_code == 409 and "only pending_approval" in not_pending.json()["error"]
    cancelled = await stack.gateway.post(
        f"{path}/cancel", json={"reason": "customer asked for no email", "by": "someone-else"}, headers=operator
    )
    assert cancelled.status_code == 200, cancelled.text
    assert cancelled.json()["status"] == "cancelled"
    assert key_name(stack, key) in cancelled.json()["reason"] and "someone-else" not in cancelled.json()["reason"]
    again = await stack.gateway.post(f"{path}/cancel", headers=operator)
    assert again.status_code == 409

    entries = (await stack.gateway.get("/api/v1/audit", params={"target": path})).json()["items"]
    done = next(e for e in entries if e["status"] == 200)
    assert done["customer_id"] == touch["customer_id"]  # from the touch, though the path names none
    assert done["before"]["status"] == "scheduled" and done["after"]["status"] == "cancelled"
    assert [e["status"] for e in entries] == [409, 200, 409]


async def test_touch_filters_are_checked_by_outreach(stack: Stack) -> None:
    bad = await stack.gateway.get("/api/v1/touches", params={"status": "lost"})
    assert bad.status_code == 422 and "lost" in bad.json()["problems"][0]
    naive = await stack.gateway.get("/api/v1/touches", params={"due_from": "2026-01-01T00:00:00"})
    assert naive.status_code == 422


async def test_a_complaint_opens_an_operator_task_that_an_operator_resolves(stack: Stack) -> None:
    customer = await _filed_customer(stack, name="孙磊", locale="zh-CN")
    complaint = {
        "event_id": f"e-{uuid.uuid4().hex}",
        "type": "interaction",
        "customer_id": customer,
        "occurred_at": datetime.now(UTC).isoformat(),
        "payload": {"kind": "complaint", "complaint_id": "cmp-1", "text": "the tea arrived crushed"},
    }
    await stack.post(complaint)

    async def task() -> dict[str, Any] | None:
        page = await stack.gateway.get("/api/v1/operator-tasks", params={"customer_id": customer, "status": "open"})
        assert page.status_code == 200, page.text
        items: list[dict[str, Any]] = page.json()["items"]
        return items[0] if items else None

    opened = await eventually(task, PIPELINE_TIMEOUT, "an operator task for the complaint")
    assert opened["kind"] == "complaint_recovery"
    operator = stack.as_key(key := await stack.key("operator"))
    path = f"/api/v1/operator-tasks/{opened['task_id']}/resolve"
    empty = await stack.gateway.post(path, json={}, headers=operator)
    assert empty.status_code == 422 and any("resolution" in p for p in empty.json()["problems"])
    resolved = await stack.gateway.post(path, json={"resolution": "sent a new tin, apologised"}, headers=operator)
    assert resolved.status_code == 200, resolved.text
    assert resolved.json()["status"] == "resolved" and resolved.json()["resolved_by"] == key_name(stack, key)
    twice = await stack.gateway.post(path, json={"resolution": "again"}, headers=operator)
    assert twice.status_code == 409 and key_name(stack, key) in twice.json()["error"]
    entry = (await stack.gateway.get("/api/v1/audit", params={"target": path, "status": 200})).json()["items"][0]
    assert entry["customer_id"] == customer and entry["after"]["resolution"] == "sent a new tin, apologised"


# --- care plans, templates, preview ----------------------------------------------------------


async def test_templates_are_edited_and_previewed_for_a_real_customer_in_both_languages(stack: Stack) -> None:
    customer = await _filed_customer(stack, name="陈静", locale="zh-CN")

    async def known_to_outreach() -> dict[str, Any] | None:
        response = await stack.gateway.post(
            "/api/v1/care-plans/post_purchase_follow_up/preview", json={"customer_id": customer, "locale": "en"}
        )
        return response.json() if response.status_code == 200 else None

    before = await eventually(known_to_outreach, PIPELINE_TIMEOUT, "outreach's copy of the customer file")
    assert "陈静" in before["subject"] and before["locale"] == "en"

    operator = stack.as_key(key := await stack.key("operator"))
    template = (await stack.gateway.get("/api/v1/templates/post_purchase_follow_up")).json()
    locales = template["locales"]
    locales["en"]["subject"] = "A note from the tea house, {{ customer.display_name }}"
    saved = await stack.gateway.put(
        "/api/v1/templates/post_purchase_follow_up", json={"locales": locales}, headers=operator
    )
    assert saved.status_code == 200 and saved.json()["updated_by"] == key_name(stack, key)
    assert saved.json()["version"] == template["version"] + 1

    preview = await stack.gateway.post(
        "/api/v1/care-plans/post_purchase_follow_up/preview", json={"customer_id": customer, "locale": "en"}
    )
    assert preview.json()["subject"] == "A note from the tea house, 陈静"
    chinese = await stack.gateway.post(
        "/api/v1/care-plans/post_purchase_follow_up/preview", json={"customer_id": customer, "locale": "zh-CN"}
    )
    assert chinese.json()["subject"].startswith("陈静") and chinese.json()["locale"] == "zh-CN"

    broken = await stack.gateway.put(
        "/api/v1/templates/post_purchase_follow_up",
        json={"locales": {"en": {"subject": "{{ oops", "body": "x"}}},
        headers=operator,
    )
    assert broken.status_code == 422 and broken.json()["problems"]
    audit = await stack.gateway.get("/api/v1/audit", params={"target": "/api/v1/templates/post_purchase_follow_up"})
    saved_entry = next(e for e in audit.json()["items"] if e["status"] == 200)
    assert saved_entry["before"]["version"] == template["version"]
    assert saved_entry["after"]["version"] == template["version"] + 1


async def test_a_failed_test_send_reports_outreachs_reason_as_a_502(stack: Stack) -> None:
    response = await stack.gateway.post(
        "/api/v1/care-plans/welcome/test-send", json={"to": "ops@example.com", "channel": "email"}
    )
    assert response.status_code == 502
    assert response.json()["error"].startswith("outreach failed (502): test send failed")


async def test_a_care_plan_is_created_validated_and_versioned(stack: Stack) -> None:
    operator = stack.as_key(key := await stack.key("operator"))
    name = f"thanks_{uuid.uuid4().hex[:6]}"
    plan = {
        "name": name,
        "description": "Thank a customer the day after a purchase.",
        "trigger": {"event": {"types": ["purchase"]}},
        "delay": "P1D",
        "channels": ["email"],
        "template": "post_purchase_follow_up",
        "purpose": "marketing",
        "dedupe": {"per": "order"},
    }
    invalid = await stack.gateway.post("/api/v1/care-plans", json={**plan, "template": "nope"}, headers=operator)
    assert invalid.status_code == 422 and any("template" in p for p in invalid.json()["problems"])
    created = await stack.gateway.post("/api/v1/care-plans", json=plan, headers=operator)
    assert created.status_code == 201 and created.json()["updated_by"] == key_name(stack, key)
    changed = await stack.gateway.put(f"/api/v1/care-plans/{name}", json={**plan, "delay": "P2D"}, headers=operator)
    assert changed.json()["version"] == 2
    versions = (await stack.gateway.get(f"/api/v1/care-plans/{name}/versions")).json()
    assert [v["version"] for v in versions] == [2, 1]
    deleted = await stack.gateway.delete(f"/api/v1/care-plans/{name}", headers=operator)
    assert deleted.status_code == 204
    assert (await stack.gateway.get(f"/api/v1/care-plans/{name}")).status_code == 404


# --- reports and models ----------------------------------------------------------------------


async def test_reports_come_from_the_service_that_owns_them(stack: Stack) -> None:
    await _filed_customer(stack, name="Report")
    tiers = (await stack.gateway.get("/api/v1/reports/tiers")).json()
    assert tiers["report"] == "tiers" and tiers["total"] >= 1
    stages = (await stack.gateway.get("/api/v1/reports/stages")).json()
    assert [b["value"] for b in stages["buckets"]][:3] == ["prospect", "new", "active"]
    touches = (await stack.gateway.get("/api/v1/reports/touches")).json()
    assert all({"plan", "status", "count"} <= set(row) for row in touches)
    assert isinstance((await stack.gateway.get("/api/v1/reports/lift")).json(), list)


async def test_touches_per_day_add_up_outreachs_report_day_by_day(stack: Stack) -> None:
    async def all_touches() -> int:
        return sum(row["count"] for row in (await stack.gateway.get("/api/v1/reports/touches")).json())

    until = (datetime.now(UTC) + timedelta(days=10)).date().isoformat()
    before = await all_touches()
    days = (await stack.gateway.get("/api/v1/reports/touches-per-day", params={"days": 30, "until": until})).json()
    after = await all_touches()  # other tests' touches may arrive meanwhile
    assert len(days) == 30 and days[0]["day"] < days[-1]["day"] == until
    assert 0 < sum(day["total"] for day in days) <= after and before > 0
    for day in days:
        assert day["total"] == sum(day["by_status"].values())
    bad = await stack.gateway.get("/api/v1/reports/touches-per-day", params={"timezone": "Mars/Olympus"})
    assert bad.status_code == 422 and "Mars/Olympus" in bad.json()["problems"][0]


async def test_the_clv_model_is_refitted_as_of_a_moment_and_read_back(stack: Stack) -> None:
    for _ in range(21):  # scoring needs 20 purchasing customers, one of them a repeater
        customer = new_customer()
        await stack.post(purchase(customer, "50.00", days_ago=40), purchase(customer, "70.00", days_ago=10))
    viewer = stack.as_key(await stack.key("viewer"))
    refused = await stack.gateway.post("/api/v1/models/clv/refit", json={}, headers=viewer)
    assert refused.status_code == 403
    as_of = (datetime.now(UTC) - timedelta(days=5)).isoformat()

    async def refitted() -> dict[str, Any] | None:
        response = await stack.gateway.post("/api/v1/models/clv/refit", json={"as_of": as_of})
        return response.json() if response.status_code == 200 else None

    model = await eventually(refitted, PIPELINE_TIMEOUT, "a refit with enough data")
    current = (await stack.gateway.get("/api/v1/models/clv", headers=viewer)).json()
    assert current["id"] == model["id"] and current["as_of"] == model["as_of"]
    assert {"r", "alpha", "a", "b"} <= set(current["bgnbd"]) and current["time_unit_days"] > 0
    assert current["n_customers"] >= 20 and current["log_likelihood"] < 0
    future = await stack.gateway.post("/api/v1/models/clv/refit", json={"as_of": "2999-01-01T00:00:00Z"})
    assert future.status_code == 422


# --- privacy ---------------------------------------------------------------------------------


async def test_export_merges_every_service_and_erasure_reaches_them_all(stack: Stack) -> None:
    customer = await _filed_customer(stack, name="Olivia Zhang", email="olivia@example.com", locale="en")
    await stack.gateway.post(f"/api/v1/customers/{customer}/notes", json={"text": "allergic to peanuts"})

    async def touched() -> bool:
        return bool((await stack.gateway.get(f"/api/v1/customers/{customer}/touches")).json())

    await eventually(touched, PIPELINE_TIMEOUT, "outreach to know the customer")
    operator = stack.as_key(await stack.key("operator"))
    assert (await stack.gateway.get(f"/api/v1/customers/{customer}/export", headers=operator)).status_code == 403

    export = (await stack.gateway.get(f"/api/v1/customers/{customer}/export")).json()
    assert export["customer_id"] == customer
    assert export["services"]["scoring"]["file"]["profile"]["email"] == "olivia@example.com"
    assert export["services"]["outreach"]["touches"]
    (note_entry,) = export["services"]["gateway"]["audit"]
    assert note_entry["after"]["text"] == "allergic to peanuts"

    erased = await stack.gateway.delete(f"/api/v1/customers/{customer}", params={"reason": "customer request"})
    assert erased.status_code == 200, erased.text
    report = erased.json()
    assert report["complete"] is True
    assert {s: r["status"] for s, r in report["services"].items()} == {
        "scoring": "erased",
        "outreach": "erased",
        "gateway": "erased",
        "ingest": "nothing held",
    }
    assert (await stack.gateway.get(f"/api/v1/customers/{customer}")).status_code == 404
    audit = (await stack.gateway.get("/api/v1/audit", params={"customer_id": customer})).json()["items"]
    assert "allergic" not in str(audit) and "olivia@" not in str(audit)
    assert {e["action"] for e in audit} >= {
        "POST /api/v1/customers/{customer_id}/notes",
        "DELETE /api/v1/customers/{customer_id}",
    }
    again = await stack.gateway.delete(f"/api/v1/customers/{customer}")
    assert again.status_code == 200 and again.json()["services"]["scoring"]["status"] == "nothing held"

    async def outreach_forgot() -> bool:
        return not (await stack.gateway.get(f"/api/v1/customers/{customer}/touches")).json()

    await eventually(outreach_forgot, PIPELINE_TIMEOUT, "outreach to drop the customer's touches")


async def test_a_tier_report_stays_consistent_after_an_erasure(stack: Stack) -> None:
    customer = await _filed_customer(stack, name="Gone Soon")
    before = (await stack.gateway.get("/api/v1/reports/tiers")).json()["total"]
    await stack.gateway.delete(f"/api/v1/customers/{customer}")
    after = (await stack.gateway.get("/api/v1/reports/tiers")).json()["total"]
    assert after == before - 1


# --- the public unsubscribe link -------------------------------------------------------------


async def test_the_unsubscribe_link_in_a_message_works_through_the_gateway_without_a_key(stack: Stack) -> None:
    customer = await _filed_customer(stack, name="Noah Li", locale="en", email="noah@example.com")

    async def rendered() -> dict[str, Any] | None:
        response = await stack.gateway.post(
            "/api/v1/care-plans/post_purchase_follow_up/preview", json={"customer_id": customer, "locale": "en"}
        )
        return response.json() if response.status_code == 200 else None

    body = (await eventually(rendered, PIPELINE_TIMEOUT, "a rendered message"))["body"]
    token = re.search(r"/public/v1/unsubscribe/(\S+)", body)
    assert token, body
    public = httpx.AsyncClient(transport=httpx.ASGITransport(app=stack.gateway_app), base_url="http://gateway")
    async with public:
        page = await public.get(f"/public/v1/unsubscribe/{token.group(1)}")
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
        assert '<form method="post"' in page.text  # a GET only asks; the button posts
        done = await public.post(f"/public/v1/unsubscribe/{token.group(1)}")
        assert done.status_code == 200 and "Unsubscribed" in done.text
        damaged = await public.post("/public/v1/unsubscribe/not-a-token")
        assert damaged.status_code == 400 and "Link not valid" in damaged.text
    export = (await stack.gateway.get(f"/api/v1/customers/{customer}/export")).json()
    (consent,) = export["services"]["outreach"]["consents"]
    assert consent["channel"] == "email" and consent["granted"] is False
