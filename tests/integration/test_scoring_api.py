"""Scoring's internal API with its real lifespan, on SQLite and PostgreSQL: validation errors that
say what to fix, 404s, pagination, auth, operator edits announced through the outbox, reports,
the model endpoints, export and erasure. (No broker: what would be published is read from the
outbox, which is where the guarantee lives.)"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import select

from services.scoring.api import create_app
from services.scoring.deps import ScoringContext
from services.scoring.settings import ScoringSettings
from services.scoring.tables import outbox
from services.scoring.worker import ScoringHandler
from shared.contracts import (
    ConsentEvent,
    ConsentPayload,
    IdentifyEvent,
    IdentifyPayload,
    InteractionEvent,
    InteractionKind,
    InteractionPayload,
    LineItem,
    PurchaseEvent,
    PurchasePayload,
    Purpose,
    RefundEvent,
    RefundPayload,
    Traits,
)
from shared.observability import ServiceMetrics
from shared.service import INTERNAL_TOKEN_HEADER
from tests.integration.test_scoring_pipeline import Event, scenario
from tests.support import eventually, free_port

TOKEN = "internal-token-for-tests-0123456789"
AUTH = {INTERNAL_TOKEN_HEADER: TOKEN}


@dataclass
class Api:
    app: FastAPI
    client: httpx.AsyncClient
    handler: ScoringHandler

    @property
    def context(self) -> ScoringContext:
        context: ScoringContext = self.app.state.scoring
        return context

    async def feed(self, events: list[Event]) -> None:
        for event in events:
            await self.handler(event)

    async def get(self, path: str, **params: Any) -> httpx.Response:
        return await self.client.get(path, params=params, headers=AUTH)

    async def announced(self, customer: str) -> list[dict[str, Any]]:
        async with self.context.sessions() as session:
            rows = await session.execute(select(outbox.c.value).where(outbox.c.key == customer).order_by(outbox.c.id))
            return [json.loads(value) for (value,) in rows]


@pytest.fixture
async def api(database_url: str) -> AsyncIterator[Api]:
    settings = ScoringSettings(
        database_url=database_url,
        internal_token=TOKEN,
        kafka_bootstrap_servers=f"127.0.0.1:{free_port()}",  # nobody listens: the outbox just fills
        min_customers_for_fit=20,
        maintenance_tick=timedelta(hours=1),
        sweep_interval=timedelta(hours=1),
    )
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        context: ScoringContext = app.state.scoring
        handler = ScoringHandler(
            context.sessions,
            context.operations.relay,  # type: ignore[arg-type]
            ServiceMetrics(),
            settings=settings,
            models=context.models,
            clock=context.clock,
        )
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://scoring") as client:
            yield Api(app, client, handler)


NOW = datetime.now(UTC).replace(microsecond=0)


def story(customer: str = "c-1") -> list[Event]:
    """One customer's file: referred by a friend; profile, consent, two purchases, a refund, feedback, a complaint."""
    day = timedelta(days=1)
    return [
        InteractionEvent(
            event_id=f"{customer}-ref",
            customer_id="friend",
            occurred_at=NOW - 50 * day,
            payload=InteractionPayload(kind=InteractionKind.REFERRAL, referred_customer_id=customer),
        ),
        IdentifyEvent(
            event_id=f"{customer}-id",
            customer_id=customer,
            occurred_at=NOW - 40 * day,
            payload=IdentifyPayload(traits=Traits(name="王芳", email="wang@example.cn", locale="zh-CN")),
        ),
        ConsentEvent(
            event_id=f"{customer}-consent",
            customer_id=customer,
            occurred_at=NOW - 40 * day,
            payload=ConsentPayload(channel="email", purpose=Purpose.MARKETING, granted=True),
        ),
        PurchaseEvent(
            event_id=f"{customer}-p1",
            customer_id=customer,
            occurred_at=NOW - 30 * day,
            payload=PurchasePayload(
                order_id="A-1",
                amount=Decimal("120.00"),
                items=[LineItem(name="Oolong 250g", category="tea", quantity=2)],
            ),
        ),
        PurchaseEvent(
            event_id=f"{customer}-p2",
            customer_id=customer,
            occurred_at=NOW - 2 * day,
            payload=PurchasePayload(
                order_id="A-2", amount=Decimal("80.00"), items=[LineItem(name="Gaiwan", category="ware")]
            ),
        ),
        RefundEvent(
            event_id=f"{customer}-r1",
            customer_id=customer,
            occurred_at=NOW - day,
            payload=RefundPayload(order_id="A-2", amount=Decimal("30.00"), reason="chipped"),
        ),
        InteractionEvent(
            event_id=f"{customer}-fb",
            customer_id=customer,
            occurred_at=NOW - day,
            payload=InteractionPayload(kind=InteractionKind.FEEDBACK, rating=5),
        ),
        InteractionEvent(
            event_id=f"{customer}-k1",
            customer_id=customer,
            occurred_at=NOW - day,
            payload=InteractionPayload(
                kind=InteractionKind.COMPLAINT, complaint_id="K-1", text="the gaiwan arrived chipped"
            ),
        ),
    ]


