"""Outreach's consumer handler applies a run of events in one transaction, reading up front and
writing at the end: on SQLite and PostgreSQL a batch leaves exactly what the same events applied
one per transaction leave; later events of a batch see earlier ones (a touch planned, a consent
revoked, a customer erased, an id claimed); a claim another replica made meanwhile fails the
batch, which then converges one event at a time; and a batch costs a handful of statements, not
several per event."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import event, insert, select
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from services.outreach import repository
from services.outreach.api import MIGRATIONS
from services.outreach.planning import PlanCatalog
from services.outreach.settings import OutreachSettings
from services.outreach.tables import (
    consents,
    customers,
    erasures,
    operator_tasks,
    outbox,
    processed_events,
    suppressions,
    touches,
)
from services.outreach.worker import OutreachHandler
from shared.contracts import (
    AnyEvent,
    ConsentEvent,
    ConsentPayload,
    CustomerCause,
    CustomerErasedEvent,
    CustomerErasedPayload,
    CustomerSnapshot,
    CustomerUpdatedEvent,
    CustomerUpdatedPayload,
    FieldChange,
    InteractionEvent,
    InteractionPayload,
    PurchaseEvent,
    PurchasePayload,
    parse_event,
)
from shared.db import create_engine, migrate, session_factory, transaction
from shared.kafka import EventProducer
from shared.ledger import OutboxRelay
from shared.observability import ServiceMetrics
from shared.service import is_transient
from tests.integration.test_outreach_pipeline import daytime_zone

NOW = datetime.now(UTC)


@dataclass
class Outreach:
    engine: AsyncEngine
    sessions: async_sessionmaker[AsyncSession]
    handler: OutreachHandler
    metrics: ServiceMetrics

    async def batch(self, events: Sequence[AnyEvent]) -> None:
        """What the consumer loop does with a run of records: one transaction, told up front."""
        async with self.handler.transaction(events) as apply:
            for one in events:
                await apply(one, None)

    async def one_by_one(self, events: Sequence[AnyEvent]) -> None:
        for one in events:
            await self.handler(one)

    async def rows(self, query: Any) -> list[dict[str, Any]]:
        async with self.sessions() as session:
            return [dict(row) for row in (await session.execute(query)).mappings()]

    def duplicates(self) -> float:
        return self.metrics.duplicates_skipped.labels("outreach")._value.get()  # type: ignore[attr-defined, no-any-return]


async def open_outreach(database_url: str, holdout_share: float = 0.0) -> Outreach:
    # Everyone in the holdout (beyond what the settings accept) makes every marketing touch a
    # would-have-been one, which purchases convert: both runs of a comparison see the same split.
    settings = OutreachSettings(database_url=database_url, holdout_share=0.0).model_copy(
        update={"holdout_share": holdout_share}
    )
    engine = create_engine(database_url, "outreach")
    await migrate(engine, MIGRATIONS, "outreach")
    sessions = session_factory(engine)
    catalog = PlanCatalog(sessions, settings)
    await catalog.seed_defaults()
    metrics = ServiceMetrics()
    # The relay is only notified here, never run: what it would publish is read from the outbox.
    relay = OutboxRelay(sessions, outbox, EventProducer("127.0.0.1:9"), metrics, "outreach")
    handler = OutreachHandler(sessions, relay, metrics, settings=settings, catalog=catalog)
    return Outreach(engine, sessions, handler, metrics)


@pytest.fixture(params=[0.0, 1.0], ids=["treated", "holdout"])
async def outreach(request: pytest.FixtureRequest, database_url: str) -> AsyncIterator[Outreach]:
    running = await open_outreach(database_url, holdout_share=request.param)
    try:
        yield running
    finally:
        await running.engine.dispose()


# --- events -----------------------------------------------------------------------------------


def snapshot(**fields: Any) -> CustomerSnapshot:
    base: dict[str, Any] = {
        "email": "ana@example.com",
        "first_name": "Ana",
        "locale": "en",
        "timezone": daytime_zone(),
        "consents": {"email:marketing": True},
        "birthday": NOW.astimezone(ZoneInfo(daytime_zone())).date().replace(year=1990),
        "order_count": 1,
        "value_tier": "B",
    }
    return CustomerSnapshot(**{**base, **fields})


def updated(
    cid: str,
    version: int,
    *,
    cause: str,
    cause_type: str = "purchase",
    order_id: str | None = "o-1",
    changes: Sequence[FieldChange] = (),
    event_id: str | None = None,
    **fields: Any,
) -> CustomerUpdatedEvent:
    occurred = NOW - timedelta(minutes=30) + timedelta(seconds=version)
    return CustomerUpdatedEvent(
        event_id=event_id or f"cu-{cid}-{version}",
        customer_id=cid,
        occurred_at=occurred,
        payload=CustomerUpdatedPayload(
            version=version,
            cause=CustomerCause(
                event_id=cause,
                type=cause_type,
                occurred_at=occurred,
                order_id=order_id if cause_type == "purchase" else None,
                amount=Decimal("58.00") if cause_type == "purchase" else None,
            ),
            changes=list(changes),
            snapshot=snapshot(**fields),
        ),
    )


def consent(cid: str, n: int, *, granted: bool, channel: str = "all", minutes_ago: int = 20) -> ConsentEvent:
    return ConsentEvent(
        event_id=f"consent-{cid}-{n}",
        customer_id=cid,
        occurred_at=NOW - timedelta(minutes=minutes_ago),
        payload=ConsentPayload(channel=channel, purpose="marketing", granted=granted),
    )


def complaint(cid: str, n: int) -> InteractionEvent:
    return InteractionEvent(
        event_id=f"complaint-{cid}-{n}",
        customer_id=cid,
        occurred_at=NOW - timedelta(minutes=10),
        payload=InteractionPayload(kind="complaint", complaint_id=f"c-{n}", text="late parcel"),
    )


def purchase(cid: str, order: str, *, at: datetime) -> PurchaseEvent:
    return PurchaseEvent(
        event_id=f"purchase-{cid}-{order}",
        customer_id=cid,
        occurred_at=at,
        payload=PurchasePayload(order_id=order, amount=Decimal("12.50")),
    )


def erased(cid: str, n: int) -> CustomerErasedEvent:
    return CustomerErasedEvent(
        event_id=f"erased-{cid}-{n}",
        customer_id=cid,
        occurred_at=NOW - timedelta(minutes=5),
        payload=CustomerErasedPayload(reason="gdpr"),
    )


def tier_change(before: str, after: str) -> FieldChange:
    return FieldChange(field="value_tier", before=before, after=after, reason="rfm")


def scenario(p: str) -> list[AnyEvent]:
    """Every kind of event, several per customer, in an order where later ones depend on earlier
    ones. ``p`` prefixes customer and event ids, so two runs can share one database."""
    ana, bo, cy, di, eve = (f"{p}ana", f"{p}bo", f"{p}cy", f"{p}di", f"{p}eve")
    first = updated(ana, 1, cause=f"{p}in-1", changes=[tier_change("C", "B")])
    return [
        first,
        # Another tier rise within tier_upgrade_thanks' 30-day window: no second thank-you.
        updated(ana, 2, cause=f"{p}in-2", order_id="o-2", changes=[tier_change("B", "A")], value_tier="A"),
        # The first update's cause again, as a newer version: every key it plans exists already.
        updated(ana, 3, cause=f"{p}in-1", value_tier="A"),
        first,  # redelivered: a duplicate
        updated(ana, 2, cause=f"{p}in-2", order_id="o-2", event_id=f"cu-{ana}-2-late"),  # older than v3
        # Bo revokes marketing on every channel, then a purchase plans marketing touches.
        consent(bo, 1, granted=False),
        updated(bo, 1, cause=f"{p}in-bo-1"),
        complaint(bo, 1),  # transactional, and opens a task
        # Cy's earlier (older) grant does not override the revocation that came before it.
        consent(cy, 1, granted=False, minutes_ago=20),
        consent(cy, 2, granted=True, minutes_ago=40),
        updated(cy, 1, cause=f"{p}in-cy-1", referred_by=ana),  # referral thanks go to Ana
        # Di: touches planned, then the customer is erased, then a late older update, then a new file.
        updated(di, 4, cause=f"{p}in-di-4"),
        complaint(di, 1),
        erased(di, 1),
        updated(di, 3, cause=f"{p}in-di-3"),
        consent(di, 1, granted=True, channel="email"),
        updated(di, 5, cause=f"{p}in-di-5", order_id="o-5"),
        # Eve buys within the attribution window of what was planned earlier in the batch.
        updated(eve, 1, cause=f"{p}in-eve-1"),
        purchase(eve, "o-9", at=NOW + timedelta(days=3, hours=1)),
        purchase(eve, "o-9", at=NOW + timedelta(days=3, hours=1)),
    ]


# --- what a run leaves -----------------------------------------------------------------------


def _strip(value: Any, p: str) -> Any:
    if isinstance(value, str):
        return value.replace(p, "")
    if isinstance(value, dict):
        return {k: _strip(v, p) for k, v in value.items()}
    if isinstance(value, list):
        return [_strip(v, p) for v in value]
    return value


async def left_by(outreach: Outreach, p: str) -> dict[str, Any]:
    """Everything the run with prefix ``p`` stored, ids made comparable across prefixes."""
    mine = f"{p}%"
    found: dict[str, Any] = {}
    found["touches"] = sorted(
        (
            row["idempotency_key"],
            row["plan"],
            row["status"],
            row["reason"],
            row["holdout"],
            row["channel"],
            row["cause_event_id"],
            row["converted_order_id"],
            row["offer_value"],
            row["context"],
        )
        for row in _strip(await outreach.rows(select(touches).where(touches.c.customer_id.like(mine))), p)
    )
    found["consents"] = sorted(
        (r["customer_id"], r["channel"], r["purpose"], r["granted"], r["occurred_at"], r["event_id"])
        for r in _strip(await outreach.rows(select(consents).where(consents.c.customer_id.like(mine))), p)
    )
    found["customers"] = sorted(
        (r["customer_id"], r["version"], str(r["snapshot"]))
        for r in _strip(await outreach.rows(select(customers).where(customers.c.customer_id.like(mine))), p)
    )
    found["erasures"] = sorted(
        (r["customer_id"], r["version"])
        for r in _strip(await outreach.rows(select(erasures).where(erasures.c.customer_id.like(mine))), p)
    )
    found["suppressions"] = sorted(
        (r["customer_id"], r["plan"], r["reason"])
        for r in _strip(await outreach.rows(select(suppressions).where(suppressions.c.customer_id.like(mine))), p)
    )
    found["tasks"] = sorted(
        (r["customer_id"], r["kind"], r["summary"])
        for r in _strip(await outreach.rows(select(operator_tasks).where(operator_tasks.c.customer_id.like(mine))), p)
    )
    found["claims"] = sorted(
        r["event_id"]
        for r in await outreach.rows(select(processed_events.c.event_id).where(processed_events.c.event_id.like(mine)))
    )
    # The outbox in order: which lifecycle step of which plan for whom.
    messages = []
    for row in await outreach.rows(select(outbox.c.value).order_by(outbox.c.id)):
        message = parse_event(row["value"])
        if message.customer_id.startswith(p):
            payload = message.payload
            messages.append((_strip(message.customer_id, p), payload.plan, payload.status.value, payload.reason))  # type: ignore[union-attr]
    found["outbox"] = messages
    return found


# --- tests ------------------------------------------------------------------------------------


async def test_a_batch_leaves_what_the_same_events_one_per_transaction_leave(outreach: Outreach) -> None:
    await outreach.one_by_one(scenario("one-"))
    await outreach.batch(scenario("batch-"))

    one, batch = await left_by(outreach, "one-"), await left_by(outreach, "batch-")
    for kind in one:
        assert batch[kind] == one[kind], kind
    assert one["touches"] and one["outbox"] and one["tasks"] and one["erasures"]
    # Each run had one redelivered customer.updated and one repeated purchase.
    assert outreach.duplicates() == 4


async def test_several_updates_of_one_customer_in_one_batch_plan_each_touch_once(outreach: Outreach) -> None:
    events = scenario("x-")[:5]
    await outreach.batch(events)

    stored = await outreach.rows(select(touches).where(touches.c.customer_id == "x-ana"))
    keys = [row["idempotency_key"] for row in stored]
    assert len(keys) == len(set(keys))
    plans = sorted(row["plan"] for row in stored)
    # Two orders, two follow-ups; one tier thank-you, as the second rise fell in its window.
    assert plans.count("post_purchase_follow_up") == 2
    assert plans.count("tier_upgrade_thanks") == 1
    assert plans.count("welcome") == 1
    version = await outreach.rows(select(customers.c.version).where(customers.c.customer_id == "x-ana"))
    assert version == [{"version": 3}]
    assert outreach.duplicates() == 1


async def test_a_consent_revoked_earlier_in_the_batch_stops_a_later_plan(outreach: Outreach) -> None:
    cid = "rev-bo"
    await outreach.batch(
        [
            updated(cid, 1, cause="in-rev-1"),
            consent(cid, 1, granted=False),
            updated(cid, 2, cause="in-rev-2", order_id="o-2"),
        ]
    )

    stored = {
        row["cause_event_id"]: row
        for row in await outreach.rows(select(touches).where(touches.c.plan == "post_purchase_follow_up"))
    }
    before, after = stored["in-rev-1"], stored["in-rev-2"]
    if before["holdout"]:
        assert after["reason"] == "holdout"  # the holdout's baseline is recorded whatever the consent
        return
    assert before["status"] == "scheduled"
    assert after["status"] == "suppressed"
    assert after["reason"].startswith("no_consent")
    # Transactional plans ignore a marketing refusal.
    welcome = await outreach.rows(select(touches).where(touches.c.plan == "welcome"))
    assert [row["status"] for row in welcome] == ["scheduled"]


async def test_a_duplicate_event_id_inside_a_batch_is_applied_once(outreach: Outreach) -> None:
    event = updated("dup-ana", 1, cause="in-dup-1")
    await outreach.batch([event, complaint("dup-ana", 1), event])

    claims = await outreach.rows(select(processed_events.c.event_id))
    assert sorted(row["event_id"] for row in claims) == ["complaint-dup-ana-1", "cu-dup-ana-1"]
    stored = await outreach.rows(select(touches.c.plan))
    assert len(stored) == len({row["plan"] for row in stored}) > 1
    assert outreach.duplicates() == 1
    # And again in a later batch: everything is known, nothing new is stored or announced.
    messages = len(await outreach.rows(select(outbox.c.id)))
    await outreach.batch([event])
    assert len(await outreach.rows(select(touches.c.touch_id))) == len(stored)
    assert len(await outreach.rows(select(outbox.c.id))) == messages
    assert outreach.duplicates() == 2


async def test_erasure_mid_batch_removes_what_the_batch_planned_for_the_customer(outreach: Outreach) -> None:
    cid = "gone-di"
    await outreach.batch(
        [
            updated(cid, 1, cause="in-gone-1"),
            complaint(cid, 1),
            consent(cid, 1, granted=True),
            erased(cid, 1),
            updated(cid, 1, cause="in-gone-1", event_id="late"),
        ]
    )

    for table in (touches, consents, customers, suppressions, operator_tasks):
        assert await outreach.rows(select(table).where(table.c.customer_id == cid)) == [], table.name
    assert await outreach.rows(select(erasures.c.version).where(erasures.c.customer_id == cid)) == [{"version": 1}]
    # What was announced before the erasure stays announced (downstream forgets on customer.erased).
    assert await outreach.rows(select(outbox.c.id))


@pytest.mark.parametrize("known", [True, False], ids=["stored-customer", "new-customer"])
async def test_an_operator_erasure_landing_mid_batch_leaves_nothing_of_the_customer(
    outreach: Outreach, known: bool
) -> None:
    if outreach.engine.dialect.name != "postgresql":
        pytest.skip("SQLite serialises writers: a stale batch fails to write (transient) and is retried")
    cid = f"op-gone-{known}"
    if known:
        await outreach.batch([updated(cid, 1, cause="in-op-1")])
    events: list[AnyEvent] = [
        updated(cid, 2, cause="in-op-2", order_id="o-2", changes=[tier_change("C", "B")]),
        complaint(cid, 1),  # opens a task
        consent(cid, 1, granted=True, channel="email"),
    ]
    prefetched = asyncio.Event()

    async def operator_erases() -> None:
        await prefetched.wait()
        async with transaction(outreach.sessions) as session:
            await repository.erase_customer(session, cid, datetime.now(UTC))

    eraser = asyncio.create_task(operator_erases())
    async with outreach.handler.transaction(events) as apply:  # prefetch is done once this yields
        prefetched.set()
        if known:
            # The batch holds the customer's row: the erasure waits for it to commit.
            await asyncio.sleep(0.5)
            assert not eraser.done()
        else:
            await eraser  # nothing to lock: the erasure commits while the batch is under way
        for one in events:
            await apply(one, None)
    await eraser

    for table in (touches, consents, customers, suppressions, operator_tasks):
        assert await outreach.rows(select(table).where(table.c.customer_id == cid)) == [], table.name
    assert await outreach.rows(select(erasures.c.customer_id).where(erasures.c.customer_id == cid))
    if not known:
        # Nothing of what it planned is announced either.
        assert [
            row for row in await outreach.rows(select(outbox.c.value)) if parse_event(row["value"]).customer_id == cid
        ] == []


async def test_a_late_purchase_converts_a_touch_older_than_the_windows_read_up_front(outreach: Outreach) -> None:
    # A batch reads only touches due or sent within the longest window; a purchase reaching back
    # further reads the customer's older touches, so it converts exactly what it always did.
    cid = "late-buyer"
    await outreach.batch([updated(cid, 1, cause="in-late-1")])
    long_ago = NOW - timedelta(days=400)
    async with transaction(outreach.sessions) as session:
        await session.execute(
            touches.update()
            .where(touches.c.customer_id == cid)
            .values(status="sent", sent_at=long_ago, due_at=long_ago, holdout=False)
        )
    await outreach.batch([consent(cid, 1, granted=True), purchase(cid, "o-old", at=long_ago + timedelta(hours=1))])

    rows = await outreach.rows(
        select(touches.c.status, touches.c.converted_order_id).where(touches.c.customer_id == cid)
    )
    assert rows and any(row["converted_order_id"] == "o-old" for row in rows)
    assert all(row["status"] == "converted" for row in rows if row["converted_order_id"] == "o-old")


async def test_a_backfilled_batch_reads_old_touches_in_one_query_not_one_per_customer(outreach: Outreach) -> None:
    # A backfill's purchases are years old: each one's attribution window reaches back before
    # what a batch reads up front. The batch reads back from its earliest event at once.
    buyers = [f"old-buyer-{n}" for n in range(40)]
    await outreach.batch([updated(cid, 1, cause=f"in-{cid}") for cid in buyers])
    long_ago = NOW - timedelta(days=400)
    async with transaction(outreach.sessions) as session:
        await session.execute(
            touches.update()
            .where(touches.c.customer_id.in_(buyers))
            .values(status="sent", sent_at=long_ago, due_at=long_ago, holdout=False)
        )
    statements: list[str] = []

    def count(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        statements.append(statement)

    event.listen(outreach.engine.sync_engine, "before_cursor_execute", count)
    try:
        await outreach.batch([purchase(cid, "o-old", at=long_ago + timedelta(hours=1)) for cid in buyers])
    finally:
        event.remove(outreach.engine.sync_engine, "before_cursor_execute", count)
    converted = await outreach.rows(
        select(touches.c.customer_id).where(touches.c.customer_id.in_(buyers), touches.c.converted_order_id == "o-old")
    )
    assert {row["customer_id"] for row in converted} == set(buyers)
    touch_reads = [s for s in statements if s.lstrip().upper().startswith("SELECT") and "FROM touches" in s]
    assert len(touch_reads) <= 2, "\n".join(touch_reads)  # the touches, and their keys


async def test_a_touch_older_than_the_windows_still_holds_its_key(outreach: Outreach) -> None:
    # A batch reads whole rows only of touches within the longest window; older ones only by
    # their idempotency key. A later update re-planning an old touch's key must find it taken.
    cid = "old-key"
    await outreach.batch([updated(cid, 1, cause="in-old-key-1", order_id="o-kept")])
    long_ago = NOW - timedelta(days=400)
    async with transaction(outreach.sessions) as session:
        await session.execute(
            touches.update()
            .where(touches.c.customer_id == cid)
            .values(status="sent", sent_at=long_ago, due_at=long_ago)
        )
    before = await outreach.rows(select(touches.c.idempotency_key).where(touches.c.customer_id == cid))
    assert before

    # The same order announced again (a later version, a new cause event): same keys.
    await outreach.batch([updated(cid, 2, cause="in-old-key-2", order_id="o-kept")])

    after = await outreach.rows(select(touches.c.idempotency_key).where(touches.c.customer_id == cid))
    assert sorted(row["idempotency_key"] for row in after) == sorted(row["idempotency_key"] for row in before)


async def test_a_claim_made_meanwhile_by_another_replica_fails_the_batch_and_it_converges(outreach: Outreach) -> None:
    events: list[AnyEvent] = [updated(f"race-{i}", 1, cause=f"in-race-{i}") for i in range(3)]
    taken = events[1].event_id
    try:
        async with outreach.handler.transaction(events) as apply:
            for one in events:
                await apply(one, None)
            # Another replica claims (and commits) one of these ids before this batch commits.
            async with transaction(outreach.sessions) as other:
                await other.execute(insert(processed_events).values(event_id=taken, processed_at=datetime.now(UTC)))
    except (IntegrityError, OperationalError) as error:
        failure: Exception = error
    else:
        pytest.fail("the batch committed over another replica's claim")
    # Like the consumer loop: a transient failure retries the batch, any other is re-applied
    # one event per transaction. Either way the event claimed elsewhere is skipped.
    if is_transient(failure):
        await outreach.batch(events)
    else:
        assert isinstance(failure, IntegrityError)
        await outreach.one_by_one(events)

    planned = await outreach.rows(select(touches.c.customer_id).distinct())
    assert sorted(row["customer_id"] for row in planned) == ["race-0", "race-2"]
    assert outreach.duplicates() == 1


async def test_an_event_the_batch_was_not_told_of_is_applied_too(outreach: Outreach) -> None:
    told = updated("told-ana", 1, cause="in-told-1")
    untold = [consent("told-ana", 1, granted=False), updated("told-ana", 2, cause="in-told-2", order_id="o-2"), told]
    async with outreach.handler.transaction([told]) as apply:
        for one in [told, *untold]:
            await apply(one, None)

    stored = {
        row["cause_event_id"]: row
        for row in await outreach.rows(select(touches).where(touches.c.plan == "post_purchase_follow_up"))
    }
    assert set(stored) == {"in-told-1", "in-told-2"}
    assert stored["in-told-2"]["reason"] in ("holdout", "no_consent: refused on every channel (marketing)")
    assert outreach.duplicates() == 1


async def test_a_batch_costs_a_handful_of_statements_not_several_per_event(database_url: str) -> None:
    outreach = await open_outreach(database_url)
    await outreach.batch([])  # loads the care plans, which a running consumer holds already
    statements: list[str] = []

    def count(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        statements.append(statement)

    events = [
        updated(f"many-{i % 50}", 1 + i // 50, cause=f"in-many-{i}", order_id=f"o-{i}", value_tier="ABCD"[i % 4])
        for i in range(200)
    ]
    event.listen(outreach.engine.sync_engine, "before_cursor_execute", count)
    try:
        await outreach.batch(events)
    finally:
        event.remove(outreach.engine.sync_engine, "before_cursor_execute", count)
        planned = len(await outreach.rows(select(touches.c.touch_id)))
        await outreach.engine.dispose()
    # 200 events planning hundreds of touches: per-event statements would be well over 1,000.
    assert planned > 250
    assert len(statements) < 30, "\n".join(statements)


async def test_a_batch_reads_whole_rows_only_of_touches_a_rule_can_look_at(outreach: Outreach) -> None:
    # Of a customer's recent touches a batch needs whole rows only where a dedupe window compares
    # them (their plan has one) or a purchase can convert them; of the rest only the key.
    cid = "many-touches"
    recent = NOW - timedelta(days=2)
    kinds = {
        # name: (plan, status, holdout, sent, converted) and whether its row is read whole
        "follow-up scheduled": (("post_purchase_follow_up", "scheduled", False, False, False), False),
        "follow-up cancelled": (("post_purchase_follow_up", "cancelled", False, False, False), False),
        "follow-up suppressed": (("post_purchase_follow_up", "suppressed", False, False, False), False),
        "follow-up sent": (("post_purchase_follow_up", "sent", False, True, False), True),
        "follow-up held out": (("post_purchase_follow_up", "suppressed", True, False, False), True),
        "follow-up converted": (("post_purchase_follow_up", "converted", False, True, True), False),
        "windowed scheduled": (("tier_upgrade_thanks", "scheduled", False, False, False), True),
        "windowed cancelled": (("tier_upgrade_thanks", "cancelled", False, False, False), True),
    }
    async with transaction(outreach.sessions) as session:
        await session.execute(
            insert(touches),
            [
                {
                    "touch_id": f"t-{n}",
                    "customer_id": cid,
                    "plan": plan,
                    "channel": "email",
                    "status": status,
                    "due_at": recent,
                    "idempotency_key": f"{plan}:{cid}:{n}",
                    "cause_event_id": f"in-{n}",
                    "created_at": recent,
                    "updated_at": recent,
                    "holdout": holdout,
                    "sent_at": recent if sent else None,
                    "converted_at": recent if converted else None,
                }
                for n, ((plan, status, holdout, sent, converted), _) in enumerate(kinds.values())
            ],
        )
    windowed = {"tier_upgrade_thanks"}
    async with outreach.sessions() as session:
        rows = await repository.touches_of(session, [cid], since=NOW - timedelta(days=30), windowed_plans=windowed)
        keys = await repository.touch_keys_of(session, [cid])
        everything = await repository.touches_of(session, [cid], since=NOW - timedelta(days=30))
    whole = {row["touch_id"] for row in rows[cid]}
    expected = {f"t-{n}" for n, (_, read) in enumerate(kinds.values()) if read}
    assert whole == expected
    assert len(everything[cid]) == len(kinds)
    assert sorted(keys[cid]) == sorted(row["idempotency_key"] for row in everything[cid])

    # Planning over the narrowed rows: a purchase converts the sent and the held-out touches.
    await outreach.batch([purchase(cid, "o-new", at=NOW - timedelta(days=1))])
    converted = await outreach.rows(
        select(touches.c.touch_id).where(touches.c.customer_id == cid, touches.c.converted_order_id == "o-new")
    )
    assert {row["touch_id"] for row in converted} == {"t-3", "t-4"}


async def test_a_planning_batchs_touch_reads_use_their_indexes(database_url: str) -> None:
    # Replaying planning on a soak's 145,869 touches, an offer budget's sum scanned the table (64 ms a
    # batch, growing with it) and the keys were read row by row; migration 0004 gave both an index.
    # SQLite says which index a statement uses; PostgreSQL picks by statistics, so only SQLite asserts.
    if not database_url.startswith("sqlite"):
        pytest.skip("EXPLAIN QUERY PLAN is SQLite's; PostgreSQL's choice depends on table statistics")
    running = await open_outreach(database_url)
    captured: list[tuple[str, Any]] = []

    def seen(_conn: Any, _cursor: Any, statement: str, parameters: Any, *_args: Any) -> None:
        if statement.lstrip().upper().startswith("SELECT") and "FROM touches" in statement:
            captured.append((statement, parameters))

    try:
        event.listen(running.engine.sync_engine, "before_cursor_execute", seen)
        async with running.sessions() as session:
            await repository.offer_spent(session, "win_back", NOW - timedelta(days=30))
            await repository.touch_keys_of(session, ["c-1", "c-2"])
        event.remove(running.engine.sync_engine, "before_cursor_execute", seen)
        plans = []
        async with running.engine.connect() as connection:
            for statement, parameters in captured:
                rows = await connection.exec_driver_sql("EXPLAIN QUERY PLAN " + statement, parameters)
                plans.append(" ".join(str(row[-1]) for row in rows))
    finally:
        await running.engine.dispose()
    assert len(plans) == 2, captured
    assert "USING INDEX ix_touches_plan_offer" in plans[0], plans[0]
    assert "USING COVERING INDEX ix_touches_customer_key" in plans[1], plans[1]
