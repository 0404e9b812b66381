"""Backfill (``huitou import``): stream order history from CSV, NDJSON or the CDNOW file into
``huitou.events``, through the same validation as live intake, marked historical.

* Rows become native purchase/refund events (``row_to_event``, pure) and are judged by
  ``intake.validate`` — the very function every HTTP interface uses.
* Batches go straight to Kafka with acks=all (faster than HTTP and needs no running ingest);
  a batch counts as done only once acknowledged, and only then is the checkpoint advanced.
* Ids are deterministic (``import:<type>:<order_id>``; a file without order ids gets
  ``<customer>:<date>:<line>``), so a resumed or repeated import re-sends nothing new: every
  consumer dedupes by event_id (and scoring also by order_id).
* Rejected rows go to an NDJSON file with their line and reasons; the checkpoint next to it
  records the byte offset reached, so ``--resume`` (the default) continues where it stopped.
"""

from __future__ import annotations

import asyncio
import csv
import hashlib
import json
import os
import time
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from rich.console import Console
from rich.progress import (
    BarColumn,
    ProgressColumn,
    Task,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.progress import Progress as RichProgress
from rich.text import Text

from services.ingest.intake import Candidate, MappingError, validate
from services.ingest.publisher import BatchPublisher, event_records
from shared.contracts import IntakeEvent
from shared.kafka import BrokerUnavailable, EventProducer
from shared.topics import EVENTS
from shared.tracing import new_trace_id

FIELDS = (
    "event_id",
    "type",
    "customer_id",
    "occurred_at",
    "order_id",
    "amount",
    "currency",
    "sku",
    "name",
    "category",
    "quantity",
    "price",
    "margin",
    "reason",
)
_ITEM_FIELDS = ("sku", "name", "category", "quantity", "price")
FORMATS = ("csv", "ndjson", "cdnow")
CDNOW_COLUMNS = ("customer_id", "date", "cds", "dollars")


class BackfillError(RuntimeError):
    """The import cannot start or go on; the message says what to do."""


@dataclass(frozen=True)
class RowSpec:
    """How a row of the file becomes an event: column per field, fixed values, time reading."""

    mapping: Mapping[str, str] = field(default_factory=dict)  # our field → the file's column
    constants: Mapping[str, str] = field(default_factory=dict)  # our field → a fixed value
    date_format: str | None = None  # strptime format; ISO 8601 when None
    timezone: str = "UTC"  # for times written without an offset

    def column(self, name: str) -> str:
        return self.mapping.get(name, name)


def parse_pairs(pairs: Sequence[str], what: str) -> dict[str, str]:
    """``["order_id=OrderNo", …]`` → ``{"order_id": "OrderNo"}``, refusing unknown fields."""
    parsed: dict[str, str] = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        name = name.strip()
        if not sep or not name or not value:
            raise BackfillError(f"{what} {pair!r}: write it as field=value, e.g. order_id=OrderNo")
        if name not in FIELDS:
            raise BackfillError(f"{what} {pair!r}: unknown field {name!r}; fields are {', '.join(FIELDS)}")
        parsed[name] = value
    return parsed


def preset(format_name: str, spec: RowSpec) -> RowSpec:
    """CDNOW: customer id, date YYYYMMDD, number of CDs, dollar value (US dollars)."""
    if format_name != "cdnow":
        return spec
    mapping = {"customer_id": "customer_id", "occurred_at": "date", "quantity": "cds", "amount": "dollars"}
    constants = {"currency": "USD", "category": "CD"}
    return RowSpec(
        mapping={**mapping, **spec.mapping},
        constants={**constants, **spec.constants},
        date_format=spec.date_format or "%Y%m%d",
        timezone=spec.timezone,
    )


# --- one row → one native event (pure) -------------------------------------------------------


def _lookup(row: Mapping[str, Any], column: str) -> Any:
    """A column, or a dotted path into nested JSON (NDJSON rows)."""
    if column in row:
        return row[column]
    value: Any = row
    for part in column.split("."):
        if not isinstance(value, Mapping) or part not in value:
            return None
        value = value[part]
    return value


def _text(value: Any) -> str | None:
    if value is None:
        return None
    text = str(value).strip()
    return text or None


def parse_occurred_at(value: str, spec: RowSpec) -> datetime:
    try:
        moment = datetime.strptime(value, spec.date_format) if spec.date_format else datetime.fromisoformat(value)
    except ValueError:
        wanted = spec.date_format or "ISO 8601 (2024-05-01 or 2024-05-01T10:00:00+08:00)"
        raise MappingError([f"occurred_at: {value!r} does not match {wanted}"]) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=ZoneInfo(spec.timezone))
    return moment


