"""Micro-benchmark of re-scoring one customer file: ``engine.rescored`` (occasions, facts, scorecard).

Run from the repository root:

    python bench/bench_rescore.py [--customers 500] [--passes 5] [--rounds 3] [--reference REV]

Data: CDNOW_master orders (lifetimes' data set) and a population model fitted on them as of
1997-09-30 — both through bench/bench_scoring.py's helpers, so this is the model the scoring
throughput bench scores against. A random sample of customers (fixed seed) gives two cases:

* replay: each customer's orders folded in one at a time, the file re-scored after each as of
  event time with the previous scores still on the file — what the consumer does in a backfill;
* sweep: every sampled customer's whole history as of 1998-07-01, the day after the data ends —
  what the lapse sweep (and live traffic) does.

Inputs are built before the clock starts; each call is timed on its own (perf_counter_ns) and the
CPU time of whole passes is taken with process_time. The first pass warms up (model-keyed caches,
imports) and is not counted.

Reference, same run: the same calls on the implementation of ``--reference`` (a git revision,
default the last commit before the re-scoring optimisation), exported read-only with
``git archive`` into a scratch directory and run in its own process. Reference and current
alternate round by round, so both see the same load; the script also compares every scorecard
field of every call between the two (exact for everything but floats, which are reported as the
largest relative difference).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, replace
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
REFERENCE = "13222e0"
"""The last commit before scoring's per-event maths was optimised."""
LIVE_AS_OF = datetime(1998, 7, 1, tzinfo=UTC)
CASES = ("replay", "sweep")


# --- worker: one implementation, timed in this process -------------------------------------------------


def build_calls(customers: int, seed: int) -> tuple[Any, Any, list[tuple[str, Any, list[Any], datetime]]]:
    """(model, rules, calls): every call's file, orders and as-of, made once before timing."""
    import numpy as np
    from bench_scoring import CALIBRATION_END, SCRATCH, cdnow_master, cdnow_model

    shutil.rmtree(SCRATCH, ignore_errors=True)  # bench_scoring's scratch directory: unused here

    from services.scoring.clock import Clock
    from services.scoring.customer_file import CustomerFile, add_purchase
    from services.scoring.engine import rescored
    from services.scoring.purchases import OrderLine
    from services.scoring.settings import ScoringSettings

    settings = ScoringSettings(clock="replay")
    rules = settings.rules()
    frame = cdnow_master()
    model = cdnow_model(frame, settings).with_id(1)
    assert model.as_of == CALIBRATION_END
    ids = frame["customer"].unique()
    chosen = set(np.random.default_rng(seed).choice(ids, size=min(customers, ids.size), replace=False).tolist())
    subset = frame[frame["customer"].isin(chosen)].sort_values(["customer", "at"], kind="stable")
    replay, live = Clock("replay"), Clock("live", now=lambda: LIVE_AS_OF)

    calls: list[tuple[str, Any, list[Any], datetime]] = []
    for customer, rows in subset.groupby("customer", sort=True):
        file = CustomerFile(f"cdnow-{customer}")
        orders: list[Any] = []
        for index, at, amount in zip(rows.index, rows["at"], rows["amount"], strict=True):
            when = at.to_pydatetime()
            line = OrderLine(f"cdnow-order-{index}", when, Decimal(str(amount)), event_id=f"cdnow-{index}")
            orders.append(line)
            file = replace(file, totals=add_purchase(file.totals, line.amount, when)).seen(when)
            as_of = replay.for_file(file)
            calls.append(("replay", file, list(orders), as_of))
            file, _ = rescored(file, orders, model, as_of, rules)  # the next event sees these scores
        calls.append(("sweep", file, list(orders), live.for_file(file)))
    return model, rules, calls


def plain(value: Any) -> Any:
    """JSON-able form of a scorecard: floats stay floats (compared with a tolerance), the rest exact."""
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    if isinstance(value, float | int | bool | str) or value is None:
        return value
    if isinstance(value, datetime):
        return value.isoformat()
    return str(value)  # Decimal, enums


