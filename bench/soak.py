"""Soak: the whole stack at a steady intake rate for minutes; do memory and lag stay flat?

Run from the repository root:

    python bench/soak.py [--database sqlite|postgres] [--minutes 10] [--rate 300] [--label L] [--no-write]

The dev stack starts as in bench_pipeline.py (``python -m shared.devstack``, SQLite files or one
throwaway PostgreSQL database). bench/loadgen.py's population is sent to ingest's ``/v1/events``
at ``--rate`` events/s, open loop, for ``--minutes``. Every ``--sample-seconds`` the soak records,
per process, the resident set size (``VmRSS`` from /proc) and, from the services' /metrics, the
summed consumer lag of scoring and outreach, their outbox backlogs, the events each consumed, and
how many memory blocks Python's allocator holds in each (``huitou_python_allocated_blocks``): RSS
that grows while those stay flat is native memory — SQLite's page cache, the allocator's arenas —
not Python objects piling up.

Flat means: after a one-minute warm-up, the least-squares slope of each service's RSS is small
(reported in MiB per minute and as the projected growth over a day), and lag does not grow —
it ends where it started, drained, after the load stops. The samples go to a CSV, the plot to
docs/soak-<database>.png, and a "## Soak" section to docs/benchmarks.md. With ``--label`` (say "60
minutes") a soak of another length keeps its own section ("## Soak, 60 minutes") and plots
(docs/soak-<database>-60-minutes.png) beside the standard one.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import os
import re
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import numpy as np
from prometheus_client.parser import text_string_to_metric_families

ROOT = Path(__file__).resolve().parents[1]
for path in (ROOT, ROOT / "bench"):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

from bench_pipeline import WRITE_KEY, database_env, stack_env, write_section  # noqa: E402
from loadgen import Population, Traffic, drive  # noqa: E402

from shared.devstack import SERVICES  # noqa: E402
from tests.support import RunningStack, dev_stack  # noqa: E402

OUT = ROOT / "docs" / "benchmarks.md"
WARM_UP_SECONDS = 60.0
CONSUMERS = ("scoring", "outreach")


@dataclass
class Sample:
    at: float
    rss_mib: dict[str, float]
    lag: float
    backlog: float
    consumed: dict[str, float]
    accepted: int
    heap_kblocks: dict[str, float] = field(default_factory=dict)


@dataclass
class Soak:
    database: str
    rate: float
    seconds: float
    samples: list[Sample] = field(default_factory=list)
    accepted: int = 0
    failed: int = 0
    drained_seconds: float | None = None


def service_pids(stack: RunningStack) -> dict[str, int]:
    """The launcher's children by role: each service's ``python -m services.<name>`` and the broker."""
    found: dict[str, int] = {}
    for pid in _descendants(stack.process.pid):
        try:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        words = [a.decode(errors="replace") for a in argv]
        for service in SERVICES:
            if f"services.{service}" in words:
                found[service] = pid
        if words and words[0].endswith("tansu"):
            found["broker"] = pid
    return found


def _descendants(pid: int) -> list[int]:
    out: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            children = [int(c) for c in (task / "children").read_text().split()]
        except OSError:
            continue
        for child in children:
            out += [child, *_descendants(child)]
    return out


def rss_mib(pid: int) -> float:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return float("nan")
    match = re.search(r"^VmRSS:\s+(\d+) kB", status, re.M)
    return int(match.group(1)) / 1024 if match else float("nan")


async def metrics(client: httpx.AsyncClient, url: str) -> dict[str, float]:
    """The sums this soak watches, from one service's /metrics."""
    text = (await client.get(url + "/metrics")).text
    sums = {"lag": 0.0, "backlog": 0.0, "consumed": 0.0, "heap_blocks": float("nan")}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "huitou_consumer_lag":
                sums["lag"] += sample.value
            elif sample.name == "huitou_outbox_backlog":
                sums["backlog"] += sample.value
            elif sample.name == "huitou_events_consumed_total" and sample.labels.get("outcome") == "processed":
                sums["consumed"] += sample.value
            elif sample.name == "huitou_python_allocated_blocks":
                sums["heap_blocks"] = sample.value
    return sums


async def sample_forever(stack: RunningStack, soak: Soak, every: float, stop: asyncio.Event) -> None:
    pids = service_pids(stack)
    started = time.perf_counter()
    async with httpx.AsyncClient(timeout=10) as client:
        while True:
            seen = {s: await metrics(client, stack.url(s)) for s in CONSUMERS}
            soak.samples.append(
                Sample(
                    at=time.perf_counter() - started,
                    rss_mib={name: rss_mib(pid) for name, pid in pids.items()},
                    lag=sum(m["lag"] for m in seen.values()),
                    backlog=sum(m["backlog"] for m in seen.values()),
                    consumed={s: m["consumed"] for s, m in seen.items()},
                    accepted=soak.accepted,
                    heap_kblocks={s: m["heap_blocks"] / 1000 for s, m in seen.items()},
                )
            )
            if stop.is_set():
                return
            try:
                await asyncio.wait_for(stop.wait(), every)
            except TimeoutError:
                pass


