"""``huitou import`` on the CDNOW history shipped with lifetimes, into a real broker, with a resume."""

from __future__ import annotations

import asyncio
import importlib.util
import json
import shutil
from collections import Counter
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest
from typer.testing import CliRunner

from shared.cli import app
from tests.integration.test_ingest_support import events_on_topic
from tests.support import Broker

pytestmark = pytest.mark.broker
# Located without importing lifetimes (its import trips pandas deprecation warnings).
CDNOW = Path(importlib.util.find_spec("lifetimes").origin).parent / "datasets" / "CDNOW_master.txt"  # type: ignore[arg-type, union-attr]


def huitou(*args: str, bootstrap: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, list(args), env={"HUITOU_KAFKA_BOOTSTRAP_SERVERS": bootstrap})
    return result.exit_code, result.output


async def test_cdnow_import_is_historical_resumable_and_complete(broker: Broker, tmp_path: Path) -> None:
    history = tmp_path / "CDNOW_master.txt"
    shutil.copy(CDNOW, history)
    command = ("import", str(history), "--format", "cdnow", "--no-progress", "--batch-size", "1000")

    code, output = await asyncio.to_thread(huitou, *command, "--limit", "30000", bootstrap=broker.bootstrap)
    assert code == 0, output
    assert "30,000 rows read" in output and "run the same command to resume" in output
    code, output = await asyncio.to_thread(huitou, *command, bootstrap=broker.bootstrap)
    assert code == 0, output
    assert "39,659 rows read" in output and "resumed after line 30,001" in output
    assert "in total 69,659 published, 0 rejected" in output
    code, output = await asyncio.to_thread(huitou, *command, bootstrap=broker.bootstrap)
    assert code == 0 and "imported already" in output

    events = await events_on_topic(broker.bootstrap, expect_at_least=69_659)
    assert len(events) == len({e["event_id"] for e in events}) == 69_659
    assert all(e["historical"] and e["type"] == "purchase" and e["key"] == e["customer_id"] for e in events)
    # Every customer's spend on the topic is what the file says, to the cent.
    expected: Counter[str] = Counter()
    for line in history.read_text().splitlines()[1:]:
        customer, _date, _cds, dollars = line.split()
        expected[customer] += Decimal(dollars)  # type: ignore[assignment]
    got: Counter[str] = Counter()
    for event in events:
        got[event["customer_id"]] += Decimal(event["payload"]["amount"])  # type: ignore[assignment]
    assert got == expected and len(got) == 23_570


async def test_csv_with_a_column_mapping_and_rejected_rows(broker: Broker, tmp_path: Path) -> None:
    orders = tmp_path / "orders.csv"
    orders.write_text(
        "OrderNo,Member,Total,PaidAt,Item\n"
        "SO-1,m-1,59.00,2024/02/10 20:30,Longjing\n"
        "SO-2,,12.00,2024/02/11 09:00,Oolong\n"
        "SO-3,m-2,-4,2024/02/12 10:00,Puer\n"
        "SO-4,m-1,18.50,2024/02/13 11:15,Jasmine\n"
    )
    code, output = await asyncio.to_thread(
        huitou,
        "import",
        str(orders),
        "--map",
        "order_id=OrderNo",
        "--map",
        "customer_id=Member",
        "--map",
        "amount=Total",
        "--map",
        "occurred_at=PaidAt",
        "--map",
        "name=Item",
        "--date-format",
        "%Y/%m/%d %H:%M",
        "--timezone",
        "Asia/Shanghai",
        "--no-progress",
        bootstrap=broker.bootstrap,
    )
    assert code == 0, output
    assert "2 published, 2 rejected" in output
    rejects = [json.loads(line) for line in (tmp_path / "orders.csv.rejects.ndjson").read_text().splitlines()]
    assert [(r["line"], r["problems"][0].split(":")[0]) for r in rejects] == [(3, "customer_id"), (4, "column 'Total'")]
    events = await events_on_topic(broker.bootstrap, expect_at_least=2)
    assert sorted(e["event_id"] for e in events) == ["import:purchase:SO-1", "import:purchase:SO-4"]
    moments = {datetime.fromisoformat(e["occurred_at"]) for e in events}
    assert moments == {datetime(2024, 2, 10, 12, 30, tzinfo=UTC), datetime(2024, 2, 13, 3, 15, tzinfo=UTC)}


async def test_refusals_are_explained(broker: Broker, tmp_path: Path) -> None:
    code, output = await asyncio.to_thread(huitou, "import", str(tmp_path / "missing.csv"), bootstrap=broker.bootstrap)
    assert code == 2 and "is not a file" in output
    odd = tmp_path / "orders.xlsx"
    odd.write_text("x")
    code, output = await asyncio.to_thread(huitou, "import", str(odd), bootstrap=broker.bootstrap)
    assert code == 2 and "pass --format csv, ndjson or cdnow" in output
    history = tmp_path / "h.csv"
    history.write_text("customer_id,occurred_at,amount\nc,2024-01-01,1\n")
    code, output = await asyncio.to_thread(
        huitou, "import", str(history), "--map", "total=x", bootstrap=broker.bootstrap
    )
    assert code == 2 and "unknown field 'total'" in output
    code, output = await asyncio.to_thread(huitou, "import", str(history), "--no-progress", bootstrap="127.0.0.1:1")
    assert code == 3 and "resume" in output
