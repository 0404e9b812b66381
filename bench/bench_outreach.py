"""Benchmark outreach: touches planned per second from huitou.customers, and touches dispatched per
second to the dev SMTP sink — each against a reference measured in the same run.

Run from the repository root:  python bench/bench_outreach.py  [--runs 3] [--events 2000] [--touches 500]

Starts a Tansu broker and the dev SMTP sink (``python -m shared.smtp_sink``, Maildir) on free
ports, publishes ``--events`` customer.updated events (first purchases with contact data,
birthdays and time zones spread out) once, then for each run, one after the other, on a fresh
SQLite database:

* plan/reference: the effectively-once consumer skeleton alone (``ConsumerLoop`` + a handler that
  only claims the event id in ``processed_events``), a new consumer group;
* plan/outreach:  the real ``OutreachHandler`` (snapshot, event/change/calendar planning, policy,
  outbox), a new consumer group;
* dispatch/reference: aiosmtplib sending the same rendered messages straight to the sink over
  ``--concurrency`` connections (what the sink and SMTP cost by themselves);
* dispatch/outreach: the ``Dispatcher`` draining ``--touches`` due touches (claim, policy re-check,
  render, three commits per send) to the same sink.

Prints a markdown report and writes it into the "## Outreach" section of docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import random
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import aiosmtplib
import httpx
from aiokafka import AIOKafkaProducer, ConsumerRecord
from sqlalchemy import func, select

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from services.outreach import repository  # noqa: E402
from services.outreach.api import MIGRATIONS, build_adapters  # noqa: E402
from services.outreach.care import plan_update  # noqa: E402
from services.outreach.channels import OutboundMessage, SmtpConfig, build_email  # noqa: E402
from services.outreach.dispatcher import Dispatcher  # noqa: E402
from services.outreach.planning import PlanCatalog, apply_planned  # noqa: E402
from services.outreach.settings import OutreachSettings  # noqa: E402
from services.outreach.tables import outbox, processed_events, touches  # noqa: E402
from services.outreach.worker import OutreachHandler  # noqa: E402
from shared.contracts import (  # noqa: E402
    AnyEvent,
    Channel,
    CustomerCause,
    CustomerSnapshot,
    CustomerUpdatedEvent,
    CustomerUpdatedPayload,
    Purpose,
    to_wire,
)
from shared.db import create_engine, migrate, session_factory, transaction  # noqa: E402
from shared.kafka import BatchHandler, ConsumerLoop, EventProducer, ensure_topics  # noqa: E402
from shared.ledger import OutboxRelay, claim_event  # noqa: E402
from shared.observability import ServiceMetrics  # noqa: E402
from shared.service import is_transient  # noqa: E402
from shared.topics import CUSTOMERS  # noqa: E402
from tests.support import Broker, free_port, wait_for_port  # noqa: E402

REPORT = ROOT / "docs" / "benchmarks.md"
SECTION = "## Outreach"
ZONES = ("Asia/Shanghai", "Europe/Berlin", "America/New_York", "Asia/Tokyo", "UTC")


def daytime_zone() -> str:
    """A fixed-offset zone where it is early afternoon now: quiet hours never defer the bench."""
    from zoneinfo import ZoneInfo

    now = datetime.now(UTC)
    for offset in range(-12, 15):
        name = f"Etc/GMT{'+' if offset <= 0 else '-'}{abs(offset)}" if offset else "UTC"
        if 13 <= now.astimezone(ZoneInfo(name)).hour < 16:
            return name
    return "UTC"


def customer_updates(count: int) -> list[CustomerUpdatedEvent]:
    rng = random.Random(7)
    now = datetime.now(UTC)
    events = []
    for i in range(count):
        cid = f"bench-{i}"
        occurred = now - timedelta(minutes=rng.randint(1, 600))
        snapshot = CustomerSnapshot(
            email=f"{cid}@example.com",
            first_name=f"C{i}",
            locale=rng.choice(["zh-CN", "en"]),
            timezone=rng.choice(ZONES),
            birthday=date(1990, rng.randint(1, 12), rng.randint(1, 28)),
            consents={"email:marketing": True},
            order_count=1,
            value_tier=rng.choice(["A", "B", "C", "D"]),
        )
        events.append(
            CustomerUpdatedEvent(
                event_id=f"cu-{cid}",
                customer_id=cid,
                occurred_at=occurred,
                payload=CustomerUpdatedPayload(
                    version=1,
                    snapshot=snapshot,
                    cause=CustomerCause(
                        event_id=f"in-{cid}",
                        type="purchase",
                        occurred_at=occurred,
                        order_id="o-1",
                        amount=Decimal("58.00"),
                    ),
                ),
            )
        )
    return events


async def publish(bootstrap: str, events: list[CustomerUpdatedEvent]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5)
    await producer.start()
    try:
        futures = [await producer.send(CUSTOMERS, to_wire(e), key=e.customer_id.encode()) for e in events]
        await asyncio.gather(*futures)
    finally:
        await producer.stop()


async def fresh_db(
    tmp: Path, name: str, settings_kwargs: dict[str, Any]
) -> tuple[Any, Any, OutreachSettings, PlanCatalog]:
    url = f"sqlite+aiosqlite:///{tmp / name}.db"
    settings = OutreachSettings(database_url=url, **settings_kwargs)
    engine = create_engine(url)
    await migrate(engine, MIGRATIONS)
    sessions = session_factory(engine)
    catalog = PlanCatalog(sessions, settings)
    await catalog.seed_defaults()
    return engine, sessions, settings, catalog


class FirstEvent:
    """The handler under test, noting when the first event reaches it."""

    def __init__(self, handler: Any) -> None:
        self.handler = handler
        self.first: float | None = None

    def note(self) -> None:
        if self.first is None:
            self.first = time.perf_counter()

    async def __call__(self, event: AnyEvent, record: ConsumerRecord[bytes, bytes]) -> None:
        self.note()
        await self.handler(event, record)


class BatchedFirstEvent(FirstEvent):
    @asynccontextmanager
    async def transaction(self, upcoming: Sequence[AnyEvent] = ()) -> AsyncIterator[Any]:
        self.note()
        async with self.handler.transaction(upcoming) as apply:
            yield apply


async def consume_all(
    bootstrap: str, group: str, handler: Any, sessions: Any, producer: EventProducer, expected: int
) -> float:
    """Seconds from the first handled event until ``expected`` event ids are claimed (the group
    join before the first event is the broker's, not the handler's, and is left out)."""
    # A batch handler stays one, so the loop gives it runs of records as in production.
    timed = BatchedFirstEvent(handler) if isinstance(handler, BatchHandler) else FirstEvent(handler)
    loop = ConsumerLoop(
        topics=[CUSTOMERS],
        group_id=group,
        bootstrap_servers=bootstrap,
        handler=timed,
        producer=producer,
        metrics=ServiceMetrics(),
        service="outreach",
        is_transient=is_transient,
    )
    task = asyncio.create_task(loop.run())
    try:
        while True:
            async with sessions() as session:
                done = await session.scalar(select(func.count()).select_from(processed_events))
            if (done or 0) >= expected:
                assert timed.first is not None
                return time.perf_counter() - timed.first
            if task.done():
                task.result()
            await asyncio.sleep(0.02)
    finally:
        loop.stop()
        await asyncio.wait_for(task, 30)


async def plan_run(args: argparse.Namespace, bootstrap: str, tmp: Path, run: int) -> dict[str, float]:
    producer = EventProducer(bootstrap)
    await producer.start()
    try:
        engine, sessions, _, _ = await fresh_db(tmp, f"ref-{run}", {})

        async def claim_only(event: AnyEvent, record: ConsumerRecord[bytes, bytes]) -> None:
            async with transaction(sessions) as session:
                await claim_event(session, processed_events, event.event_id)

        reference = await consume_all(bootstrap, f"bench-ref-{run}", claim_only, sessions, producer, args.events)
        await engine.dispose()

        engine, sessions, settings, catalog = await fresh_db(tmp, f"plan-{run}", {})
        relay = OutboxRelay(sessions, outbox, producer, ServiceMetrics(), "outreach")
        handler = OutreachHandler(sessions, relay, ServiceMetrics(), settings=settings, catalog=catalog)
        seconds = await consume_all(bootstrap, f"bench-plan-{run}", handler, sessions, producer, args.events)
        async with sessions() as session:
            planned = await session.scalar(select(func.count()).select_from(touches)) or 0
        await engine.dispose()
    finally:
        await producer.stop()
    return {
        "ref_events_s": args.events / reference,
        "events_s": args.events / seconds,
        "touches_s": planned / seconds,
        "touches": planned,
    }


async def seed_due(sessions: Any, settings: OutreachSettings, catalog: PlanCatalog, count: int) -> None:
    book = (await catalog.current()).book
    now = datetime.now(UTC)
    zone = daytime_zone()
    async with transaction(sessions) as session:
        for i in range(count):
            cid = f"send-{i}"
            snapshot = CustomerSnapshot(
                email=f"{cid}@example.com",
                first_name=f"S{i}",
                locale="en",
                timezone=zone,
                consents={"email:marketing": True},
                order_count=2,
                last_order_items=["oolong 250g"],
            )
            payload = CustomerUpdatedPayload(
                version=1,
                snapshot=snapshot,
                cause=CustomerCause(
                    event_id=f"ev-{cid}",
                    type="purchase",
                    occurred_at=now - timedelta(days=3),
                    order_id="o-1",
                    amount=Decimal("10"),
                ),
            )
            [planned] = [p for p in plan_update(cid, payload, book, now=now) if p.plan == "post_purchase_follow_up"]
            await repository.remember_customer(session, cid, 1, snapshot, now)
            await apply_planned(
                session, planned, cause_event_id=f"ev-{cid}", book=book, settings=settings, now=now, snapshot=snapshot
            )


async def raw_smtp(port: int, count: int, concurrency: int) -> float:
    config = SmtpConfig(host="127.0.0.1", port=port, mail_from="care@huitou.local", message_id_domain="huitou.local")
    messages = [
        build_email(
            OutboundMessage(
                touch_id=f"raw-{i}",
                customer_id=f"c{i}",
                channel=Channel.EMAIL,
                address=f"c{i}@example.com",
                subject="How is your order?",
                body="Hi, how are you getting on with oolong 250g?",
                plan="bench",
                purpose=Purpose.MARKETING,
                locale="en",
            ),
            config,
        )
        for i in range(count)
    ]
    queue: asyncio.Queue[Any] = asyncio.Queue()
    for message in messages:
        queue.put_nowait(message)

    async def worker() -> None:
        client = aiosmtplib.SMTP(hostname="127.0.0.1", port=port)
        await client.connect()
        try:
            while not queue.empty():
                await client.send_message(queue.get_nowait())
        finally:
            await client.quit()

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return count / (time.perf_counter() - started)


async def dispatch_run(args: argparse.Namespace, smtp_port: int, tmp: Path, run: int) -> dict[str, float]:
    reference = await raw_smtp(smtp_port, args.touches, args.concurrency)
    engine, sessions, settings, catalog = await fresh_db(
        tmp,
        f"send-{run}",
        {"smtp_port": smtp_port, "holdout_share": 0.0, "dispatch_concurrency": args.concurrency, "dispatch_batch": 200},
    )
    await seed_due(sessions, settings, catalog, args.touches)
    async with httpx.AsyncClient() as client:
        adapters = build_adapters(settings, client)
        dispatcher = Dispatcher(sessions, settings, catalog, adapters, None, ServiceMetrics())
        started = time.perf_counter()
        while await dispatcher.dispatch_once():
            pass
        seconds = time.perf_counter() - started
        for adapter in adapters.values():
            await adapter.close()
    async with sessions() as session:
        sent = await session.scalar(select(func.count()).select_from(touches).where(touches.c.status == "sent")) or 0
    await engine.dispose()
    if sent != args.touches:
        raise RuntimeError(f"only {sent} of {args.touches} touches were sent")
    return {"ref_sends_s": reference, "sends_s": sent / seconds}


def median(runs: list[dict[str, float]], key: str) -> float:
    return statistics.median(r[key] for r in runs)


def report(args: argparse.Namespace, plans: list[dict[str, float]], sends: list[dict[str, float]]) -> str:
    ref_plan, plan_events = median(plans, "ref_events_s"), median(plans, "events_s")
    ref_send, send = median(sends, "ref_sends_s"), median(sends, "sends_s")
    stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    plan_row = (
        "| customer.updated consumed and planned (first purchase, birthday, tier; every plan evaluated) "
        f"| {plan_events:,.0f} events/s | claim-only consumer {ref_plan:,.0f} events/s "
        f"| {plan_events / ref_plan:.2f}× |"
    )
    touch_row = (
        f"| touches planned from huitou.customers | {median(plans, 'touches_s'):,.0f} touches/s "
        f"({median(plans, 'touches'):,.0f} per run) | — | — |"
    )
    send_row = (
        f"| touches dispatched to the SMTP sink (claim, policy, render, 3 commits, SMTP) | {send:,.0f} touches/s "
        f"| raw aiosmtplib to the same sink {ref_send:,.0f} msgs/s | {send / ref_send:.2f}× |"
    )
    return f"""{SECTION}