def row_to_event(row: Mapping[str, Any], line: int, spec: RowSpec) -> dict[str, Any]:
    """A native purchase or refund event, historical, with deterministic ids; raises MappingError."""
    if "payload" in row and "type" in row and not spec.mapping:
        return {**row, "historical": True}  # already a native event (an NDJSON export of ours)

    def get(name: str) -> str | None:
        found = _text(_lookup(row, spec.column(name)))
        return found if found is not None else _text(spec.constants.get(name))

    problems = []
    event_type = (get("type") or "purchase").lower()
    if event_type not in ("purchase", "refund"):
        problems.append(f"type: order history holds purchase or refund rows; got {event_type!r}")
    customer_id = get("customer_id")
    if customer_id is None:
        problems.append(f"customer_id: column {spec.column('customer_id')!r} is empty or missing")
    raw_time = get("occurred_at")
    occurred_at = None
    if raw_time is None:
        problems.append(f"occurred_at: column {spec.column('occurred_at')!r} is empty or missing")
    else:
        try:
            occurred_at = parse_occurred_at(raw_time, spec)
        except MappingError as error:
            problems.extend(error.problems)
    amount = get("amount")
    if amount is None:
        problems.append(f"amount: column {spec.column('amount')!r} is empty or missing")
    if problems:
        raise MappingError(problems)
    assert customer_id is not None and occurred_at is not None and raw_time is not None
    # Without an order number, the row's customer, date and line make a stable one: the same
    # file imported again (or resumed) yields the same ids, so nothing is counted twice.
    order_id = get("order_id") or f"{customer_id}:{raw_time}:{line}"
    payload: dict[str, Any] = {"order_id": order_id, "amount": amount, "currency": get("currency") or "CNY"}
    if event_type == "purchase":
        item = {name: get(name) for name in _ITEM_FIELDS if get(name) is not None}
        payload["items"] = [item] if item else []
        if get("margin") is not None:
            payload["margin"] = get("margin")
    elif get("reason") is not None:
        payload["reason"] = get("reason")
    return {
        "event_id": get("event_id") or _stable_id(f"import:{event_type}:{order_id}"),
        "type": event_type,
        "customer_id": customer_id,
        "occurred_at": occurred_at.isoformat(),
        "historical": True,
        "payload": payload,
    }


def _stable_id(text: str) -> str:
    return text if len(text) <= 200 else "import:" + hashlib.sha256(text.encode()).hexdigest()


def renames_for(spec: RowSpec) -> tuple[tuple[str, str], ...]:
    """Contract problems reported against the file's columns, not our payload paths."""
    pairs = [(f"payload.items.0.{name}", name) for name in _ITEM_FIELDS]
    pairs += [(f"payload.{name}", name) for name in ("order_id", "amount", "currency", "margin", "reason")]
    pairs += [(name, name) for name in ("event_id", "customer_id", "occurred_at")]
    return tuple((ours, f"column {spec.column(name)!r}") for ours, name in pairs)


# --- reading files with byte offsets, so an import can resume mid-file -----------------------


@dataclass
class Row:
    line: int  # first physical line of the row, 1-based (what a rejection reports)
    end: int  # byte offset just after the row
    end_line: int  # physical line the row ends on (a quoted CSV field may span lines)
    data: dict[str, Any] | None
    problem: str | None = None  # the row could not even be read
    raw: str | None = None


class _Lines:
    """Decoded lines of a binary file with the byte offset and line number reached."""

    def __init__(self, handle: IO[bytes], offset: int, line: int) -> None:
        self._handle = handle
        self.offset = offset
        self.line = line
        handle.seek(offset)

    def __iter__(self) -> Iterator[str]:
        return self

    def __next__(self) -> str:
        raw = self._handle.readline()
        if not raw:
            raise StopIteration
        self.offset += len(raw)
        self.line += 1
        return raw.decode("utf-8-sig" if self.offset == len(raw) else "utf-8", errors="replace")