async def test_every_route_needs_the_service_token(api: Api) -> None:
    for method, path in [
        ("GET", "/internal/v1/customers"),
        ("GET", "/internal/v1/customers/c-1"),
        ("GET", "/internal/v1/customers/c-1/export"),
        ("DELETE", "/internal/v1/customers/c-1"),
        ("POST", "/internal/v1/customers/c-1/tags"),
        ("PUT", "/internal/v1/customers/c-1/tier-override"),
        ("POST", "/internal/v1/customers/c-1/notes"),
        ("GET", "/internal/v1/reports/tiers"),
        ("GET", "/internal/v1/models/clv"),
        ("POST", "/internal/v1/models/clv/refit"),
    ]:
        for headers in ({}, {INTERNAL_TOKEN_HEADER: "wrong"}):
            response = await api.client.request(method, path, headers=headers)
            assert response.status_code == 401, (method, path)
            assert INTERNAL_TOKEN_HEADER in response.json()["error"]


async def test_unknown_customers_are_404_with_a_message(api: Api) -> None:
    for method, path, body in [
        ("GET", "/internal/v1/customers/nobody", None),
        ("GET", "/internal/v1/customers/nobody/export", None),
        ("DELETE", "/internal/v1/customers/nobody", None),
        ("POST", "/internal/v1/customers/nobody/tags", {"tags": ["x"]}),
        ("PUT", "/internal/v1/customers/nobody/tier-override", {"tier": "A", "reason": "loyal"}),
        ("POST", "/internal/v1/customers/nobody/notes", {"text": "hello"}),
        ("POST", "/internal/v1/customers/nobody/contacts", {"name": "Li Lei"}),
    ]:
        response = await api.client.request(method, path, json=body, headers=AUTH)
        assert response.status_code == 404, (method, path, response.text)
        assert response.json() == {"error": "no customer file for 'nobody'"}


async def test_the_customer_file_serves_purchases_interactions_scores_and_history(api: Api) -> None:
    await api.feed(story())
    response = await api.get("/internal/v1/customers/c-1")
    assert response.status_code == 200, response.text
    file = response.json()
    assert file["name"] == "王芳" and file["profile"]["email"] == "wang@example.cn"
    assert file["consents"]["email:marketing"]["value"] is True
    purchases = file["purchases"]
    assert purchases["order_count"] == 2 and purchases["occasion_count"] == 2
    assert Decimal(purchases["net_revenue"]) == Decimal("170") and Decimal(purchases["refunded"]) == Decimal("30")
    assert purchases["preferred_category"] == "tea" and purchases["last_order"]["order_id"] == "A-2"
    interactions = file["interactions"]
    assert interactions["latest_rating"] == 5 and interactions["open_complaints"] == 1
    assert interactions["referred_by"] == "friend"
    assert file["complaints"] == [
        {
            "complaint_id": "K-1",
            "status": "open",
            "opened_at": file["complaints"][0]["opened_at"],
            "resolved_at": None,
            "churn_reason": None,
            "text": "the gaiwan arrived chipped",
        }
    ]
    scores = file["scores"]
    assert scores["stage"] == "active" and scores["grade"] == "regular"
    assert scores["satisfaction_level"] == 0 and "unresolved complaint" in scores["reasons"]["satisfaction_level"]
    assert scores["loyalty"]["behavioural"] is not None
    stage_history = [h for h in file["history"] if h["field"] == "stage"]
    assert [h["after"] for h in reversed(stage_history)] == ["prospect", "new", "active"]
    assert [o["order_id"] for o in file["recent_orders"]] == ["A-2", "A-1"]
    last = (await api.announced("c-1"))[-1]["payload"]
    assert last["snapshot"]["referred_by"] == "friend" and last["cause"]["interaction_kind"] == "complaint"


