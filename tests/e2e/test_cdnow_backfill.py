"""CDNOW order history backfilled through the product the way an operator would do it — `huitou
import` into the running dev stack, scoring in replay mode, a refit requested through the gateway —
ends with the BG/NBD parameters Fader, Hardie & Lee (2005) published for the same customers."""

from __future__ import annotations

import csv
import importlib.util
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families

from services.scoring import clv
from tests.support import ROOT, RunningStack, dev_stack

pytestmark = [pytest.mark.e2e, pytest.mark.broker]
WRITE_KEY = "wk_cdnow_write_key_0123456789abcdef"
ADMIN_KEY = "hk_cdnow_admin_key_0123456789abcdef"
PUBLISHED = (0.243, 4.414, 0.793, 2.426)  # r, α (weeks), a, b
DATASETS = Path(importlib.util.find_spec("lifetimes").origin).parent / "datasets"  # type: ignore[arg-type, union-attr]


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningStack]:
    env = {
        "HUITOU_DEV_WRITE_KEY": WRITE_KEY,
        "HUITOU_DEV_ADMIN_KEY": ADMIN_KEY,
        "HUITOU_SCORING_CLOCK": "replay",  # score the 1997 history as of its own time
        # A refit re-reads the whole order history; give it more than the default 5 s per call.
        "HUITOU_GATEWAY_DOWNSTREAM_TIMEOUT_SECONDS": "120",
    }
    with dev_stack(tmp_path_factory.mktemp("var"), env) as running:
        yield running


def sample_as_csv(target: Path) -> int:
    """lifetimes' CDNOW_sample (the 2,357-customer sample the parameters were published on) as a
    shop's CSV export: one row per order."""
    rows = 0
    with (DATASETS / "CDNOW_sample.txt").open() as source, target.open("w", newline="") as out:
        writer = csv.writer(out)
        writer.writerow(["CustomerNo", "OrderDate", "Total"])
        for line in source:
            customer, _index, day, _count, amount = line.split()
            writer.writerow([f"cdnow-{int(customer)}", day, amount])
            rows += 1
    return rows


def consumed(stack: RunningStack, service: str) -> float:
    """Events the service has processed from huitou.events, read from its /metrics."""
    families = text_string_to_metric_families(httpx.get(stack.url(service) + "/metrics").text)
    return sum(
        sample.value
        for family in families
        if family.name == "huitou_events_consumed"
        for sample in family.samples
        if sample.name.endswith("_total")
        and sample.labels.get("topic") == "huitou.events"
        and sample.labels.get("outcome") == "processed"
    )


def test_cdnow_backfill_through_the_stack_reaches_the_published_fit(stack: RunningStack, tmp_path: Path) -> None:
    orders = tmp_path / "cdnow_orders.csv"
    expected_orders = sample_as_csv(orders)
    imported = subprocess.run(
        [
            sys.executable, "-m", "shared.cli", "import", str(orders), "--format", "csv",
            "--map", "customer_id=CustomerNo", "--map", "occurred_at=OrderDate", "--map", "amount=Total",
            "--date-format", "%Y%m%d", "--set", "currency=USD", "--no-progress",
            "--bootstrap-servers", f"127.0.0.1:{stack.ports['broker']}",
        ],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert imported.returncode == 0, imported.stdout + imported.stderr
    assert not (tmp_path / "cdnow_orders.csv.rejects.ndjson").read_text().strip()

    deadline = time.monotonic() + 600
    while consumed(stack, "scoring") < expected_orders:
        assert time.monotonic() < deadline, f"scoring folded {consumed(stack, 'scoring')} of {expected_orders} orders"
        time.sleep(1)

    admin = {"Authorization": f"Bearer {ADMIN_KEY}"}
    refit = httpx.post(
        stack.url("gateway") + "/api/v1/models/clv/refit",
        json={"as_of": "1997-09-30T00:00:00Z"},  # the end of the 39-week calibration period
        headers=admin,
        timeout=150,
    )
    assert refit.status_code == 200, refit.text
    model = refit.json()
    fit = model["bgnbd"]
    assert model["n_customers"] == 2357
    assert model["time_unit_days"] == 7
    assert tuple(round(fit[k], 3) for k in ("r", "alpha", "a", "b")) == PUBLISHED

    # The same parameters the maths module reaches on lifetimes' own summary of those customers.
    summary = np.genfromtxt(DATASETS / "cdnow_customers_summary.csv", delimiter=",", names=True)
    direct = clv.fit_bgnbd(summary["frequency"], summary["recency"], summary["T"])
    ours = [fit[k] for k in ("r", "alpha", "a", "b")]
    assert np.allclose(ours, [direct.r, direct.alpha, direct.a, direct.b], rtol=1e-3)

    in_force = httpx.get(stack.url("gateway") + "/api/v1/models/clv", headers=admin)
    assert in_force.status_code == 200 and in_force.json()["id"] == model["id"]