async def run_soak(stack: RunningStack, args: argparse.Namespace, database: str) -> Soak:
    soak = Soak(database, args.rate, args.minutes * 60)
    traffic = Traffic(Population.generate(args.population, seed=23), seed=23)
    stop = asyncio.Event()
    sampler = asyncio.create_task(sample_forever(stack, soak, args.sample_seconds, stop))
    # Sent in slices, so the generator never holds more than a slice of events in memory.
    slice_seconds = 10.0
    deadline = time.perf_counter() + soak.seconds
    while time.perf_counter() < deadline:
        events = traffic.take(int(args.rate * slice_seconds))
        sent = await drive(stack.url("ingest"), WRITE_KEY, events, rate=args.rate)
        soak.accepted += sent.accepted
        soak.failed += sent.failed
    load_stopped = time.perf_counter()
    async with httpx.AsyncClient(timeout=10) as client:
        while time.perf_counter() - load_stopped < args.drain_timeout:
            seen = [await metrics(client, stack.url(s)) for s in CONSUMERS]
            if all(m["lag"] == 0 and m["backlog"] == 0 for m in seen):
                soak.drained_seconds = time.perf_counter() - load_stopped
                break
            await asyncio.sleep(1)
    stop.set()
    await sampler
    return soak


def slope_per_minute(samples: list[Sample], values: list[float]) -> float:
    """Least-squares slope (per minute) after the warm-up."""
    points = [(s.at, v) for s, v in zip(samples, values, strict=True) if s.at >= WARM_UP_SECONDS and v == v]
    if len(points) < 3:
        return float("nan")
    x, y = np.array([p[0] for p in points]) / 60, np.array([p[1] for p in points])
    return float(np.polyfit(x, y, 1)[0])


