"""``huitou dlq``: list what is in ``huitou.dlq`` and replay it to the topics it came from.

A dead letter (see :func:`shared.kafka.dead_letter`) keeps the original message — value, key and
headers — with where it came from (``service``, ``topic``, partition, offset), the error and
``failed_at``. Replaying republishes the original to its topic with its key and headers, plus a
``huitou-replayed-from: huitou.dlq/<partition>/<offset>`` header, and waits for acks=all.

Progress: dead letters from one origin (service and topic) are replayed in DLQ order, and the
position after the last one handled is committed to that origin's own consumer group,
``huitou-dlq-replay.<service>.<topic>``, only after the broker acknowledged the republished
messages. A second replay starts from there, so it does not resend what was replayed; one group
per origin lets ``--service``/``--topic`` replay one origin without moving another's position.
A crash between the ack and the commit resends that batch — harmless, because every consumer
dedupes by ``event_id`` (which is also why replaying an event a consumer did apply is a no-op).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import logging
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal, TextIO

from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from aiokafka.errors import KafkaError

from shared.kafka import BrokerUnavailable, EventProducer, Outgoing
from shared.topics import DLQ

REPLAY_GROUP_PREFIX = "huitou-dlq-replay"
REPLAYED_FROM = "huitou-replayed-from"
Origin = tuple[str, str]  # (service, topic)


class DlqError(RuntimeError):
    """The DLQ could not be read or replayed; the message says what to do."""


@dataclass(frozen=True)
class DeadLetter:
    dlq_partition: int
    dlq_offset: int
    service: str
    group_id: str | None
    topic: str
    partition: int | None
    offset: int | None
    key: str | None
    error: str
    failed_at: datetime
    value: bytes
    binary: bool  # the original was not UTF-8 and came as value_base64
    headers: tuple[tuple[str, bytes], ...]

    @property
    def origin(self) -> Origin:
        return (self.service, self.topic)

    @property
    def where(self) -> str:
        return f"{DLQ}/{self.dlq_partition}/{self.dlq_offset}"

    def replay(self) -> Outgoing:
        """The original message again, marked with where in the DLQ it was replayed from."""
        # A message dead-lettered again after an earlier replay names only its latest DLQ place.
        headers = tuple(h for h in self.headers if h[0] != REPLAYED_FROM)
        return Outgoing(self.topic, self.key, self.value, (*headers, (REPLAYED_FROM, self.where.encode())))


@dataclass(frozen=True)
class Unreadable:
    """A record in the DLQ that is not a dead letter this code can replay (written by hand,
    truncated, or naming the DLQ itself as its origin)."""

    dlq_partition: int
    dlq_offset: int
    reason: str

    @property
    def where(self) -> str:
        return f"{DLQ}/{self.dlq_partition}/{self.dlq_offset}"


def parse_dead_letter(record: ConsumerRecord[bytes, bytes]) -> DeadLetter | Unreadable:
    def unreadable(reason: str) -> Unreadable:
        return Unreadable(record.partition, record.offset, reason)

    try:
        body = json.loads(record.value or b"")
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        return unreadable(f"not JSON: {error}")
    if not isinstance(body, dict):
        return unreadable("not a JSON object")
    topic, service = body.get("topic"), body.get("service")
    if not isinstance(topic, str) or not topic or not isinstance(service, str):
        return unreadable("no origin topic or service")
    if topic == DLQ:
        return unreadable("names the DLQ itself as its origin")
    if isinstance(body.get("value"), str):
        value, binary = body["value"].encode(), False
    elif isinstance(body.get("value_base64"), str):
        try:
            value, binary = base64.b64decode(body["value_base64"], validate=True), True
        except binascii.Error as error:
            return unreadable(f"value_base64 is not base64: {error}")
    else:
        return unreadable("neither value nor value_base64")
    try:
        failed_at = as_utc(datetime.fromisoformat(str(body.get("failed_at"))))
    except ValueError:
        return unreadable(f"failed_at is not a timestamp: {body.get('failed_at')!r}")
    key = body.get("key")
    return DeadLetter(
        dlq_partition=record.partition,
        dlq_offset=record.offset,
        service=service,
        group_id=body.get("group_id"),
        topic=topic,
        partition=body.get("partition"),
        offset=body.get("offset"),
        key=key if isinstance(key, str) else None,
        error=str(body.get("error", "")),
        failed_at=failed_at,
        value=value,
        binary=binary,
        # Kafka allows a header without a value; it is replayed as an empty one.
        headers=tuple((name, value or b"") for name, value in record.headers or ()),
    )


def as_utc(moment: datetime) -> datetime:
    """Timestamps written without an offset are taken as UTC (as the DLQ writes them)."""
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def replay_group(origin: Origin) -> str:
    service, topic = origin
    return f"{REPLAY_GROUP_PREFIX}.{service}.{topic}"


@dataclass(frozen=True)
class Filters:
    """Which dead letters a command is about: origins (empty means all) and a ``failed_at`` window
    (``since`` inclusive, ``until`` exclusive)."""

    topics: frozenset[str] = frozenset()
    services: frozenset[str] = frozenset()
    since: datetime | None = None
    until: datetime | None = None

    def selects(self, origin: Origin) -> bool:
        service, topic = origin
        return (not self.topics or topic in self.topics) and (not self.services or service in self.services)

    def in_window(self, letter: DeadLetter) -> bool:
        return (self.since is None or letter.failed_at >= self.since) and (
            self.until is None or letter.failed_at < self.until
        )


Positions = dict[tuple[Origin, int], int]  # (origin, DLQ partition) → next DLQ offset to handle


def is_pending(letter: DeadLetter, positions: Positions) -> bool:
    return letter.dlq_offset >= positions.get((letter.origin, letter.dlq_partition), 0)


Action = Literal["replay", "pass"]


@dataclass
class ReplayPlan:
    """What a replay does, in DLQ order: ``steps`` republish (``replay``) or skip for good
    (``pass``: failed before ``--since``); each moves its origin's position past it."""

    steps: list[tuple[DeadLetter, Action]] = field(default_factory=list)
    already: int = 0  # behind their origin's position: replayed (or passed over) before
    held: int = 0  # at or after --until: stay pending, and so does everything after them
    not_selected: int = 0  # other origins
    unreadable: list[Unreadable] = field(default_factory=list)

    def count(self, action: Action) -> int:
        return sum(1 for _, a in self.steps if a == action)