async def test_search_filters_sorts_and_pages(api: Api) -> None:
    await api.feed(scenario(24, seed=1))
    everyone = await api.get("/internal/v1/customers", limit=500)
    assert everyone.status_code == 200
    total = everyone.json()["total"]
    assert total == 24 and everyone.json()["next_offset"] is None

    seen: list[str] = []
    offset: int | None = 0
    while offset is not None:
        page = (await api.get("/internal/v1/customers", limit=5, offset=offset)).json()
        assert page["total"] == total and len(page["items"]) <= 5
        seen += [item["customer_id"] for item in page["items"]]
        offset = page["next_offset"]
    assert seen == sorted(seen) and len(seen) == total

    by_revenue = (await api.get("/internal/v1/customers", sort="-revenue", limit=500)).json()["items"]
    revenues = [Decimal(item["revenue"]) for item in by_revenue]
    assert revenues == sorted(revenues, reverse=True)

    prospects = (await api.get("/internal/v1/customers", stage="prospect")).json()
    assert prospects["total"] == 3 and {i["stage"] for i in prospects["items"]} == {"prospect"}
    both = (await api.get("/internal/v1/customers", params=None, stage=["prospect", "new"])).json()
    assert both["total"] >= prospects["total"]


async def test_search_rejects_bad_input_with_what_to_fix(api: Api) -> None:
    bad_sort = await api.get("/internal/v1/customers", sort="-password")
    assert bad_sort.status_code == 400
    assert "cannot sort by 'password'" in bad_sort.json()["error"] and "clv_365" in bad_sort.json()["error"]
    bad_stage = await api.get("/internal/v1/customers", stage="sleeping")
    assert bad_stage.status_code == 422 and "stage" in " ".join(bad_stage.json()["problems"])
    assert (await api.get("/internal/v1/customers", limit=0)).status_code == 422
    assert (await api.get("/internal/v1/customers", limit=501)).status_code == 422
    inverted = await api.get("/internal/v1/customers", clv_min="10", clv_max="5")
    assert inverted.status_code == 400 and "clv_min" in inverted.json()["error"]
    naive = await api.get("/internal/v1/customers", last_purchase_from="2026-01-01T00:00:00")
    assert naive.status_code == 400 and "time zone" in naive.json()["error"]


async def test_tags_and_the_tier_override_are_announced_and_kept_in_the_history(api: Api) -> None:
    await api.feed(story())
    added = await api.client.post(
        "/internal/v1/customers/c-1/tags", json={"tags": ["corner-seat", "vip-event"]}, headers=AUTH
    )
    assert added.status_code == 200 and added.json() == ["corner-seat", "vip-event"]
    update = (await api.announced("c-1"))[-1]["payload"]
    assert update["cause"]["type"] == "operator" and update["snapshot"]["tags"] == ["corner-seat", "vip-event"]
    assert [c["field"] for c in update["changes"]] == ["tags"]
    announced = len(await api.announced("c-1"))
    again = await api.client.post("/internal/v1/customers/c-1/tags", json={"tags": ["vip-event"]}, headers=AUTH)
    assert again.status_code == 200 and len(await api.announced("c-1")) == announced  # nothing new: no announcement
    tagged = (await api.get("/internal/v1/customers", tag=["vip-event", "corner-seat"])).json()
    assert [i["customer_id"] for i in tagged["items"]] == ["c-1"]
    assert (await api.get("/internal/v1/customers", tag=["vip-event", "nope"])).json()["total"] == 0

    bad = await api.client.post("/internal/v1/customers/c-1/tags", json={"tags": [" "]}, headers=AUTH)
    assert bad.status_code == 422 and "tag" in " ".join(bad.json()["problems"])
    assert (await api.client.delete("/internal/v1/customers/c-1/tags/corner-seat", headers=AUTH)).status_code == 204
    missing = await api.client.delete("/internal/v1/customers/c-1/tags/corner-seat", headers=AUTH)
    assert missing.status_code == 404 and "no tag 'corner-seat'" in missing.json()["error"]

    no_reason = await api.client.put("/internal/v1/customers/c-1/tier-override", json={"tier": "A"}, headers=AUTH)
    assert no_reason.status_code == 422 and "reason" in " ".join(no_reason.json()["problems"])
    bad_tier = await api.client.put(
        "/internal/v1/customers/c-1/tier-override", json={"tier": "Z", "reason": "why"}, headers=AUTH
    )
    assert bad_tier.status_code == 422
    promoted = await api.client.put(
        "/internal/v1/customers/c-1/tier-override",
        json={"tier": "A", "reason": "refers friends, loyal for years"},
        headers=AUTH,
    )
    assert promoted.status_code == 200 and promoted.json()["value_tier"] == "A"
    assert promoted.json()["tier_override"] == {"tier": "A", "reason": "refers friends, loyal for years"}
    update = (await api.announced("c-1"))[-1]["payload"]
    [tier_change] = [c for c in update["changes"] if c["field"] == "value_tier"]
    assert tier_change["after"] == "A" and "refers friends" in tier_change["reason"]
    file = (await api.get("/internal/v1/customers/c-1")).json()
    assert file["scores"]["value_tier"] == "A"
    assert any(h["field"] == "tier_override" and h["after"] == "A" for h in file["history"])

    assert (await api.client.delete("/internal/v1/customers/c-1/tier-override", headers=AUTH)).status_code == 422
    cleared = await api.client.delete(
        "/internal/v1/customers/c-1/tier-override", params={"reason": "annual review"}, headers=AUTH
    )
    assert cleared.status_code == 200 and cleared.json()["tier_override"] is None
    again = await api.client.delete(
        "/internal/v1/customers/c-1/tier-override", params={"reason": "annual review"}, headers=AUTH
    )
    assert again.status_code == 404 and "no tier override" in again.json()["error"]