`python bench/bench_outreach.py --runs {args.runs} --events {args.events} --touches {args.touches}` — {stamp};
{platform.machine()}, {os.cpu_count()} logical cores shared with other work, Python {platform.python_version()},
SQLite (WAL), Tansu broker and the dev SMTP sink (`shared.smtp_sink`, Maildir) on loopback. Medians of
{args.runs} runs; each run uses a fresh database and consumer group.

| case | median | reference (same run) | ratio |
|---|---:|---:|---:|
{plan_row}
{touch_row}
{send_row}

Per run — planned events/s: {", ".join(f"{r['events_s']:,.0f}" for r in plans)}; dispatched/s:
{", ".join(f"{r['sends_s']:,.0f}" for r in sends)}.

Where the time goes: the consumer loop hands outreach runs of a poll's records, across its
partitions (up to 500, closed after 0.2 s), in one transaction each. Outreach reads what a run needs up front, one query
per kind for all its customers (claimed event ids, snapshots, tombstones, consents, the customers'
touches), plans every event in memory against that state, and writes at the end one statement per
table (claims, snapshots, touches, suppressions, operator tasks, the outbox in order). 200
`customer.updated` events over 50 customers cost 10 statements in all
(`tests/integration/test_outreach_batches.py` counts them), where the per-event path cost about 8 per
event. What remains is CPU: in-process without the broker (pyinstrument, the same 1,000 events in
runs of 500) about 0.55 ms per event, a little over half of it planning itself (calendar moments,
audience checks, touch rows and lifecycle messages), about a third SQLAlchemy and aiosqlite
executing the batched statements, just under a tenth serialising the final snapshots. The claim-only
reference commits one event per transaction (one statement and one commit each), so batched
planning now outpaces it. A send is a claim plus three commits (preparing → sending → sent, which
is what makes it crash-safe) and about 10 statements; on SQLite through aiosqlite each is a thread
hop of roughly 0.5–1 ms on these shared cores, which bounds dispatch; its reference uses no
database at all (raw SMTP). Scale-out is by replicas: partitions of `huitou.customers` for
planning, `SKIP LOCKED` claims on PostgreSQL for dispatch.
"""


def write_section(text: str) -> None:
    """Replace (or add) the "## Outreach" section; the rest of the file is someone else's."""
    current = REPORT.read_text() if REPORT.exists() else "# Benchmarks\n"
    lines = current.splitlines()
    start = next((i for i, line in enumerate(lines) if line.strip() == SECTION), None)
    if start is None:
        updated = current.rstrip("\n") + "\n\n" + text
    else:
        end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith("## ")), len(lines))
        updated = "\n".join([*lines[:start], *text.rstrip("\n").splitlines(), "", *lines[end:]]).rstrip("\n") + "\n"
    REPORT.write_text(updated.rstrip("\n") + "\n")


