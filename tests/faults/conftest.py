"""The fault suite's shared workload and its clean run, the reference every faulty run must match."""

from __future__ import annotations

import asyncio
import json
import os
import time
from pathlib import Path

import pytest

from tests.faults.harness import fault_run, started_broker
from tests.faults.workload import Outcome, Workload, build_workload, expected_orders

FIGURES = Path(os.environ.get("HUITOU_FAULT_FIGURES", "")) if os.environ.get("HUITOU_FAULT_FIGURES") else None


def record_figures(scenario: str, figures: dict[str, object]) -> None:
    """Print a scenario's measured figures; append them as JSON lines to HUITOU_FAULT_FIGURES if set."""
    line = json.dumps({"scenario": scenario, **figures}, default=str)
    print(f"\nFAULT FIGURES {line}")
    if FIGURES is not None:
        with FIGURES.open("a") as out:
            out.write(line + "\n")


@pytest.fixture(scope="session")
def workload() -> Workload:
    return build_workload(seed=int(os.environ.get("HUITOU_FAULT_SEED", "8")))


@pytest.fixture(scope="session")
def clean_run(workload: Workload, tmp_path_factory: pytest.TempPathFactory) -> Outcome:
    """The workload through a stack with no fault at all: the expected outcome."""

    async def run() -> Outcome:
        root = tmp_path_factory.mktemp("clean")
        async with started_broker(root) as broker, fault_run(root, workload, broker.bootstrap) as running:
            await running.sender.send(workload.phase_b, concurrency=2)
            return await running.settle()

    started = time.monotonic()
    result = asyncio.run(run())
    assert result.delivery_problems() == []
    assert {c: n for c, (n, _) in result.files.items()} == expected_orders(workload), "the clean run lost orders"
    complaints = [t for t in result.touches.values() if t["plan"] == "complaint_recovery"]
    assert len(complaints) == workload.complaints
    record_figures("clean", {**result.figures(), "events": workload.size, "seconds": round(time.monotonic() - started)})
    return result