async def test_contacts_and_notes(api: Api) -> None:
    await api.feed(story("acme"))
    first = await api.client.post(
        "/internal/v1/customers/acme/contacts",
        json={"contact_id": "buyer", "name": "Li Lei", "email": "LI@acme.cn", "primary": True},
        headers=AUTH,
    )
    assert first.status_code == 201 and first.json()["email"] == "li@acme.cn" and first.json()["is_primary"]
    assert (await api.announced("acme"))[-1]["payload"]["snapshot"]["scores"]["contacts"] == 1
    duplicate = await api.client.post(
        "/internal/v1/customers/acme/contacts", json={"contact_id": "buyer", "name": "X"}, headers=AUTH
    )
    assert duplicate.status_code == 409 and "already exists" in duplicate.json()["error"]
    bad = await api.client.post(
        "/internal/v1/customers/acme/contacts", json={"name": "Y", "email": "not-an-email"}, headers=AUTH
    )
    assert bad.status_code == 422 and "email" in " ".join(bad.json()["problems"])
    second = await api.client.post(
        "/internal/v1/customers/acme/contacts", json={"name": "Han Meimei", "role": "CFO"}, headers=AUTH
    )
    assert second.status_code == 201
    file = (await api.get("/internal/v1/customers/acme")).json()
    assert [c["name"] for c in file["contacts"]] == ["Li Lei", "Han Meimei"]
    assert (await api.client.delete("/internal/v1/customers/acme/contacts/buyer", headers=AUTH)).status_code == 204
    assert (await api.client.delete("/internal/v1/customers/acme/contacts/buyer", headers=AUTH)).status_code == 404

    announced = len(await api.announced("acme"))
    note = await api.client.post(
        "/internal/v1/customers/acme/notes",
        json={"text": "prefers the corner seat; two sugars", "author": "mei"},
        headers=AUTH,
    )
    assert note.status_code == 201
    assert len(await api.announced("acme")) == announced  # staff-only: nothing to announce
    assert (await api.get("/internal/v1/customers/acme")).json()["notes"][0]["text"].startswith("prefers")
    empty = await api.client.post("/internal/v1/customers/acme/notes", json={"text": ""}, headers=AUTH)
    assert empty.status_code == 422
    note_id = note.json()["id"]
    assert (await api.client.delete(f"/internal/v1/customers/acme/notes/{note_id}", headers=AUTH)).status_code == 204
    gone = await api.client.delete(f"/internal/v1/customers/acme/notes/{note_id}", headers=AUTH)
    assert gone.status_code == 404 and f"no note {note_id}" in gone.json()["error"]
    assert (await api.client.delete("/internal/v1/customers/acme/notes/0", headers=AUTH)).status_code == 422