def read_rows(handle: IO[bytes], fmt: str, offset: int, line: int, delimiter: str = ",") -> Iterator[Row]:
    """Rows from ``offset`` (a row boundary from a checkpoint, or 0)."""
    if fmt == "csv":
        yield from _csv_rows(handle, offset, line, delimiter)
    elif fmt == "ndjson":
        yield from _ndjson_rows(handle, offset, line)
    else:
        yield from _cdnow_rows(handle, offset, line)


def _csv_rows(handle: IO[bytes], offset: int, line: int, delimiter: str) -> Iterator[Row]:
    header_lines = _Lines(handle, 0, 0)
    try:
        header = next(csv.reader(header_lines, delimiter=delimiter))
    except StopIteration:
        return
    header = [name.strip() for name in header]
    lines = _Lines(handle, max(offset, header_lines.offset), max(line, header_lines.line))
    reader = csv.reader(lines, delimiter=delimiter)
    while True:
        start = lines.line + 1
        try:
            values = next(reader)
        except StopIteration:
            return
        except csv.Error as error:
            yield Row(start, lines.offset, lines.line, None, f"not readable as CSV: {error}")
            continue
        if not any(value.strip() for value in values):
            continue
        if len(values) != len(header):
            problem = f"has {len(values)} fields; the header has {len(header)}"
            yield Row(start, lines.offset, lines.line, None, problem, delimiter.join(values))
            continue
        yield Row(start, lines.offset, lines.line, dict(zip(header, values, strict=True)))


def _ndjson_rows(handle: IO[bytes], offset: int, line: int) -> Iterator[Row]:
    lines = _Lines(handle, offset, line)
    for text in lines:
        if not text.strip():
            continue
        try:
            data = json.loads(text)
        except ValueError as error:
            yield Row(lines.line, lines.offset, lines.line, None, f"not valid JSON: {error}", text.strip())
            continue
        if not isinstance(data, dict):
            yield Row(lines.line, lines.offset, lines.line, None, "each line must be a JSON object", text.strip())
            continue
        yield Row(lines.line, lines.offset, lines.line, data)


def _cdnow_rows(handle: IO[bytes], offset: int, line: int) -> Iterator[Row]:
    lines = _Lines(handle, offset, line)
    for text in lines:
        values = text.split()
        if not values or (lines.line == 1 and not values[0].isdigit()):
            continue  # blank, or the header line of CDNOW_master.txt
        if len(values) != len(CDNOW_COLUMNS):
            problem = "expected 4 fields: customer id, date YYYYMMDD, number of CDs, dollar value"
            yield Row(lines.line, lines.offset, lines.line, None, problem, text.strip())
            continue
        yield Row(lines.line, lines.offset, lines.line, dict(zip(CDNOW_COLUMNS, values, strict=True)))


# --- checkpoint ------------------------------------------------------------------------------


@dataclass
class Checkpoint:
    """Where an import stands; written atomically after every acknowledged batch."""

    input: str
    fingerprint: str
    settings: str
    offset: int = 0
    line: int = 0
    rows: int = 0
    accepted: int = 0
    rejected: int = 0
    rejects_offset: int = 0
    finished: bool = False

    def save(self, path: Path) -> None:
        temporary = path.with_name(path.name + ".tmp")
        temporary.write_text(json.dumps(asdict(self), indent=2))
        os.replace(temporary, path)

    @classmethod
    def load(cls, path: Path) -> Checkpoint | None:
        if not path.exists():
            return None
        try:
            return cls(**json.loads(path.read_text()))
        except (ValueError, TypeError) as error:
            raise BackfillError(f"checkpoint {path} is unreadable ({error}); delete it or pass --restart") from None


def fingerprint(path: Path) -> str:
    """The file's first 64 KiB: a resume must continue the same file, not whatever now has its name."""
    with path.open("rb") as handle:
        return hashlib.sha256(handle.read(65536)).hexdigest()


# --- the import ------------------------------------------------------------------------------