def start_sink(port: int, maildir: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "shared.smtp_sink", "--port", str(port), "--maildir", str(maildir)],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.STDOUT,
    )


async def main_async(args: argparse.Namespace) -> str:
    with tempfile.TemporaryDirectory(prefix="huitou-bench-outreach-") as name:
        tmp = Path(name)
        broker = Broker(free_port(), tmp / "broker.log")
        broker.start()
        smtp_port = free_port()
        sink = start_sink(smtp_port, tmp / "mail")
        try:
            wait_for_port(smtp_port)
            await ensure_topics(broker.bootstrap)
            await publish(broker.bootstrap, customer_updates(args.events))
            plans, sends = [], []
            for run in range(args.runs):
                plans.append(await plan_run(args, broker.bootstrap, tmp, run))
                sends.append(await dispatch_run(args, smtp_port, tmp, run))
                print(f"run {run + 1}: {plans[-1]} {sends[-1]}", file=sys.stderr, flush=True)
        finally:
            sink.terminate()
            sink.wait(10)
            broker.stop()
    return report(args, plans, sends)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--events", type=int, default=2000, help="customer.updated events to plan from")
    parser.add_argument("--touches", type=int, default=500, help="due touches to dispatch")
    parser.add_argument("--concurrency", type=int, default=8, help="SMTP connections (dispatcher and reference)")
    parser.add_argument("--no-write", action="store_true", help="print only; leave docs/benchmarks.md alone")
    args = parser.parse_args()
    text = asyncio.run(main_async(args))
    print(text)
    if not args.no_write:
        write_section(text)


if __name__ == "__main__":
    main()