def plan_replay(records: Iterable[DeadLetter | Unreadable], positions: Positions, filters: Filters) -> ReplayPlan:
    """Walk each selected origin's dead letters from its position, in DLQ order.

    ``--since`` passes over the origin's older pending dead letters for good (its position moves
    past them, as a consumer group reset to a date would); the first one at or after ``--until``
    stops that origin, so its position never skips anything that was not handled.
    """
    plan = ReplayPlan()
    stopped: set[tuple[Origin, int]] = set()
    for item in sorted(records, key=lambda r: (r.dlq_partition, r.dlq_offset)):
        if isinstance(item, Unreadable):
            plan.unreadable.append(item)
            continue
        lane = (item.origin, item.dlq_partition)
        if not filters.selects(item.origin):
            plan.not_selected += 1
        elif not is_pending(item, positions):
            plan.already += 1
        elif lane in stopped or (filters.until is not None and item.failed_at >= filters.until):
            stopped.add(lane)
            plan.held += 1
        elif filters.since is not None and item.failed_at < filters.since:
            plan.steps.append((item, "pass"))
        else:
            plan.steps.append((item, "replay"))
    return plan


# --- the broker side ----------------------------------------------------------------------------


def _unreachable(bootstrap: str, error: BaseException) -> DlqError:
    return DlqError(f"cannot reach the broker at {bootstrap}: {error}; check --bootstrap-servers")