@dataclass
class ImportOptions:
    path: Path
    format: str = "csv"
    spec: RowSpec = field(default_factory=RowSpec)
    source: str = "import"
    delimiter: str = ","
    batch_size: int = 500
    rejects: Path | None = None
    checkpoint: Path | None = None
    restart: bool = False
    limit: int | None = None  # stop (resumably) after this many rows
    dry_run: bool = False
    retries: int = 5

    @property
    def rejects_path(self) -> Path:
        return self.rejects or self.path.with_name(self.path.name + ".rejects.ndjson")

    @property
    def checkpoint_path(self) -> Path:
        if self.checkpoint is not None:
            return self.checkpoint
        name = self.rejects_path.name
        stem = name.removesuffix(".rejects.ndjson") if name.endswith(".rejects.ndjson") else name
        return self.rejects_path.with_name(stem + ".checkpoint.json")

    def settings_digest(self) -> str:
        """Resuming with another mapping would silently mix two readings of one file."""
        described = {
            "format": self.format,
            "mapping": dict(self.spec.mapping),
            "constants": dict(self.spec.constants),
            "date_format": self.spec.date_format,
            "timezone": self.spec.timezone,
            "source": self.source,
            "delimiter": self.delimiter,
        }
        return hashlib.sha256(json.dumps(described, sort_keys=True).encode()).hexdigest()[:16]


@dataclass
class ImportReport:
    rows: int
    accepted: int
    rejected: int
    seconds: float
    finished: bool
    resumed_from_line: int
    rejects: Path
    checkpoint: Path
    trace_id: str

    @property
    def rate(self) -> float:
        return self.rows / self.seconds if self.seconds > 0 else 0.0


Publish = Callable[[list[IntakeEvent]], Any]
Progress = Callable[[Checkpoint], None]


def detect_format(path: Path, given: str | None) -> str:
    if given:
        if given not in FORMATS:
            raise BackfillError(f"unknown format {given!r}; choose one of {', '.join(FORMATS)}")
        return given
    suffix = path.suffix.lower()
    if suffix in (".ndjson", ".jsonl"):
        return "ndjson"
    if suffix == ".csv":
        return "csv"
    raise BackfillError(f"cannot tell the format of {path.name}; pass --format csv, ndjson or cdnow")


def validate_options(options: ImportOptions) -> None:
    if not options.path.is_file():
        raise BackfillError(f"{options.path} is not a file")
    try:
        ZoneInfo(options.spec.timezone)
    except (ZoneInfoNotFoundError, ValueError):
        raise BackfillError(
            f"unknown time zone {options.spec.timezone!r}; use an IANA name such as Asia/Shanghai"
        ) from None
    if options.batch_size < 1:
        raise BackfillError("--batch-size must be at least 1")


def start_checkpoint(options: ImportOptions) -> Checkpoint:
    fresh = Checkpoint(str(options.path.resolve()), fingerprint(options.path), options.settings_digest())
    saved = None if options.restart else Checkpoint.load(options.checkpoint_path)
    if saved is None:
        options.rejects_path.write_bytes(b"")
        return fresh
    if saved.fingerprint != fresh.fingerprint or saved.settings != fresh.settings:
        raise BackfillError(
            f"{options.checkpoint_path} belongs to another file or another mapping; "
            "pass --restart to start over (ids are deterministic: re-sent rows are deduplicated)"
        )
    # Rejects written after the last acknowledged batch are written again on resume.
    with options.rejects_path.open("ab") as rejects:
        rejects.truncate(saved.rejects_offset)
    return saved