async def test_reports_cover_every_customer(api: Api) -> None:
    await api.feed(scenario(24, seed=1))
    for name in ("tiers", "grades", "stages", "churn-bands", "quadrants", "relationships"):
        response = await api.get(f"/internal/v1/reports/{name}")
        assert response.status_code == 200, name
        report = response.json()
        assert report["total"] == 24 and sum(b["customers"] for b in report["buckets"]) == 24
    funnel = (await api.get("/internal/v1/reports/stages")).json()["buckets"]
    assert [b["value"] for b in funnel][:6] == ["prospect", "new", "active", "won_back", "at_risk", "lapsed"]
    assert funnel[0]["customers"] == 3


async def test_the_model_endpoints(api: Api) -> None:
    missing = await api.get("/internal/v1/models/clv")
    assert missing.status_code == 404 and "refit" in missing.json()["error"]
    await api.feed(story())
    too_few = await api.client.post("/internal/v1/models/clv/refit", headers=AUTH)
    assert too_few.status_code == 409 and "at least 20 customers" in too_few.json()["error"]
    naive = await api.client.post("/internal/v1/models/clv/refit", json={"as_of": "2026-01-01T00:00:00"}, headers=AUTH)
    assert naive.status_code == 422 and "as_of" in " ".join(naive.json()["problems"])
    future = await api.client.post(
        "/internal/v1/models/clv/refit", json={"as_of": (NOW + timedelta(days=3)).isoformat()}, headers=AUTH
    )
    assert future.status_code == 422 and "future" in future.json()["error"]

    await api.feed(scenario(24, seed=1))
    fitted = await api.client.post(
        "/internal/v1/models/clv/refit", json={"as_of": "2025-12-31T00:00:00Z"}, headers=AUTH
    )
    assert fitted.status_code == 200, fitted.text
    model = fitted.json()
    assert model["n_customers"] == 21 and model["time_unit_days"] == 7.0 and model["trigger"] == "on_demand"
    assert set(model["bgnbd"]) >= {"r", "alpha", "a", "b", "log_likelihood"}
    assert model["log_likelihood"] == model["bgnbd"]["log_likelihood"] < 0
    assert model["as_of"].startswith("2025-12-31")
    current = (await api.get("/internal/v1/models/clv")).json()
    assert current["id"] == model["id"]

    async def rescored() -> bool:
        return bool((await api.get("/internal/v1/models/clv")).json()["rescored"])

    await eventually(rescored, timeout=60, what="the background re-scoring after the refit")
    file = (await api.get("/internal/v1/customers/c-1")).json()
    assert file["scores"]["model_id"] == model["id"] and file["scores"]["churn_band"] is not None


async def test_export_then_erasure(api: Api) -> None:
    await api.feed(story())
    await api.client.post("/internal/v1/customers/c-1/notes", json={"text": "allergic to jasmine"}, headers=AUTH)
    exported = await api.get("/internal/v1/customers/c-1/export")
    assert exported.status_code == 200
    body = exported.json()
    assert body["file"]["customer_id"] == "c-1"
    assert {r["order_id"] for r in body["records"]["orders"]} == {"A-1", "A-2"}
    assert body["records"]["refunds"][0]["amount"] == "30" or Decimal(body["records"]["refunds"][0]["amount"]) == 30
    assert body["records"]["notes"][0]["text"] == "allergic to jasmine" and body["records"]["history"]
    assert body["records"]["referred_by"][0]["referrer_id"] == "friend"

    erased = await api.client.delete("/internal/v1/customers/c-1", params={"reason": "customer asked"}, headers=AUTH)
    assert erased.status_code == 200 and erased.json()["customer_id"] == "c-1"
    assert (await api.get("/internal/v1/customers/c-1")).status_code == 404
    left = await api.announced("c-1")
    assert [m["type"] for m in left] == ["customer.erased"]  # undelivered updates about them are dropped too
    assert left[0]["payload"]["reason"] == "customer asked"
    friend = (await api.get("/internal/v1/customers/friend/export")).json()
    assert friend["records"]["referrals_made"][0]["referred_customer_id"].startswith("erased:")
    assert (await api.get("/internal/v1/reports/stages")).json()["total"] == 1