def run_worker(args: argparse.Namespace) -> dict[str, Any]:
    from services.scoring.engine import rescored

    model, rules, calls = build_calls(args.customers, args.seed)
    times: dict[str, list[int]] = {case: [] for case in CASES}
    cpu: list[float] = []
    results: list[Any] = []
    for number in range(args.passes + 1):
        pass_times: dict[str, list[int]] = {case: [] for case in CASES}
        clock = time.perf_counter_ns
        cpu_start = time.process_time()
        for case, file, orders, as_of in calls:
            started = clock()
            after, found = rescored(file, orders, model, as_of, rules)
            pass_times[case].append(clock() - started)
            if number == 0:
                assert after.scores is not None
                results.append(
                    {
                        "case": case,
                        "scores": plain(asdict(after.scores)),
                        "changes": [plain(c.model_dump()) for c in found],
                    }
                )
        cpu_used = time.process_time() - cpu_start
        if number > 0:  # the first pass warms up
            cpu.append(cpu_used / len(calls) * 1e6)
            for case in CASES:
                times[case].extend(pass_times[case])
    return {
        "calls": {case: sum(1 for c in calls if c[0] == case) for case in CASES},
        "orders": {case: sum(len(c[2]) for c in calls if c[0] == case) for case in CASES},
        "median_us": {case: statistics.median(times[case]) / 1e3 for case in CASES},
        "p90_us": {case: statistics.quantiles(times[case], n=10)[-1] / 1e3 for case in CASES},
        "median_all_us": statistics.median(times["replay"] + times["sweep"]) / 1e3,
        "cpu_us_per_call": statistics.median(cpu),
        "results": results,
    }


# --- orchestrator: reference and current, alternating ---------------------------------------------------


def export_reference(revision: str, into: Path) -> None:
    """The reference's services/ and shared/ as of ``revision`` (read-only: git archive, no checkout)."""
    archive = subprocess.run(
        ["git", "-C", str(ROOT), "archive", revision, "services", "shared"], check=True, capture_output=True
    )
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive.stdout, check=True)


def spawn(implementation: Path | None, args: argparse.Namespace, out: Path) -> dict[str, Any]:
    command = [sys.executable, str(Path(__file__).resolve()), "--worker", str(out)]
    command += ["--customers", str(args.customers), "--passes", str(args.passes), "--seed", str(args.seed)]
    if implementation is not None:
        command += ["--implementation", str(implementation)]
    subprocess.run(command, check=True, cwd=ROOT)
    data: dict[str, Any] = json.loads(out.read_text())
    return data


