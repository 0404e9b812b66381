"""Benchmark what a customer's past costs each new event in scoring: the order cache on and off.

Run from the repository root:

    python bench/bench_history.py [--customers 100] [--histories 10,100,400] [--batch 100]
                                  [--rounds 7] [--database sqlite|postgres|both] [--no-write]

Prints a markdown section and writes it as the "## Scoring with long histories" section of
docs/benchmarks.md.

Scoring folds each event over all of the customer's orders, so a heavy buyer's history is read
with each of their events unless the consumer kept it (``HUITOU_SCORING_ORDER_CACHE_LINES``). The
45-minute soak found the order read at a quarter of scoring's CPU once the busiest customers held
dozens of orders. This bench isolates that cost, in process and without a broker:

* ``--customers`` customers are given ``K`` orders each (one a day, going back), for each ``K`` in
  ``--histories``, through the scoring handler in batches, and a population model is fitted on
  them, so every later event is fully scored (BG/NBD, Gamma-Gamma, tiers, grades).
* The seeded database is copied (SQLite: the file; PostgreSQL: CREATE DATABASE … TEMPLATE), one
  copy per arm: the cache at its default, and off (``0``: read every batch). Each arm's handler
  first sees one untimed batch naming every customer (that fills its cache), then ``--rounds``
  batches of ``--batch`` new purchases, each of distinct customers, as a consumer's poll gives them.
  The arms alternate batch by batch, so both see the same machine.
* Reported: the median batch's wall time and this process's CPU time per event (PostgreSQL's own
  CPU is another process and not counted), and their ratio cache-on / cache-off.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import random
import re
import shutil
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from services.scoring.api import MIGRATIONS  # noqa: E402
from services.scoring.clock import Clock  # noqa: E402
from services.scoring.engine import ModelStore  # noqa: E402
from services.scoring.maintenance import Maintenance  # noqa: E402
from services.scoring.settings import ScoringSettings  # noqa: E402
from services.scoring.tables import outbox  # noqa: E402
from services.scoring.worker import ScoringHandler  # noqa: E402
from shared.contracts import PurchaseEvent, PurchasePayload  # noqa: E402
from shared.db import create_engine, migrate, session_factory  # noqa: E402
from shared.kafka import EventProducer  # noqa: E402
from shared.ledger import OutboxRelay  # noqa: E402
from shared.observability import ServiceMetrics  # noqa: E402
from tests.support import postgres_bin, postgres_cluster  # noqa: E402

SCRATCH = Path(tempfile.mkdtemp(prefix="huitou-bench-history-"))
OUT = ROOT / "docs" / "benchmarks.md"
TITLE = "## Scoring with long histories"
START = datetime(2024, 1, 1, 12, tzinfo=UTC)


class Arm:
    """A scoring handler over one database, as the consumer runs it (batches, one model poll)."""

    def __init__(self, url: str, cache_lines: int) -> None:
        self.url = url
        self.settings = ScoringSettings(clock="replay", order_cache_lines=cache_lines)
        self.engine = create_engine(url, "scoring")
        self.sessions = session_factory(self.engine)
        self.metrics = ServiceMetrics()
        self.models = ModelStore(self.sessions, poll_seconds=3600)
        # The relay is only notified; nothing is published, so its producer never starts.
        self.relay = OutboxRelay(self.sessions, outbox, EventProducer("127.0.0.1:9"), self.metrics, "scoring")
        self.handler = ScoringHandler(
            self.sessions, self.relay, self.metrics, settings=self.settings, models=self.models, clock=Clock("replay")
        )

    async def batch(self, events: list[PurchaseEvent]) -> tuple[float, float]:
        """(wall s, process CPU s) of one transaction applying ``events``."""
        wall, cpu = time.perf_counter(), time.process_time()
        async with self.handler.transaction(events) as apply:
            for event in events:
                await apply(event, None)
        return time.perf_counter() - wall, time.process_time() - cpu

    async def clear_outbox(self) -> None:
        async with self.engine.begin() as connection:
            await connection.execute(outbox.delete())

    async def close(self) -> None:
        await self.engine.dispose()


def purchase(customer: int, serial: int, at: datetime) -> PurchaseEvent:
    return PurchaseEvent(
        event_id=f"h-{customer}-{serial}",
        customer_id=f"c-{customer}",
        occurred_at=at,
        payload=PurchasePayload(order_id=f"o-{customer}-{serial}", amount=Decimal(20 + (customer * 7 + serial) % 80)),
    )


async def seed(url: str, customers: int, history: int) -> None:
    """``history`` orders per customer, one a day up to the day before the measured purchases,
    through the handler (its cache on: seeding is quicker, and the database the same), then a
    fitted model."""
    engine = create_engine(url, "scoring")
    await migrate(engine, MIGRATIONS, "scoring")
    await engine.dispose()  # PostgreSQL copies the database as a template: no session may stay open
    arm = Arm(url, ScoringSettings().order_cache_lines)
    try:
        events = [
            purchase(c, k, START - timedelta(days=history - k) + timedelta(minutes=c % 600))
            for k in range(history)
            for c in range(customers)
        ]
        for start in range(0, len(events), 500):
            await arm.batch(events[start : start + 500])
            await arm.clear_outbox()
        maintenance = Maintenance(arm.sessions, arm.relay, arm.models, arm.settings, Clock("replay"))
        await maintenance.refit(as_of=START, trigger="bench")
        await arm.clear_outbox()
    finally:
        await arm.close()


async def copies(backend: str, seeded: str, names: list[str], base: str | None) -> list[str]:
    if backend == "SQLite":
        source = Path(seeded.split("///", 1)[1])
        found = []
        for name in names:
            target = SCRATCH / f"{source.stem}-{name}.db"
            shutil.copy(source, target)
            found.append(f"sqlite+aiosqlite:///{target}")
        return found
    assert base is not None
    import asyncpg

    template = seeded.rsplit("/", 1)[1]
    connection = await asyncpg.connect(base.replace("postgresql+asyncpg://", "postgresql://") + "/postgres")
    found = []
    try:
        for name in names:
            database = f"{template}_{name}"
            await connection.execute(f'CREATE DATABASE "{database}" TEMPLATE "{template}"')
            found.append(f"{base}/{database}")
    finally:
        await connection.close()
    return found


async def measure(
    backend: str, fresh: Any, customers: int, history: int, batch: int, rounds: int, base: str | None
) -> dict[str, Any]:
    seeded = await fresh()
    started = time.perf_counter()
    await seed(seeded, customers, history)
    print(f"  {backend} K={history}: seeded {customers * history:,} orders in {time.perf_counter() - started:.0f} s")
    on_url, off_url = await copies(backend, seeded, ["on", "off"], base)
    arms = {"on": Arm(on_url, ScoringSettings().order_cache_lines), "off": Arm(off_url, 0)}
    rng = random.Random(history)
    serial = history
    times: dict[str, list[tuple[float, float]]] = {"on": [], "off": []}
    try:
        # Untimed: every customer once (the cached arm keeps their lines), the model read.
        warm = [purchase(c, serial, START + timedelta(hours=1, minutes=c % 50)) for c in range(customers)]
        for arm in arms.values():
            await arm.batch(warm)
        for round_ in range(rounds):
            serial += 1
            chosen = rng.sample(range(customers), min(batch, customers))
            events = [purchase(c, serial, START + timedelta(days=1 + round_, minutes=c % 600)) for c in chosen]
            order = ["on", "off"] if round_ % 2 == 0 else ["off", "on"]
            for name in order:
                times[name].append(await arms[name].batch(events))
                await arms[name].clear_outbox()
        hits, misses = arms["on"].handler.order_cache.hits, arms["on"].handler.order_cache.misses
    finally:
        for arm in arms.values():
            await arm.close()
    n = min(batch, customers)
    result: dict[str, Any] = {"history": history, "events": n, "hits": hits, "misses": misses}
    for name, got in times.items():
        result[f"{name}_wall_ms"] = statistics.median(w for w, _ in got) * 1000
        result[f"{name}_cpu_us"] = statistics.median(c for _, c in got) / n * 1e6
    print(
        f"  {backend} K={history}: batch of {n} wall {result['off_wall_ms']:.0f} → {result['on_wall_ms']:.0f} ms, "
        f"CPU {result['off_cpu_us']:.0f} → {result['on_cpu_us']:.0f} µs/event (cache off → on)",
        flush=True,
    )
    return result


def section(args: argparse.Namespace, results: dict[str, list[dict[str, Any]]]) -> str:
    lines = [
        TITLE,
        "",
        f"`python bench/bench_history.py --customers {args.customers} --histories {args.histories} "
        f"--batch {args.batch} --rounds {args.rounds} --database {args.database}` on "
        f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC; {platform.python_implementation()} {platform.python_version()}, "
        f"{os.cpu_count()} cores, load average {args.load_before:.2f} before the run.",
        "",
        "What a customer's past costs each new event: batches of purchases by customers who hold",
        "*K* orders each, scored by the handler as the consumer runs it, with the order cache at its",
        "default and off. Medians over the batches; the two arms alternate batch by batch on copies of",
        "one seeded database. CPU is this process's (for PostgreSQL the server's is not counted).",
        "",
    ]
    for backend, rows in results.items():
        lines += [
            f"**{backend}** ({args.customers} customers, batches of {rows[0]['events']} events)",
            "",
            "| orders per customer | batch wall, cache off | cache on | on / off | CPU µs/event, off | on | on / off |",
            "|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for r in rows:
            lines.append(
                f"| {r['history']} | {r['off_wall_ms']:.0f} ms | {r['on_wall_ms']:.0f} ms | "
                f"{r['on_wall_ms'] / r['off_wall_ms']:.2f} | {r['off_cpu_us']:.0f} | {r['on_cpu_us']:.0f} | "
                f"{r['on_cpu_us'] / r['off_cpu_us']:.2f} |"
            )
        lines.append("")
        cache = ", ".join(f"K={r['history']}: {r['hits']} hits, {r['misses']} misses" for r in rows)
        lines += [f"Cache use in the cached arm ({cache}).", ""]
    return "\n".join(lines)


def write_section(text_: str) -> None:
    current = OUT.read_text(encoding="utf-8") if OUT.exists() else "# Benchmarks\n"
    pattern = re.compile(rf"^{re.escape(TITLE)}\n.*?(?=^## |\Z)", re.S | re.M)
    updated = (
        pattern.sub(lambda _: text_ + "\n", current) if pattern.search(current) else current.rstrip() + "\n\n" + text_
    )
    OUT.write_text(updated, encoding="utf-8")


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--customers", type=int, default=100)
    parser.add_argument("--histories", default="10,100,400", help="orders per customer, comma-separated")
    parser.add_argument("--batch", type=int, default=100, help="events per transaction (distinct customers)")
    parser.add_argument("--rounds", type=int, default=7, help="timed batches per arm and history")
    parser.add_argument("--database", choices=["sqlite", "postgres", "both"], default="both")
    parser.add_argument("--no-write", action="store_true", help="print only; leave docs/benchmarks.md alone")
    args = parser.parse_args()
    args.load_before = os.getloadavg()[0]
    histories = [int(k) for k in args.histories.split(",")]
    counter = iter(range(1_000_000))
    results: dict[str, list[dict[str, Any]]] = {}

    if args.database in ("sqlite", "both"):

        async def sqlite_url() -> str:
            return f"sqlite+aiosqlite:///{SCRATCH / f'seed-{next(counter)}.db'}"

        results["SQLite"] = [
            await measure("SQLite", sqlite_url, args.customers, k, args.batch, args.rounds, None) for k in histories
        ]
    if args.database in ("postgres", "both"):
        if postgres_bin() is None:
            raise SystemExit("no PostgreSQL server binaries (apt-get install -y postgresql)")
        from tests.conftest import _fresh_pg_database

        with postgres_cluster() as base:

            async def pg_url() -> str:
                return await _fresh_pg_database(base)

            results["PostgreSQL"] = [
                await measure("PostgreSQL", pg_url, args.customers, k, args.batch, args.rounds, base) for k in histories
            ]

    out = section(args, results)
    print(out)
    if not args.no_write:
        write_section(out)
        print(f"written to the '{TITLE}' section of {OUT}")


if __name__ == "__main__":
    try:
        asyncio.run(main())
    finally:
        shutil.rmtree(SCRATCH, ignore_errors=True)
