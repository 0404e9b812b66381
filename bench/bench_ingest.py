"""Benchmark ingest's intake against a raw aiokafka producer on the same broker, in the same run.

Run from the repository root:  python bench/bench_ingest.py  [--runs 3] [--events 20000]

Starts a Tansu broker and ingest (``python -m services.ingest``, uvicorn, its own process) on
free ports, then for each run measures, one after the other (raw, case, raw, case, …, raw):

* raw:      aiokafka ``AIOKafkaProducer`` (acks=all, keyed, ``send`` per message), sending the very
            records ingest writes for such events (stamped, traced, with their ``traceparent``
            header), all sends issued at once and every ack awaited;
* single:   ``POST /v1/events`` with one event per request, ``--concurrency`` clients;
* batched:  ``POST /v1/events`` with ``--batch`` events per request;
* segment:  ``POST /v1/batch`` (Segment format, mapped) with ``--batch`` messages per request.

Each intake case is compared with the mean of the raw rates measured just before and just after
it. The HTTP clients are a minimal keep-alive HTTP/1.1 driver whose requests are built before
the clock starts: the driver runs on the same two cores as ingest and the broker, and its CPU
per event is reported. Ingest does all its real work: write-key auth, body checks, validation,
the dedupe window, acks=all. Prints a markdown report and writes it into the "## Ingest" section
of docs/benchmarks.md (other sections are left as they are).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
from aiokafka import AIOKafkaProducer
from pydantic_core import from_json

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from services.ingest.publisher import event_records  # noqa: E402
from shared.contracts import parse_intake  # noqa: E402
from shared.kafka import ensure_topics  # noqa: E402
from shared.topics import EVENTS  # noqa: E402
from shared.tracing import new_trace_id  # noqa: E402
from tests.support import Broker, free_port  # noqa: E402

WRITE_KEY = "wk_bench_0123456789abcdef0123"
REPORT = ROOT / "docs" / "benchmarks.md"
SECTION = "## Ingest"


def native_event(event_id: str, n: int) -> dict[str, Any]:
    return {
        "event_id": event_id,
        "type": "purchase",
        "customer_id": f"c-{n % 5000}",
        "occurred_at": "2026-11-20T10:00:00+08:00",
        "payload": {
            "order_id": f"o-{event_id}",
            "amount": "129.50",
            "currency": "CNY",
            "items": [
                {"sku": "oolong-250g", "name": "Oolong 250 g", "category": "tea", "quantity": 2, "price": "64.75"}
            ],
        },
    }


def segment_message(message_id: str, n: int) -> dict[str, Any]:
    return {
        "type": "track",
        "event": "Order Completed",
        "userId": f"c-{n % 5000}",
        "messageId": message_id,
        "timestamp": "2026-11-20T02:00:00.000Z",
        "context": {"library": {"name": "analytics-python", "version": "2.4.0"}},
        "properties": {
            "order_id": f"o-{message_id}",
            "total": 129.5,
            "currency": "CNY",
            "products": [
                {"product_id": "oolong-250g", "name": "Oolong 250 g", "category": "tea", "quantity": 2, "price": 64.75}
            ],
        },
    }


@dataclass
class Result:
    events: int
    seconds: float
    latencies_ms: list[float]
    cpu_seconds: float = float("nan")  # CPU of the process(es) doing the work: ingest, or the raw producer
    driver_cpu_seconds: float = float("nan")  # CPU of the HTTP load driver (this process)

    @property
    def cpu_us_per_event(self) -> float:
        return self.cpu_seconds / self.events * 1e6

    @property
    def driver_us_per_event(self) -> float:
        return self.driver_cpu_seconds / self.events * 1e6

    @property
    def rate(self) -> float:
        return self.events / self.seconds

    def percentile(self, q: float) -> float:
        if not self.latencies_ms:
            return float("nan")
        ordered = sorted(self.latencies_ms)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def raw_producer(bootstrap: str, events: list[dict[str, Any]]) -> Result:
    # The very records ingest writes for these events: stamped, with a trace id per 100 (one
    # request's worth) and its traceparent header, serialised by ingest's own code.
    received_at = datetime.now(UTC)
    valid = [
        parse_intake({**e, "source": "bench", "received_at": received_at, "trace_id": trace})
        for chunk in chunks(events, 100)
        for trace in [new_trace_id()]
        for e in chunk
    ]
    records = event_records(valid)
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap,
        acks="all",
        linger_ms=2,
        max_batch_size=1024 * 1024,
        max_request_size=2 * 1024 * 1024,
    )
    await producer.start()
    try:
        started, cpu = time.perf_counter(), time.process_time()
        futures = [
            await producer.send(EVENTS, value, key=key.encode(), headers=headers) for key, value, headers in records
        ]
        await asyncio.gather(*futures)
        seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
    finally:
        await producer.stop()
    return Result(len(records), seconds, [], cpu)


def process_tree_cpu(pid: int) -> float:
    """User + system CPU seconds of ``pid`` and its children (uvicorn's worker processes)."""
    total, tick = 0.0, os.sysconf("SC_CLK_TCK")
    pending = [pid]
    while pending:
        current = pending.pop()
        try:
            fields = Path(f"/proc/{current}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / tick
            children = Path(f"/proc/{current}/task/{current}/children").read_text().split()
        except (FileNotFoundError, ProcessLookupError):
            continue
        pending.extend(int(child) for child in children)
    return total


class Connection:
    """A minimal HTTP/1.1 keep-alive client for the load driver: the request bytes are built
    before the clock starts and an answer is read by its Content-Length. The load driver shares
    the two cores with ingest and the broker, so its own CPU per request must stay small (httpx
    spent about half as much CPU per event as ingest itself); the server-side path is the same."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def open(cls, url: str) -> Connection:
        host, port = url.removeprefix("http://").rsplit(":", 1)
        return cls(*await asyncio.open_connection(host, int(port)))

    async def post(self, request: bytes) -> tuple[int, bytes]:
        self.writer.write(request)
        head = await self.reader.readuntil(b"\r\n\r\n")
        status = int(head[9:12])
        length = 0
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        return status, await self.reader.readexactly(length)

    def close(self) -> None:
        self.writer.close()


def http_request(url: str, path: str, body: bytes, headers: dict[str, str]) -> bytes:
    host = url.removeprefix("http://")
    lines = [f"POST {path} HTTP/1.1", f"Host: {host}", f"Content-Length: {len(body)}"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


async def http_intake(
    url: str,
    path: str,
    bodies: list[bytes],
    per_body: int,
    concurrency: int,
    pid: int | None = None,
    headers: dict[str, str] | None = None,
) -> Result:
    headers = {"Content-Type": "application/json", "Authorization": f"Bearer {WRITE_KEY}", **(headers or {})}
    queue = [http_request(url, path, body, headers) for body in reversed(bodies)]
    latencies: list[float] = []
    failures: list[str] = []
    connections = [await Connection.open(url) for _ in range(concurrency)]

    async def client(connection: Connection) -> None:
        while queue:
            request = queue.pop()
            t0 = time.perf_counter()
            status, answer = await connection.post(request)
            latencies.append((time.perf_counter() - t0) * 1000)
            # Every answer is checked: a 2xx that rejected some events would not be a fair count.
            if status >= 300 or from_json(answer).get("rejected"):
                failures.append(f"{status} {answer[:200]!r}")

    try:
        cpu, driver_cpu = process_tree_cpu(pid) if pid else float("nan"), time.process_time()
        started = time.perf_counter()
        await asyncio.gather(*(client(connection) for connection in connections))
        seconds = time.perf_counter() - started
        cpu, driver_cpu = process_tree_cpu(pid) - cpu if pid else float("nan"), time.process_time() - driver_cpu
    finally:
        for connection in connections:
            connection.close()
    if failures:
        raise RuntimeError(f"{len(failures)} requests failed, e.g. {failures[0]}")
    return Result(len(bodies) * per_body, seconds, latencies, cpu, driver_cpu)


def start_ingest(
    bootstrap: str, var_dir: Path, workers: int = 1, profile: str | None = None
) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    env = {
        "HUITOU_INGEST_WORKERS": str(workers),
        **os.environ,
        "HUITOU_KAFKA_BOOTSTRAP_SERVERS": bootstrap,
        "HUITOU_VAR_DIR": str(var_dir),
        "HUITOU_INGEST_PORT": str(port),
        "HUITOU_INGEST_WRITE_KEY": WRITE_KEY,
        "HUITOU_LOG_LEVEL": "WARNING",
    }
    # --profile runs ingest under pyinstrument (pip install pyinstrument); text report on exit.
    command = [sys.executable, "-m", "services.ingest"]
    if profile:
        command = [sys.executable, str(Path(__file__).with_name("profile_ingest.py")), profile]
    process = subprocess.Popen(command, cwd=ROOT, env=env)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            ready = httpx.get(url + "/readyz", timeout=2)
            # Ingest is ready without the broker (it then answers intake 503); wait for both.
            if ready.status_code == 200 and ready.json()["not_gating"]["broker"] == "ok":
                return process, url
        except httpx.HTTPError:
            pass
        if process.poll() is not None:
            raise RuntimeError("ingest exited during start-up")
        time.sleep(0.2)
    process.terminate()
    raise TimeoutError("ingest not ready within 60 s")


def chunks(items: list[Any], size: int) -> list[list[Any]]:
    return [items[i : i + size] for i in range(0, len(items), size)]


async def one_run(args: argparse.Namespace, bootstrap: str, url: str, pid: int, run: int) -> dict[str, Result]:
    """Raw producer and intake cases alternate, with fresh event ids: raw, case, raw, case, …,
    raw. Each case is compared with the raw measurements just before and just after it, so on
    a shared machine a change of load during the run does not favour either side."""
    tag = f"r{run}-{time.time_ns()}"
    results: dict[str, Result] = {}
    wanted = [args.only] if args.only else list(CASES)

    async def raw(label: str) -> None:
        raw_events = [native_event(f"{tag}-raw-{label}-{n}", n) for n in range(args.events)]
        results[f"raw:{label}"] = await raw_producer(bootstrap, raw_events)

    for case in wanted:
        if not args.only:
            await raw(case)
        if case == "single":
            singles = [json.dumps(native_event(f"{tag}-s-{n}", n)).encode() for n in range(args.single_events)]
            results[case] = await http_intake(url, "/v1/events", singles, 1, args.concurrency, pid)
        elif case == "batched":
            batch_events = [native_event(f"{tag}-b-{n}", n) for n in range(args.events)]
            bodies = [json.dumps(chunk).encode() for chunk in chunks(batch_events, args.batch)]
            results[case] = await http_intake(url, "/v1/events", bodies, args.batch, args.concurrency, pid)
        else:
            messages = [segment_message(f"{tag}-g-{n}", n) for n in range(args.events)]
            segment = [
                json.dumps({"batch": chunk, "sentAt": datetime.now(UTC).isoformat()}).encode()
                for chunk in chunks(messages, args.batch)
            ]
            results[case] = await http_intake(url, "/v1/batch", segment, args.batch, args.concurrency, pid)
    if not args.only:
        await raw("end")
    return results


def raw_reference(run: dict[str, Result], case: str) -> float:
    """The raw producer's rate around ``case``: the mean of the measurements before and after it."""
    cases = list(CASES)
    after = cases[cases.index(case) + 1] if case != cases[-1] else "end"
    return (run[f"raw:{case}"].rate + run[f"raw:{after}"].rate) / 2


def fmt(value: float, digits: int = 1) -> str:
    return f"{value:,.{digits}f}"


READING = (
    "Reading it: wall-clock rates swing with the other work on these two cores (the raw reference alone "
    "spans the range shown), which is why each case is compared with raw measurements taken just before "
    "and after it, and why the CPU columns are the steadier figures. A batched event costs ingest more "
    "CPU than the raw producer spends on it — HTTP, JSON, write-key auth, contract validation, the dedupe "
    "lookup and write, serialisation and the acked publish, against a bare `send` of ready-made bytes — "
    "but ingest publishes in coalesced per-partition batches where the raw producer pays aiokafka's "
    "per-message `send`. A second ingest process helps only as far as the broker, the load driver and "
    "other work leave the second core free. Where the time goes and what profiling changed: "
    "[ingest.md](ingest.md#performance)."
)

CASES = {
    "single": "`POST /v1/events`, 1 event per request",
    "batched": "`POST /v1/events`, {batch} events per request",
    "segment": "`POST /v1/batch` (Segment), {batch} messages per request",
}


def report(args: argparse.Namespace, measured: dict[int, list[dict[str, Result]]], load_before: float) -> str:
    def median(runs: list[dict[str, Result]], case: str, value: Callable[[Result], float]) -> float:
        return statistics.median(value(run[case]) for run in runs)

    def ratios(runs: list[dict[str, Result]], case: str) -> list[float]:
        return [run[case].rate / raw_reference(run, case) for run in runs]

    def ratio(runs: list[dict[str, Result]], case: str) -> float:
        return statistics.median(ratios(runs, case))

    every_raw = [
        result for runs in measured.values() for run in runs for k, result in run.items() if k.startswith("raw")
    ]
    rows = [
        "| case | ingest processes | events/s (median) | × raw producer (range) | p50 ms | p95 ms | p99 ms "
        "| CPU µs/event | driver CPU µs/event | per run (events/s) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|",
        f"| raw aiokafka producer (`send` per message, acks=all) | — | "
        f"{fmt(statistics.median(r.rate for r in every_raw), 0)} | 1.00 | — | — | — | "
        f"{fmt(statistics.median(r.cpu_us_per_event for r in every_raw))} | — | "
        + f"{len(every_raw)} samples, {fmt(min(r.rate for r in every_raw), 0)}–{fmt(max(r.rate for r in every_raw), 0)}"
        + " |",
    ]
    for workers, runs in measured.items():
        for case, label in CASES.items():
            rows.append(
                f"| {label.format(batch=args.batch)} | {workers} | {fmt(median(runs, case, lambda r: r.rate), 0)} | "
                f"{ratio(runs, case):.2f} ({min(ratios(runs, case)):.2f}–{max(ratios(runs, case)):.2f}) | "
                f"{fmt(median(runs, case, lambda r: r.percentile(0.50)))} | "
                f"{fmt(median(runs, case, lambda r: r.percentile(0.95)))} | "
                f"{fmt(median(runs, case, lambda r: r.percentile(0.99)))} | "
                f"{fmt(median(runs, case, lambda r: r.cpu_us_per_event))} | "
                f"{fmt(median(runs, case, lambda r: r.driver_us_per_event))} | "
                + ", ".join(fmt(run[case].rate, 0) for run in runs)
                + " |"
            )
    verdicts = [
        f"{workers} ingest process{'es' if workers > 1 else ''}: batched / raw = {ratio(runs, 'batched'):.2f} "
        f"({'met' if ratio(runs, 'batched') >= 0.5 else 'not met'})"
        for workers, runs in measured.items()
    ]
    command = (
        f"python bench/bench_ingest.py --runs {args.runs} --events {args.events} --single-events "
        f"{args.single_events} --batch {args.batch} --concurrency {args.concurrency} --workers {args.workers}"
    )
    return "\n".join(
        [
            SECTION,
            "",
            f"Generated by `{command}` on {datetime.now(UTC):%Y-%m-%d %H:%M} UTC "
            f"({platform.python_implementation()} {platform.python_version()}, {os.cpu_count()} CPUs shared with "
            f"the broker, the load driver and other people's work; load average {load_before:.1f} before and "
            f"{os.getloadavg()[0]:.1f} after the run — wall-clock rates here are noisy).",
            "",
            "One Tansu broker (memory storage) and ingest (`python -m services.ingest`: uvicorn, SQLite dedupe "
            f"window, write-key auth, validation, acks=all) on loopback, {args.concurrency} concurrent keep-alive "
            "clients (a minimal HTTP/1.1 driver: its requests are built before the clock starts, and it shares the "
            "cores with ingest). The raw producer sends the very records ingest writes for such events — the same "
            "bytes and `traceparent` header — with `send` per message, acks=all, all at once. Raw and intake "
            f"measurements alternate (raw, case, raw, case, …, raw) with fresh event ids: {args.events:,} events per "
            f"case and per reference ({args.single_events:,} single-event requests). Rates are events acknowledged "
            "by the broker per second of wall time; latencies are per HTTP request, which is answered only after "
            "the broker's ack; × raw is the median over runs of the case's rate divided by the mean of the raw "
            "rates measured just before and just after it (range over runs in brackets). CPU µs/event is the CPU "
            "time of the ingest process(es) — or of the raw producer's process — per event, driver CPU that of the "
            f"HTTP load driver: far steadier than wall time on a shared machine. Medians of {args.runs} runs.",
            "",
            *rows,
            "",
            "Target — batched intake at least half the raw producer's rate: " + "; ".join(verdicts) + ".",
            "",
            READING,
            "",
        ]
    )


def write_section(text: str) -> None:
    """Replace (or add) the "## Ingest" section; the rest of the file belongs to others."""
    current = REPORT.read_text() if REPORT.exists() else "# Benchmarks\n"
    lines = current.splitlines(keepends=True)
    start = next((i for i, line in enumerate(lines) if line.strip() == SECTION), None)
    section = text.rstrip("\n") + "\n"
    if start is None:
        updated = current.rstrip("\n") + "\n\n" + section
    else:
        end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith("## ")), None)
        # Byte for byte, everything outside the section stays as it was.
        updated = "".join(lines[:start]) + section + ("\n" + "".join(lines[end:]) if end is not None else "")
    REPORT.write_text(updated)