def compare(reference: list[Any], current: list[Any]) -> tuple[int, float, list[str]]:
    """(exact mismatches, largest relative float difference, examples) over every call's results."""
    mismatches: list[str] = []
    worst = 0.0

    def walk(a: Any, b: Any, where: str) -> None:
        nonlocal worst
        if isinstance(a, float) and isinstance(b, float):
            if a != b:
                worst = max(worst, abs(a - b) / max(abs(a), abs(b), 1e-300))
        elif isinstance(a, dict) and isinstance(b, dict) and a.keys() == b.keys():
            for key in a:
                walk(a[key], b[key], f"{where}.{key}")
        elif isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
            for i, (x, y) in enumerate(zip(a, b, strict=True)):
                walk(x, y, f"{where}[{i}]")
        elif a != b:
            mismatches.append(f"{where}: {a!r} != {b!r}")

    if len(reference) != len(current):
        return 1, 0.0, [f"{len(reference)} calls against {len(current)}"]
    for i, (a, b) in enumerate(zip(reference, current, strict=True)):
        walk(a, b, f"call {i}")
    return len(mismatches), worst, mismatches[:5]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--customers", type=int, default=500, help="CDNOW customers sampled (fixed seed)")
    parser.add_argument("--passes", type=int, default=5, help="timed passes over all calls per round")
    parser.add_argument("--rounds", type=int, default=3, help="reference/current alternations")
    parser.add_argument("--seed", type=int, default=20261124)
    parser.add_argument("--reference", default=REFERENCE, help="git revision to compare against ('' for none)")
    parser.add_argument("--worker", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--implementation", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.worker is not None:
        # The implementation under test first, then this checkout (tests/, bench/ helpers).
        sys.path[:0] = [p for p in (args.implementation, ROOT, ROOT / "bench") if p is not None]
        sys.path[:] = [str(p) for p in sys.path]
        args.worker.write_text(json.dumps(run_worker(args)))
        return

    load_before = os.getloadavg()[0]
    scratch = Path(tempfile.mkdtemp(prefix="huitou-bench-rescore-"))
    try:
        implementations: dict[str, Path | None] = {"current": None}
        if args.reference:
            (scratch / "reference").mkdir()
            export_reference(args.reference, scratch / "reference")
            implementations = {"reference": scratch / "reference", "current": None}
        runs: dict[str, list[dict[str, Any]]] = {name: [] for name in implementations}
        for number in range(args.rounds):
            for name, implementation in implementations.items():
                print(f"round {number + 1}/{args.rounds}: {name} …", flush=True)
                runs[name].append(spawn(implementation, args, scratch / f"{name}-{number}.json"))
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    load_after = os.getloadavg()[0]

    def med(name: str, pick: Any) -> float:
        return statistics.median(pick(run) for run in runs[name])

    first = runs["current"][0]
    print(
        f"\n{datetime.now(UTC):%Y-%m-%d %H:%M} UTC; {platform.machine()}, {os.cpu_count()} logical cores, "
        f"Python {platform.python_version()}; load average {load_before:.1f} before, {load_after:.1f} after; "
        f"{args.customers} CDNOW customers, {args.passes} timed passes × {args.rounds} rounds "
        f"(medians over rounds)\n"
    )
    header = "| case | calls | orders per call | current median µs | current p90 µs |"
    rule = "|---|---:|---:|---:|---:|"
    if "reference" in runs:
        header += f" reference ({args.reference}) median µs | speed-up |"
        rule += "---:|---:|"
    print(header)
    print(rule)
    for case in CASES:
        calls = first["calls"][case]
        row = (
            f"| {case} | {calls:,} | {first['orders'][case] / calls:.1f} | "
            f"{med('current', lambda r, c=case: r['median_us'][c]):.1f} | "
            f"{med('current', lambda r, c=case: r['p90_us'][c]):.1f} |"
        )
        if "reference" in runs:
            ref = med("reference", lambda r, c=case: r["median_us"][c])
            row += f" {ref:.1f} | {ref / med('current', lambda r, c=case: r['median_us'][c]):.1f}× |"
        print(row)
    cur_all = med("current", lambda r: r["median_all_us"])
    cur_cpu = med("current", lambda r: r["cpu_us_per_call"])
    row = f"| all calls | {sum(first['calls'].values()):,} | | {cur_all:.1f} | |"
    cpu_row = f"| CPU per call (process_time of whole passes) | | | {cur_cpu:.1f} | |"
    if "reference" in runs:
        ref_all = med("reference", lambda r: r["median_all_us"])
        ref_cpu = med("reference", lambda r: r["cpu_us_per_call"])
        row += f" {ref_all:.1f} | {ref_all / cur_all:.1f}× |"
        cpu_row += f" {ref_cpu:.1f} | {ref_cpu / cur_cpu:.1f}× |"
    print(row)
    print(cpu_row)
    print(
        "\nPer round, median µs (all calls) — current: "
        + ", ".join(f"{r['median_all_us']:.1f}" for r in runs["current"])
    )
    if "reference" in runs:
        print("reference: " + ", ".join(f"{r['median_all_us']:.1f}" for r in runs["reference"]))
        count, worst, examples = compare(runs["reference"][0]["results"], first["results"])
        verdict = "identical" if count == 0 and worst == 0.0 else f"{count} exact mismatches"
        print(
            f"\nResults against the reference ({len(first['results']):,} scorecards and their changes): {verdict}; "
            f"largest relative difference of a float field {worst:.1e}"
        )
        for line in examples:
            print("  " + line)


if __name__ == "__main__":
    main()