async def run_import(options: ImportOptions, publish: Publish | None, progress: Progress | None = None) -> ImportReport:
    """Read, validate and publish in batches; resumable at every acknowledged batch."""
    validate_options(options)
    state = start_checkpoint(options)
    resumed_from = state.line
    # One trace per run: history has no request to inherit one from, and a run is the unit an
    # operator follows (its rows' log lines downstream, a resumed run as a trace of its own).
    trace_id = new_trace_id()
    started = time.monotonic()
    spec = preset(options.format, options.spec)
    renames = renames_for(spec)
    limit = options.limit
    rows_this_run = 0
    with options.path.open("rb") as handle, options.rejects_path.open("ab") as rejects:
        batch: list[tuple[Row, Candidate]] = []
        last_row: Row | None = None
        for row in read_rows(handle, options.format, state.offset, state.line, options.delimiter):
            if limit is not None and rows_this_run >= limit:
                break
            rows_this_run += 1
            state.rows += 1
            last_row = row
            candidate = _candidate(row, spec, renames, rejects)
            if candidate is not None:
                batch.append((row, candidate))
            else:
                state.rejected += 1
            if len(batch) >= options.batch_size:
                await _flush(batch, row, state, options, publish, rejects, trace_id)
                batch = []
                if progress:
                    progress(state)
        else:
            state.finished = True
        if last_row is not None:
            await _flush(batch, last_row, state, options, publish, rejects, trace_id)
        elif state.finished:
            state.save(options.checkpoint_path)
    if state.finished:
        state.save(options.checkpoint_path)
    if progress:
        progress(state)
    return ImportReport(
        rows=rows_this_run,
        accepted=state.accepted,
        rejected=state.rejected,
        seconds=time.monotonic() - started,
        finished=state.finished,
        resumed_from_line=resumed_from,
        rejects=options.rejects_path,
        checkpoint=options.checkpoint_path,
        trace_id=trace_id,
    )


def _candidate(row: Row, spec: RowSpec, renames: tuple[tuple[str, str], ...], rejects: IO[bytes]) -> Candidate | None:
    if row.data is None:
        _reject(rejects, row, [row.problem or "unreadable row"])
        return None
    try:
        return Candidate(row.line, row_to_event(row.data, row.line, spec), renames=renames)
    except MappingError as error:
        _reject(rejects, row, error.problems)
        return None


def _reject(rejects: IO[bytes], row: Row, problems: list[str]) -> None:
    entry: dict[str, Any] = {"line": row.line, "problems": problems}
    if row.data is not None:
        entry["row"] = row.data
    elif row.raw is not None:
        entry["raw"] = row.raw
    rejects.write(json.dumps(entry, ensure_ascii=False, default=str).encode() + b"\n")


async def _flush(
    batch: list[tuple[Row, Candidate]],
    last: Row,
    state: Checkpoint,
    options: ImportOptions,
    publish: Publish | None,
    rejects: IO[bytes],
    trace_id: str,
) -> None:
    """Validate, publish (acks=all) and only then advance the checkpoint past ``last``."""
    candidates = [c for _, c in batch]
    verdicts = validate(candidates, source=options.source, received_at=datetime.now(UTC), trace_id=trace_id)
    rows_by_line = {row.line: row for row, _ in batch}
    for rejection in verdicts.rejected:
        _reject(rejects, rows_by_line[rejection.index], rejection.problems)
    rejects.flush()
    if verdicts.valid and publish is not None and not options.dry_run:
        await _publish_with_retries(publish, verdicts.valid, options.retries)
    # Counters already include every row up to ``last``; they reach disk only with this save.
    state.accepted += len(verdicts.valid)
    state.rejected += len(verdicts.rejected)
    state.offset = last.end
    state.line = last.end_line
    state.rejects_offset = rejects.tell()
    state.save(options.checkpoint_path)


async def _publish_with_retries(publish: Publish, events: list[IntakeEvent], retries: int) -> None:
    for attempt in range(retries + 1):
        try:
            await publish(events)
            return
        except BrokerUnavailable:
            if attempt == retries:
                raise
            await asyncio.sleep(min(0.5 * 2**attempt, 10))


@asynccontextmanager
async def kafka_publisher(bootstrap_servers: str, request_timeout_ms: int = 30000) -> AsyncIterator[Publish]:
    """Publish straight to ``huitou.events`` with acks=all, keyed by customer id, through ingest's
    batching publisher (per-partition batches: several times cheaper than a send per record)."""
    producer = EventProducer(bootstrap_servers, request_timeout_ms=request_timeout_ms, client_id="huitou-import")
    await producer.start()
    batches = BatchPublisher(producer, timeout_seconds=request_timeout_ms / 1000 + 1, linger_seconds=0)

    async def publish(events: list[IntakeEvent]) -> None:
        await batches.publish(EVENTS, event_records(events))

    try:
        yield publish
    finally:
        await producer.stop()


# --- the command line (``huitou import``; shared/cli.py only forwards its options here) --------