async def main_async(args: argparse.Namespace) -> str:
    load_before = os.getloadavg()[0]
    measured: dict[int, list[dict[str, Result]]] = {}
    with tempfile.TemporaryDirectory(prefix="huitou-bench-") as tmp:
        broker = Broker(free_port(), Path(tmp) / "broker.log")
        broker.start()
        try:
            await ensure_topics(broker.bootstrap)
            for workers in (int(w) for w in args.workers.split(",")):
                ingest, url = start_ingest(broker.bootstrap, Path(tmp) / f"w{workers}", workers, args.profile)
                try:
                    await warm_up(url, broker.bootstrap)
                    for run in range(args.runs):
                        results = await one_run(args, broker.bootstrap, url, ingest.pid, run)
                        measured.setdefault(workers, []).append(results)
                        print(
                            f"{workers} worker(s), run {run + 1}: "
                            + ", ".join(f"{case} {fmt(r.rate, 0)}/s" for case, r in results.items()),
                            file=sys.stderr,
                        )
                finally:
                    ingest.terminate()
                    ingest.wait(30)
        finally:
            broker.stop()
    return "" if args.only else report(args, measured, load_before)


async def warm_up(url: str, bootstrap: str) -> None:
    """Connections, the producer's metadata and SQLite's pages warm up before anything is timed."""
    bodies = [
        json.dumps([native_event(f"warm-{time.time_ns()}-{r}-{i}", i) for i in range(100)]).encode() for r in range(5)
    ]
    await http_intake(url, "/v1/events", bodies, 100, 2)
    await raw_producer(bootstrap, [native_event(f"warm-raw-{time.time_ns()}-{i}", i) for i in range(500)])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--events", type=int, default=20_000, help="events per batched case and for the raw producer")
    parser.add_argument("--single-events", type=int, default=3_000, help="requests in the single-event case")
    parser.add_argument("--batch", type=int, default=100, help="events per batched request (Segment's SDK default)")
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--workers", default="1,2", help="ingest process counts to measure, e.g. 1,2")
    parser.add_argument("--no-write", action="store_true", help="print the report only")
    parser.add_argument("--profile", help="profile ingest with pyinstrument into this file (implies --no-write)")
    parser.add_argument("--only", choices=("single", "batched", "segment"), help="drive one case only (profiling)")
    args = parser.parse_args()
    text = asyncio.run(main_async(args))
    print(text)
    if text and not args.no_write and not args.profile:
        write_section(text)


if __name__ == "__main__":
    main()
