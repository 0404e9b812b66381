"""Backfill rules: rows to events, reading files with offsets, checkpoints and resume.

The broker is replaced by a list that collects what would be published; the real-broker run
(CDNOW through ``huitou import``) is in tests/integration/test_ingest_backfill.py.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from services.ingest.backfill import (
    BackfillError,
    Checkpoint,
    ImportOptions,
    RowSpec,
    parse_pairs,
    preset,
    read_rows,
    row_to_event,
    run_import,
)
from services.ingest.intake import MappingError
from shared.contracts import IntakeEvent
from shared.kafka import BrokerUnavailable

CDNOW = preset("cdnow", RowSpec())


class Collector:
    """Stands in for the acks=all producer: records each published batch."""

    def __init__(self, fail_after_batches: int | None = None) -> None:
        self.batches: list[list[IntakeEvent]] = []
        self._fail_after = fail_after_batches

    async def __call__(self, events: list[IntakeEvent]) -> None:
        if self._fail_after is not None and len(self.batches) >= self._fail_after:
            raise BrokerUnavailable("broker went away")
        self.batches.append(events)

    @property
    def ids(self) -> list[str]:
        return [e.event_id for batch in self.batches for e in batch]


def test_cdnow_row_is_a_historical_purchase_with_deterministic_ids() -> None:
    row = {"customer_id": "00002", "date": "19970112", "cds": "5", "dollars": "77.00"}
    event = row_to_event(row, 4, CDNOW)
    assert event == {
        "event_id": "import:purchase:00002:19970112:4",
        "type": "purchase",
        "customer_id": "00002",
        "occurred_at": "1997-01-12T00:00:00+00:00",
        "historical": True,
        "payload": {
            "order_id": "00002:19970112:4",
            "amount": "77.00",
            "currency": "USD",
            "items": [{"category": "CD", "quantity": "5"}],
        },
    }
    assert row_to_event(row, 4, CDNOW) == event  # the same row, the same ids: a re-import dedupes


def test_mapped_csv_columns_with_a_time_zone() -> None:
    spec = RowSpec(
        mapping={
            "order_id": "OrderNo",
            "customer_id": "Member",
            "amount": "Total",
            "occurred_at": "PaidAt",
            "name": "Item",
        },
        constants={"currency": "CNY"},
        date_format="%Y/%m/%d %H:%M",
        timezone="Asia/Shanghai",
    )
    row = {"OrderNo": "SO-9", "Member": "m-1", "Total": "59.00", "PaidAt": "2024/02/10 20:30", "Item": "Longjing"}
    event = row_to_event(row, 2, spec)
    assert event["event_id"] == "import:purchase:SO-9" and event["occurred_at"] == "2024-02-10T20:30:00+08:00"
    assert event["payload"]["items"] == [{"name": "Longjing"}]


def test_refund_rows_and_dotted_ndjson_paths() -> None:
    spec = RowSpec(mapping={"customer_id": "customer.id", "amount": "money.total", "type": "kind"})
    row = {
        "kind": "Refund",
        "customer": {"id": "c-1"},
        "money": {"total": 5},
        "order_id": "o-1",
        "occurred_at": "2024-05-01",
        "reason": "late",
    }
    event = row_to_event(row, 1, spec)
    assert event["type"] == "refund" and event["payload"] == {
        "order_id": "o-1",
        "amount": "5",
        "currency": "CNY",
        "reason": "late",
    }


def test_native_events_in_ndjson_pass_through_marked_historical() -> None:
    native = {
        "event_id": "e",
        "type": "identify",
        "customer_id": "c",
        "occurred_at": "2024-01-01T00:00:00Z",
        "payload": {"traits": {}},
    }
    assert row_to_event(native, 1, RowSpec()) == {**native, "historical": True}


def test_unusable_rows_say_which_column_to_fix() -> None:
    with pytest.raises(MappingError) as caught:
        row_to_event({"customer_id": "", "date": "1997-01-01", "cds": "1"}, 9, CDNOW)
    assert caught.value.problems == [
        "customer_id: column 'customer_id' is empty or missing",
        "occurred_at: '1997-01-01' does not match %Y%m%d",
        "amount: column 'dollars' is empty or missing",
    ]
    with pytest.raises(MappingError, match="purchase or refund"):
        row_to_event({"type": "visit", "customer_id": "c", "occurred_at": "2024-01-01", "amount": "1"}, 1, RowSpec())


def test_map_and_set_options_are_checked() -> None:
    assert parse_pairs(["order_id=OrderNo", "amount=Total Paid"], "--map") == {
        "order_id": "OrderNo",
        "amount": "Total Paid",
    }
    with pytest.raises(BackfillError, match="unknown field 'total'"):
        parse_pairs(["total=Total"], "--map")
    with pytest.raises(BackfillError, match="field=value"):
        parse_pairs(["order_id"], "--map")


def test_csv_rows_resume_at_a_byte_offset_even_after_multiline_fields(tmp_path: Path) -> None:
    path = tmp_path / "orders.csv"
    path.write_bytes('\ufeffid,note\n1,"two\nlines"\n2,plain\n\n3,x,extra\n4,last\n'.encode())
    with path.open("rb") as handle:
        rows = list(read_rows(handle, "csv", 0, 0))
    assert [(r.line, r.end_line, r.data) for r in rows if r.data] == [
        (2, 3, {"id": "1", "note": "two\nlines"}),
        (4, 4, {"id": "2", "note": "plain"}),
        (7, 7, {"id": "4", "note": "last"}),
    ]
    bad = next(r for r in rows if r.data is None)
    assert (bad.line, bad.problem) == (6, "has 3 fields; the header has 2")
    second = rows[1]
    with path.open("rb") as handle:
        resumed = list(read_rows(handle, "csv", second.end, second.end_line))
    assert [r.line for r in resumed] == [6, 7] and resumed[-1].data == {"id": "4", "note": "last"}


def cdnow_file(tmp_path: Path, rows: int, broken_at: int | None = None) -> Path:
    lines = [" customer_id  date number_of_cds  dollar_value"]
    for n in range(rows):
        lines.append(f" {n % 7 + 1:05d} 1997{n % 12 + 1:02d}{n % 28 + 1:02d}  {n % 3 + 1}   {n + 10}.50")
    if broken_at is not None:
        lines[broken_at] = " 00009 19971301  1   5.00"  # month 13
    path = tmp_path / "CDNOW_master.txt"
    path.write_bytes(("\r\n".join(lines) + "\r\n").encode())
    return path


async def test_import_publishes_in_acknowledged_batches_and_reports_rejects(tmp_path: Path) -> None:
    path = cdnow_file(tmp_path, 25, broken_at=5)
    published = Collector()
    report = await run_import(ImportOptions(path, format="cdnow", batch_size=10), published)
    assert (report.rows, report.accepted, report.rejected, report.finished) == (25, 24, 1, True)
    assert [len(batch) for batch in published.batches] == [10, 10, 4]  # the bad row never took a seat
    assert all(e.historical and e.source == "import" for batch in published.batches for e in batch)
    (reject,) = [json.loads(line) for line in report.rejects.read_text().splitlines()]
    assert reject["line"] == 6 and "does not match %Y%m%d" in reject["problems"][0]
    assert reject["row"]["date"] == "19971301"
    saved = Checkpoint.load(report.checkpoint)
    assert saved is not None and saved.finished and saved.offset == path.stat().st_size


async def test_an_interrupted_import_resumes_after_the_last_acknowledged_batch(tmp_path: Path) -> None:
    path = cdnow_file(tmp_path, 40, broken_at=35)
    options = ImportOptions(path, format="cdnow", batch_size=10)
    failing = Collector(fail_after_batches=2)
    with pytest.raises(BrokerUnavailable):
        await run_import(ImportOptions(path, format="cdnow", batch_size=10, retries=0), failing)
    saved = Checkpoint.load(options.checkpoint_path)
    assert saved is not None and (saved.rows, saved.accepted, saved.line) == (20, 20, 21)

    resumed = Collector()
    report = await run_import(options, resumed)
    assert report.resumed_from_line == 21 and (report.rows, report.accepted, report.rejected) == (20, 39, 1)
    everything = failing.ids + resumed.ids
    assert len(everything) == len(set(everything)) == 39  # the third batch never counted as sent
    assert len(report.rejects.read_text().splitlines()) == 1


async def test_limit_stops_resumably_and_a_finished_import_is_not_repeated(tmp_path: Path) -> None:
    path = cdnow_file(tmp_path, 30)
    first = Collector()
    report = await run_import(ImportOptions(path, format="cdnow", batch_size=8, limit=12), first)
    assert (report.rows, report.finished) == (12, False)
    rest = Collector()
    report = await run_import(ImportOptions(path, format="cdnow", batch_size=8), rest)
    assert report.finished and report.resumed_from_line == 13  # header + 12 rows
    assert len(set(first.ids + rest.ids)) == 30
    again = Collector()
    report = await run_import(ImportOptions(path, format="cdnow", batch_size=8), again)
    assert report.rows == 0 and again.batches == []


async def test_resuming_with_another_mapping_or_file_is_refused(tmp_path: Path) -> None:
    path = cdnow_file(tmp_path, 10)
    await run_import(ImportOptions(path, format="cdnow", limit=3), Collector())
    with pytest.raises(BackfillError, match="another file or another mapping"):
        await run_import(ImportOptions(path, format="cdnow", spec=RowSpec(constants={"currency": "CNY"})), Collector())
    restarted = Collector()
    report = await run_import(ImportOptions(path, format="cdnow", restart=True), restarted)
    assert report.rows == 10 and len(restarted.ids) == 10


async def test_dry_run_validates_without_publishing(tmp_path: Path) -> None:
    path = cdnow_file(tmp_path, 5, broken_at=2)
    collector = Collector()
    report = await run_import(ImportOptions(path, format="cdnow", dry_run=True), collector)
    assert (report.accepted, report.rejected) == (4, 1) and collector.batches == []


async def test_contract_problems_name_the_files_columns(tmp_path: Path) -> None:
    path = tmp_path / "orders.csv"
    path.write_text("Order,Who,Paid,When\nA-1,c-1,-5,2024-01-01T10:00:00+08:00\n")
    spec = RowSpec(mapping={"order_id": "Order", "customer_id": "Who", "amount": "Paid", "occurred_at": "When"})
    report = await run_import(ImportOptions(path, spec=spec), Collector())
    (reject,) = [json.loads(line) for line in report.rejects.read_text().splitlines()]
    assert reject["problems"][0].startswith("column 'Paid': Input should be greater than or equal to 0")