def _progress_display(console: Console, total: int, start: Checkpoint) -> tuple[RichProgress, Progress]:
    class RowRate(ProgressColumn):
        """Rows per second over this run (the bar itself advances by bytes, which also gives the ETA)."""

        def render(self, task: Task) -> Text:
            rows = int(task.fields.get("rows", 0))
            rate = rows / task.elapsed if task.elapsed else 0.0
            return Text(f"{rate:,.0f} rows/s", style="progress.data.speed")

    display = RichProgress(
        TextColumn("[bold]importing"),
        BarColumn(),
        TaskProgressColumn(),
        TextColumn("{task.fields[done]:,} rows, {task.fields[rejected]:,} rejected"),
        RowRate(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
        TimeElapsedColumn(),
        console=console,
    )
    task = display.add_task("import", total=total, completed=start.offset, done=start.rows, rejected=start.rejected)
    first_rows = start.rows

    def update(state: Checkpoint) -> None:
        display.update(
            task, completed=state.offset, done=state.rows, rejected=state.rejected, rows=state.rows - first_rows
        )

    return display, update


def cli_import(
    path: Path,
    *,
    format_name: str | None,
    maps: Sequence[str],
    sets: Sequence[str],
    date_format: str | None,
    timezone: str,
    source: str,
    delimiter: str,
    batch_size: int,
    rejects: Path | None,
    checkpoint: Path | None,
    restart: bool,
    limit: int | None,
    dry_run: bool,
    show_progress: bool,
    bootstrap_servers: str,
    console: Console | None = None,
) -> int:
    """Run an import from the command line; returns the process exit code."""
    console = console or Console(stderr=True, soft_wrap=True)
    try:
        fmt = detect_format(path, format_name)
        options = ImportOptions(
            path=path,
            format=fmt,
            spec=RowSpec(parse_pairs(maps, "--map"), parse_pairs(sets, "--set"), date_format, timezone),
            source=source,
            delimiter=delimiter,
            batch_size=batch_size,
            rejects=rejects,
            checkpoint=checkpoint,
            restart=restart,
            limit=limit,
            dry_run=dry_run,
        )
        validate_options(options)
        saved = None if restart else Checkpoint.load(options.checkpoint_path)
        if saved is not None and saved.finished:
            console.print(f"{path} was imported already ({saved.rows:,} rows); pass --restart to import it again")
            return 0
        report = asyncio.run(_cli_run(options, bootstrap_servers, show_progress, console, saved))
    except BackfillError as error:
        console.print(f"[red]import refused:[/red] {error}")
        return 2
    except BrokerUnavailable as error:
        console.print(
            f"[red]broker unavailable:[/red] {error}\nprogress up to the last acknowledged batch is saved; "
            "run the same command again to resume"
        )
        return 3
    except KeyboardInterrupt:
        console.print(
            "interrupted; progress up to the last acknowledged batch is saved — run the same command to resume"
        )
        return 130
    _print_report(console, report, dry_run)
    return 0


async def _cli_run(
    options: ImportOptions, bootstrap_servers: str, show_progress: bool, console: Console, saved: Checkpoint | None
) -> ImportReport:
    start = saved or Checkpoint("", "", "")
    if options.dry_run:
        return await _with_display(options, None, show_progress, console, start)
    async with kafka_publisher(bootstrap_servers) as publish:
        return await _with_display(options, publish, show_progress, console, start)


async def _with_display(
    options: ImportOptions, publish: Publish | None, show_progress: bool, console: Console, start: Checkpoint
) -> ImportReport:
    if not show_progress:
        return await run_import(options, publish)
    display, update = _progress_display(console, options.path.stat().st_size, start)
    with display:
        return await run_import(options, publish, update)


def _print_report(console: Console, report: ImportReport, dry_run: bool) -> None:
    verb = "valid (dry run, nothing published)" if dry_run else "published"
    where = f" (resumed after line {report.resumed_from_line:,})" if report.resumed_from_line else ""
    console.print(
        f"{report.rows:,} rows read in {report.seconds:.1f} s ({report.rate:,.0f} rows/s){where}; "
        f"in total {report.accepted:,} {verb}, {report.rejected:,} rejected"
    )
    if report.rows and not dry_run:
        console.print(f"trace id of this run (events without one of their own): {report.trace_id}")
    if report.rejected:
        console.print(f"rejected rows and why: {report.rejects}")
    if not report.finished:
        console.print(f"stopped before the end; run the same command to resume (checkpoint {report.checkpoint})")