def plot(soak: Soak, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    minutes = [s.at / 60 for s in soak.samples]
    figure, (memory, heap, lag) = plt.subplots(3, 1, figsize=(9, 8.5), sharex=True)
    for name in sorted(soak.samples[0].rss_mib):
        if name != "broker":  # on its own scale, below: it would flatten the services' lines
            memory.plot(minutes, [s.rss_mib.get(name, float("nan")) for s in soak.samples], label=name)
    memory.set_ylabel("services' RSS (MiB)")
    if "broker" in soak.samples[0].rss_mib:
        broker = memory.twinx()
        rss = [s.rss_mib.get("broker", float("nan")) for s in soak.samples]
        broker.plot(minutes, rss, color="grey", linestyle=":", label="broker (in-memory log), right scale")
        broker.set_ylabel("broker RSS (MiB)")
        broker.legend(loc="lower right", fontsize="small")
    memory.set_title(f"Huitou soak on {soak.database}: {soak.rate:.0f} events/s for {soak.seconds / 60:g} min")
    memory.legend(loc="upper left", ncol=3, fontsize="small")
    memory.grid(alpha=0.3)
    for name in CONSUMERS:
        heap.plot(minutes, [s.heap_kblocks.get(name, float("nan")) for s in soak.samples], label=name)
    heap.set_ylabel("Python heap (k blocks)")
    heap.legend(loc="upper left", fontsize="small")
    heap.grid(alpha=0.3)
    lag.plot(minutes, [s.lag for s in soak.samples], label="consumer lag (scoring + outreach)")
    lag.plot(minutes, [s.backlog for s in soak.samples], label="outbox backlog")
    for axis in (memory, heap, lag):
        axis.axvline(soak.seconds / 60, color="grey", linestyle="--", linewidth=0.8)  # the load stops here
    lag.set_ylabel("messages")
    lag.set_xlabel("minutes since the load started")
    lag.legend(loc="upper left", fontsize="small")
    lag.grid(alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def write_csv(soak: Soak, path: Path) -> None:
    names = sorted(soak.samples[0].rss_mib)
    with path.open("w", newline="") as out:
        writer = csv.writer(out)
        writer.writerow(["seconds", *(f"rss_mib_{n}" for n in names), "lag", "outbox_backlog", "accepted",
                         *(f"heap_kblocks_{n}" for n in CONSUMERS)])  # fmt: skip
        for s in soak.samples:
            writer.writerow([f"{s.at:.1f}", *(f"{s.rss_mib.get(n, float('nan')):.1f}" for n in names),
                             int(s.lag), int(s.backlog), s.accepted,
                             *(f"{s.heap_kblocks.get(n, float('nan')):.1f}" for n in CONSUMERS)])  # fmt: skip


def plot_name(database: str, label: str) -> str:
    slug = re.sub(r"[^a-z0-9]+", "-", label.lower()).strip("-")
    return f"soak-{database}-{slug}.png" if slug else f"soak-{database}.png"


def report(soaks: list[Soak], args: argparse.Namespace) -> str:
    label = f" --label '{args.label}'" if args.label else ""
    lines = [
        f"## Soak, {args.label}" if args.label else "## Soak",
        "",
        f"`python bench/soak.py --database {args.database} --minutes {args.minutes:g} --rate {args.rate:g} "
        f"--population {args.population}{label}` on {os.cpu_count()} cores "
        "(shared machine). The whole dev stack at a steady open-loop rate from bench/loadgen.py; RSS from "
        f"/proc, lag and outbox backlog from /metrics every {args.sample_seconds:g} s. Slopes are least-squares "
        f"fits after a {WARM_UP_SECONDS:.0f} s warm-up. Plots: "
        + ", ".join(f"[{s.database}]({plot_name(s.database, args.label)})" for s in soaks)
        + ". The dev broker (Tansu, `memory://` storage) keeps every message in memory, so its RSS grows "
        "with the data by design; the services' RSS and the lag are what must stay flat.",
        "",
        "| database | events accepted (failed) | RSS after warm-up → end, MiB (slope MiB/min) "
        "| Python heap after warm-up → end, k blocks (slope /min) | max lag | lag slope /min | drained after stop |",
        "|---|---|---|---|---|---|---|",
    ]
    for soak in soaks:
        warm = next((s for s in soak.samples if s.at >= WARM_UP_SECONDS), soak.samples[0])
        last = soak.samples[-1]
        rss = "; ".join(
            f"{name} {warm.rss_mib[name]:.0f}→{last.rss_mib[name]:.0f} "
            f"({slope_per_minute(soak.samples, [s.rss_mib[name] for s in soak.samples]):+.2f})"
            for name in sorted(warm.rss_mib)
        )
        heap = "; ".join(
            f"{name} {warm.heap_kblocks[name]:.0f}→{last.heap_kblocks[name]:.0f} "
            f"({slope_per_minute(soak.samples, [s.heap_kblocks[name] for s in soak.samples]):+.1f})"
            for name in CONSUMERS
        )
        during = [s for s in soak.samples if s.at <= soak.seconds]
        lag_slope = slope_per_minute(during, [s.lag for s in during])
        drained = f"{soak.drained_seconds:.0f} s" if soak.drained_seconds is not None else "not within the timeout"
        max_lag = max(s.lag for s in soak.samples)
        lines.append(
            f"| {soak.database} | {soak.accepted:,} ({soak.failed:,}) | {rss} | {heap} | {max_lag:,.0f} "
            f"| {lag_slope:+.1f} | {drained} |"
        )
    return "\n".join(lines) + "\n"


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--database", choices=["sqlite", "postgres", "both"], default="sqlite")
    parser.add_argument("--minutes", type=float, default=10)
    parser.add_argument("--rate", type=float, default=300, help="steady intake rate, events/s")
    parser.add_argument("--population", type=int, default=20_000)
    parser.add_argument("--sample-seconds", type=float, default=5)
    parser.add_argument("--drain-timeout", type=float, default=300)
    parser.add_argument("--no-write", action="store_true", help="print only; leave docs/ alone")
    parser.add_argument("--label", default="", help='a soak of its own, e.g. "60 minutes": own section and plots')
    args = parser.parse_args()
    soaks = []
    for database in ["sqlite", "postgres"] if args.database == "both" else [args.database]:
        print(f"{database}: soaking at {args.rate:g} events/s for {args.minutes:g} min …", flush=True)
        with (
            database_env(database) as env,
            tempfile.TemporaryDirectory() as var,
            dev_stack(Path(var), stack_env(env)) as stack,
        ):
            soak = await run_soak(stack, args, database)
        soaks.append(soak)
        csv_path = Path(tempfile.gettempdir()) / f"huitou-soak-{database}.csv"
        write_csv(soak, csv_path)
        print(f"  samples in {csv_path}", flush=True)
        if not args.no_write:
            plot(soak, ROOT / "docs" / plot_name(database, args.label))
    section = report(soaks, args)
    print(section)
    if not args.no_write:
        write_section(section)
        print(f"wrote the Soak section of {OUT.relative_to(ROOT)}")


if __name__ == "__main__":
    asyncio.run(main())