async def read_dlq(
    bootstrap: str, *, request_timeout_ms: int = 5000, idle_timeout: float = 30.0
) -> list[ConsumerRecord[bytes, bytes]]:
    """Every record in the DLQ now (all partitions, from the oldest retained), without a group."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        request_timeout_ms=request_timeout_ms,
        max_partition_fetch_bytes=8 * 1024 * 1024,  # DLQ messages may be up to 4 MiB
    )
    try:
        await consumer.start()
    except (KafkaError, OSError) as error:
        await consumer.stop()
        raise _unreachable(bootstrap, error) from error
    try:
        partitions = consumer.partitions_for_topic(DLQ)
        if not partitions:
            await consumer._client.force_metadata_update()  # a fresh client may not know it yet
            partitions = consumer.partitions_for_topic(DLQ)
        if not partitions:
            raise DlqError(f"topic {DLQ} does not exist on the broker at {bootstrap}")
        tps = [TopicPartition(DLQ, p) for p in sorted(partitions)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        ends = await consumer.end_offsets(tps)
        records: list[ConsumerRecord[bytes, bytes]] = []
        last_progress = time.monotonic()
        while True:
            batch = await consumer.getmany(*tps, timeout_ms=500)
            if batch:
                for items in batch.values():
                    records.extend(items)
                last_progress = time.monotonic()
                continue
            # Done when a poll comes back empty at or past the end offsets. Not the end offsets
            # alone: after a multi-record batch Tansu may report an end short of the true one.
            positions = {tp: await consumer.position(tp) for tp in tps}
            if all(positions[tp] >= ends[tp] for tp in tps):
                return records
            if time.monotonic() - last_progress > idle_timeout:
                raise DlqError(f"reading {DLQ} stalled for {idle_timeout:.0f} s; is the broker healthy?")
    except KafkaError as error:
        raise _unreachable(bootstrap, error) from error
    finally:
        await consumer.stop()


class ReplayProgress:
    """The committed positions of the origins' replay groups, one small consumer per group
    (assigned, never subscribed: committing needs no group membership)."""

    def __init__(self, bootstrap: str, partitions: Sequence[int], request_timeout_ms: int = 5000) -> None:
        self._bootstrap = bootstrap
        self._tps = [TopicPartition(DLQ, p) for p in partitions]
        self._timeout = request_timeout_ms
        self._groups: dict[Origin, AIOKafkaConsumer] = {}

    async def _group(self, origin: Origin) -> AIOKafkaConsumer:
        if origin not in self._groups:
            consumer = AIOKafkaConsumer(
                bootstrap_servers=self._bootstrap,
                group_id=replay_group(origin),
                enable_auto_commit=False,
                request_timeout_ms=self._timeout,
            )
            try:
                await consumer.start()
            except (KafkaError, OSError) as error:
                await consumer.stop()
                raise _unreachable(self._bootstrap, error) from error
            consumer.assign(self._tps)
            self._groups[origin] = consumer
        return self._groups[origin]

    async def positions(self, origins: Iterable[Origin]) -> Positions:
        found: Positions = {}
        for origin in sorted(set(origins)):
            consumer = await self._group(origin)
            for tp in self._tps:
                try:
                    committed = await consumer.committed(tp)
                except KafkaError as error:
                    raise DlqError(f"cannot read the replay position of {replay_group(origin)}: {error!r}") from error
                if committed is not None:
                    found[(origin, tp.partition)] = committed
        return found

    async def commit(self, positions: Positions) -> None:
        by_origin: dict[Origin, dict[TopicPartition, int]] = {}
        for (origin, partition), offset in positions.items():
            by_origin.setdefault(origin, {})[TopicPartition(DLQ, partition)] = offset
        for origin, offsets in by_origin.items():
            consumer = await self._group(origin)
            try:
                await consumer.commit(offsets)
            except KafkaError as error:
                raise DlqError(
                    f"the last batch was republished and acknowledged, but the position of {replay_group(origin)} "
                    f"could not be committed ({error!r}); running the replay again resends that batch, which "
                    "consumers recognise by event_id and ignore"
                ) from error

    async def close(self) -> None:
        for consumer in self._groups.values():
            await consumer.stop()
        self._groups.clear()


@dataclass
class Snapshot:
    records: list[DeadLetter | Unreadable]
    positions: Positions


async def snapshot(bootstrap: str, *, request_timeout_ms: int = 5000) -> tuple[Snapshot, ReplayProgress]:
    raw = await read_dlq(bootstrap, request_timeout_ms=request_timeout_ms)
    records = [parse_dead_letter(r) for r in sorted(raw, key=lambda r: (r.partition, r.offset))]
    partitions = sorted({r.partition for r in raw}) or [0]
    progress = ReplayProgress(bootstrap, partitions, request_timeout_ms)
    try:
        positions = await progress.positions(r.origin for r in records if isinstance(r, DeadLetter))
    except BaseException:
        await progress.close()
        raise
    return Snapshot(records, positions), progress


@dataclass
class ReplayReport:
    plan: ReplayPlan
    replayed: list[DeadLetter] = field(default_factory=list)
    passed: list[DeadLetter] = field(default_factory=list)


async def replay(
    bootstrap: str,
    filters: Filters,
    *,
    dry_run: bool = False,
    batch_size: int = 100,
    request_timeout_ms: int = 5000,
    on_step: Callable[[DeadLetter, Action], None] | None = None,
) -> ReplayReport:
    """Replay the pending dead letters ``filters`` select; see the module docstring."""
    state, progress = await snapshot(bootstrap, request_timeout_ms=request_timeout_ms)
    try:
        plan = plan_replay(state.records, state.positions, filters)
        report = ReplayReport(plan)
        if dry_run or not plan.steps:
            return report
        producer = EventProducer(bootstrap, request_timeout_ms=request_timeout_ms, client_id="huitou-dlq-replay")
        try:
            await producer.start()
        except BrokerUnavailable as error:
            raise _unreachable(bootstrap, error) from error
        try:
            for chunk in _chunks(plan.steps, batch_size):
                to_send = [letter for letter, action in chunk if action == "replay"]
                if to_send:
                    await producer.publish_many([letter.replay() for letter in to_send])  # acks=all
                # Only now, with every republish acknowledged, may the positions move past them.
                await progress.commit({(d.origin, d.dlq_partition): d.dlq_offset + 1 for d, _ in chunk})
                for letter, action in chunk:
                    (report.replayed if action == "replay" else report.passed).append(letter)
                    if on_step is not None:
                        on_step(letter, action)
        finally:
            await producer.stop()
        return report
    finally:
        await progress.close()


def _chunks(
    steps: list[tuple[DeadLetter, Action]], replays_per_chunk: int
) -> Iterable[list[tuple[DeadLetter, Action]]]:
    """Consecutive steps holding at most ``replays_per_chunk`` replays (passes ride along)."""
    chunk: list[tuple[DeadLetter, Action]] = []
    replays = 0
    for step in steps:
        if step[1] == "replay" and replays == replays_per_chunk:
            yield chunk
            chunk, replays = [], 0
        chunk.append(step)
        replays += step[1] == "replay"
    if chunk:
        yield chunk


# --- the command line ---------------------------------------------------------------------------


def parse_moment(text: str | None, option: str) -> datetime | None:
    """ISO 8601 (``2025-01-31``, ``2025-01-31T08:00``, ``…Z``, ``…+08:00``); no offset means UTC."""
    if text is None:
        return None
    try:
        return as_utc(datetime.fromisoformat(text))
    except ValueError:
        raise DlqError(f"{option} {text!r} is not an ISO 8601 date or time, e.g. 2025-01-31T08:00:00Z") from None


def _short(text: str, width: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1] + "…"


def letter_json(letter: DeadLetter, state: str) -> dict[str, Any]:
    body: dict[str, Any] = {
        "dlq": letter.where,
        "state": state,
        "service": letter.service,
        "group_id": letter.group_id,
        "topic": letter.topic,
        "partition": letter.partition,
        "offset": letter.offset,
        "key": letter.key,
        "error": letter.error,
        "failed_at": letter.failed_at.isoformat(),
        "headers": {name: value.decode(errors="replace") for name, value in letter.headers},
    }
    if letter.binary:
        body["value_base64"] = base64.b64encode(letter.value).decode()
    else:
        body["value"] = letter.value.decode()
    return body


def _quiet_client() -> None:
    # aiokafka logs every failed connection attempt; the command's own error message says it once.
    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)


def cli_list(
    bootstrap: str,
    filters: Filters,
    *,
    pending_only: bool,
    as_json: bool,
    request_timeout_ms: int,
    out: TextIO = sys.stdout,
    err: TextIO = sys.stderr,
) -> int:
    _quiet_client()

    async def load() -> Snapshot:
        state, progress = await snapshot(bootstrap, request_timeout_ms=request_timeout_ms)
        await progress.close()
        return state

    try:
        state = asyncio.run(load())
    except DlqError as error:
        print(f"error: {error}", file=err)
        return 3
    shown = 0
    if not as_json:
        print(
            f"{'DLQ':<18} {'STATE':<8} {'FAILED AT (UTC)':<20} {'SERVICE':<9} {'FROM':<24} {'KEY':<16} ERROR", file=out
        )
    for item in state.records:
        if isinstance(item, Unreadable):
            if not (filters.topics or filters.services or pending_only):
                line = {"dlq": item.where, "state": "unreadable", "reason": item.reason}
                print(json.dumps(line) if as_json else f"{item.where:<18} unreadable: {item.reason}", file=out)
                shown += 1
            continue
        if not (filters.selects(item.origin) and filters.in_window(item)):
            continue
        state_name = "pending" if is_pending(item, state.positions) else "handled"
        if pending_only and state_name != "pending":
            continue
        shown += 1
        if as_json:
            print(json.dumps(letter_json(item, state_name), ensure_ascii=False), file=out)
            continue
        source = f"{item.topic}[{item.partition}]@{item.offset}"
        print(
            f"{item.where:<18} {state_name:<8} {item.failed_at:%Y-%m-%d %H:%M:%S}  {item.service:<9} "
            f"{source:<24} {_short(item.key or '-', 16):<16} {_short(item.error, 80)}",
            file=out,
        )
    if not as_json:
        print(f"{shown} of {len(state.records)} records in {DLQ}", file=err)
    return 0


def cli_replay(
    bootstrap: str,
    filters: Filters,
    *,
    dry_run: bool,
    batch_size: int,
    request_timeout_ms: int,
    out: TextIO = sys.stdout,
    err: TextIO = sys.stderr,
) -> int:
    verb = {
        "replay": "would replay" if dry_run else "replayed",
        "pass": "would pass over" if dry_run else "passed over",
    }

    _quiet_client()

    def show(letter: DeadLetter, action: Action) -> None:
        print(f"{verb[action]} {letter.where} → {letter.topic} key={letter.key or '-'} ({letter.service})", file=out)

    try:
        report = asyncio.run(
            replay(
                bootstrap,
                filters,
                dry_run=dry_run,
                batch_size=batch_size,
                request_timeout_ms=request_timeout_ms,
                on_step=show,
            )
        )
    except DlqError as error:
        print(f"error: {error}", file=err)
        return 3
    except BrokerUnavailable as error:
        print(
            f"error: {error}\nthe positions of acknowledged batches are committed; run the same command again",
            file=err,
        )
        return 3
    plan = report.plan
    if dry_run:
        for letter, action in plan.steps:
            show(letter, action)
    replayed = plan.count("replay") if dry_run else len(report.replayed)
    passed = plan.count("pass") if dry_run else len(report.passed)
    print(
        f"{verb['replay']} {replayed}; {verb['pass']} {passed} (failed before --since); "
        f"{plan.already} replayed before; {plan.held} held (failed at or after --until); "
        f"{plan.not_selected} of other origins; {len(plan.unreadable)} unreadable",
        file=err,
    )
    return 0
