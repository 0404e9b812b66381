"""Kafka plumbing on aiokafka: a producer that only reports success on acks=all, a consumer loop
that commits offsets only after the handler's database transactions, and the DLQ hand-off.

The dev broker (Tansu) has no idempotent producer, and neither does an effectively-once design
need one: producers may duplicate on retry, every consumer dedupes by ``event_id``.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import random
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable, Sequence
from contextlib import AbstractAsyncContextManager, AbstractContextManager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol, runtime_checkable

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import (
    CommitFailedError,
    IllegalStateError,
    KafkaConnectionError,
    KafkaError,
    TopicAlreadyExistsError,
)
from aiokafka.structs import RecordMetadata

from shared.contracts import AnyEvent, ContractError, parse_event
from shared.observability import ServiceMetrics
from shared.topics import DLQ, TOPICS, TopicSpec
from shared.tracing import bound, trace_id_from_headers

log = logging.getLogger("huitou.kafka")


class BrokerUnavailable(RuntimeError):
    """The broker did not acknowledge in time; the caller must not report success."""


@dataclass(frozen=True)
class Outgoing:
    topic: str
    key: str | None
    value: bytes
    headers: tuple[tuple[str, bytes], ...] = ()


class EventProducer:
    """aiokafka producer with acks=all whose ``publish`` returns only once the broker stored it."""

    def __init__(self, bootstrap_servers: str, *, request_timeout_ms: int = 5000, client_id: str = "huitou") -> None:
        self._bootstrap = bootstrap_servers
        self._timeout_ms = request_timeout_ms
        self._client_id = client_id
        self._producer: AIOKafkaProducer | None = None

    @property
    def ready(self) -> bool:
        return self._producer is not None

    @property
    def client(self) -> AIOKafkaProducer | None:
        """The started aiokafka producer (acks=all), for callers that build their own batches."""
        return self._producer

    async def start(self) -> None:
        producer = AIOKafkaProducer(
            bootstrap_servers=self._bootstrap,
            client_id=self._client_id,
            acks="all",
            enable_idempotence=False,
            request_timeout_ms=self._timeout_ms,
            linger_ms=2,
            max_batch_size=1024 * 1024,
            max_request_size=2 * 1024 * 1024,
        )
        try:
            await producer.start()
        except (KafkaError, OSError) as error:
            await producer.stop()
            raise BrokerUnavailable(f"cannot reach broker at {self._bootstrap}: {error}") from error
        self._producer = producer

    async def start_when_reachable(self, stop: asyncio.Event, retry_seconds: float = 1.0) -> None:
        """Keep trying to start until the broker answers (so a service can boot before Kafka)."""
        while not stop.is_set() and not self.ready:
            try:
                await self.start()
            except BrokerUnavailable as error:
                log.warning("broker not reachable yet: %s", error)
                try:
                    await asyncio.wait_for(stop.wait(), retry_seconds)
                except TimeoutError:
                    pass

    async def check(self) -> None:
        """Readiness: the broker answers a metadata request right now."""
        if self._producer is None:
            raise BrokerUnavailable("producer not connected to the broker yet")
        try:
            metadata = await asyncio.wait_for(self._producer.client.fetch_all_metadata(), 2)
        except (TimeoutError, KafkaError, OSError) as error:
            raise BrokerUnavailable(f"broker not answering: {error!r}") from error
        if not metadata.brokers():
            raise BrokerUnavailable("broker returned no metadata")

    async def stop(self) -> None:
        if self._producer is not None:
            producer, self._producer = self._producer, None
            await producer.stop()

    async def publish(self, message: Outgoing) -> RecordMetadata:
        return (await self.publish_many([message]))[0]

    async def publish_many(self, messages: Sequence[Outgoing]) -> list[RecordMetadata]:
        """Send all, wait for every acknowledgement; any failure fails the whole call."""
        if self._producer is None:
            raise BrokerUnavailable("producer not connected to the broker yet")
        producer = self._producer

        async def send_all() -> list[RecordMetadata]:
            futures = [
                await producer.send(
                    m.topic,
                    m.value,
                    key=m.key.encode() if m.key is not None else None,
                    headers=list(m.headers) or None,
                )
                for m in messages
            ]
            return list(await asyncio.gather(*futures))

        try:
            return await asyncio.wait_for(send_all(), self._timeout_ms / 1000 + 1)
        except (TimeoutError, KafkaError, OSError) as error:
            raise BrokerUnavailable(f"broker did not acknowledge: {error!r}") from error


async def ensure_topics(bootstrap_servers: str, specs: Iterable[TopicSpec] = TOPICS) -> None:
    """Create missing topics (dev stack and tests; Strimzi KafkaTopics do this in production)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap_servers, request_timeout_ms=10000)
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        missing = [NewTopic(s.name, s.partitions, 1) for s in specs if s.name not in existing]
        if missing:
            try:
                await admin.create_topics(missing)
            except TopicAlreadyExistsError:
                pass
    finally:
        await admin.close()


Handler = Callable[[AnyEvent, ConsumerRecord[bytes, bytes]], Awaitable[None]]
"""Applies one event in its own database transaction (and commits it) before returning."""

TransientCheck = Callable[[BaseException], bool]


@runtime_checkable
class BatchHandler(Protocol):
    """A handler that can apply several events in one database transaction.

    ``transaction(upcoming)`` opens a transaction and yields ``apply(event, record)``, which does
    one event's work inside it (claiming its id first, so a replay is a no-op); the transaction
    commits when the block exits cleanly and rolls back, with every claim, when it raises.
    ``upcoming`` lists, in order, the events the loop means to apply in it, so a handler can read
    what they need in a few queries up front and write at the end of the block instead of paying
    round trips per event. The loop may stop early (its time budget is spent), so a handler acts
    only on events passed to ``apply`` and must cope with events it was not told about.
    Anything the handler does only once the commit stuck (notifying its outbox relay, counting
    duplicates) happens after the block. Calling the handler itself applies one event in a
    transaction of its own.
    """

    def transaction(self, upcoming: Sequence[AnyEvent] = ()) -> AbstractAsyncContextManager[Handler]: ...

    async def __call__(self, event: AnyEvent, record: ConsumerRecord[bytes, bytes]) -> None: ...


def dead_letter(record: ConsumerRecord[bytes, bytes], error: str, service: str, group_id: str) -> Outgoing:
    """The DLQ form of a message: enough to understand it and to replay it to its topic."""
    value = record.value or b""
    try:
        body: dict[str, Any] = {"value": value.decode()}
    except UnicodeDecodeError:
        body = {"value_base64": base64.b64encode(value).decode()}
    body.update(
        service=service,
        group_id=group_id,
        topic=record.topic,
        partition=record.partition,
        offset=record.offset,
        key=record.key.decode(errors="replace") if record.key else None,
        error=error,
        failed_at=datetime.now(UTC).isoformat(),
    )
    key = record.key.decode(errors="replace") if record.key else None
    return Outgoing(DLQ, key, json.dumps(body).encode(), tuple(record.headers or ()))


@dataclass
class _Progress:
    """How far one batch transaction got: events begun, and events whose work completed."""

    begun: int = 0
    applied: int = 0


class _Fetched:
    """One poll's records, partition after partition (each partition's in offset order), parsed
    when a run takes them up (a run stops early when its transaction's time budget is spent, so
    the rest is parsed only when its turn comes)."""

    def __init__(self, records: list[ConsumerRecord[bytes, bytes]]) -> None:
        self.records = records
        self._parsed: dict[int, AnyEvent | ContractError] = {}

    def __len__(self) -> int:
        return len(self.records)

    def event(self, index: int) -> AnyEvent | ContractError:
        if index not in self._parsed:
            try:
                self._parsed[index] = parse_event(self.records[index].value or b"")
            except ContractError as error:
                self._parsed[index] = error
        return self._parsed[index]


def _log_ids(event: AnyEvent, record: ConsumerRecord[bytes, bytes]) -> AbstractContextManager[None]:
    """Every log line while ``event`` is applied names it, its customer and its trace."""
    trace_id = trace_id_from_headers(record.headers) or event.trace_id
    return bound(event_id=event.event_id, customer_id=event.customer_id, trace_id=trace_id)


class ConsumerLoop:
    """Consume, apply events in database transactions, and commit offsets only after them.

    With a :class:`BatchHandler`, consecutive records of one poll share one transaction, across
    its partitions (at most ``transaction_records`` of them, closed once ``transaction_seconds``
    are spent so locks and latency stay short); a plain :data:`Handler` commits each event itself.
    A transaction per partition would pay its fixed cost (the reads up front, the writes, the
    commit: some 15–20 ms on SQLite) up to six times a poll, which at a moderate rate kept the
    consumer busy and added a poll cycle to every event's latency. Per-partition order is all a
    handler may rely on (a customer's events share a partition), and it is kept. Unparseable
    messages and messages that keep failing go to the DLQ; transient failures (database or
    broker down) pause the consumer's progress and retry. A batch that fails for another reason
    is re-applied one event per transaction, so only the culprit is retried and dead-lettered.
    """

    def __init__(
        self,
        *,
        topics: Sequence[str],
        group_id: str,
        bootstrap_servers: str,
        handler: Handler,
        producer: EventProducer,
        metrics: ServiceMetrics,
        service: str,
        is_transient: TransientCheck,
        max_attempts: int = 5,
        max_batch: int = 1000,
        transaction_records: int = 500,
        transaction_seconds: float = 0.2,
        backoff_cap_seconds: float = 15.0,
        session_timeout_ms: int = 10_000,
        fetch_max_wait_ms: int = 100,
    ) -> None:
        self.topics = list(topics)
        self.group_id = group_id
        self._bootstrap = bootstrap_servers
        self._handler = handler
        self._batches = handler if isinstance(handler, BatchHandler) else None
        self._producer = producer
        self._metrics = metrics
        self._service = service
        self._is_transient = is_transient
        self._max_attempts = max_attempts
        self._max_batch = max_batch
        self._transaction_records = max(1, transaction_records)
        self._transaction_seconds = transaction_seconds
        self._backoff_cap = backoff_cap_seconds
        self._session_timeout_ms = session_timeout_ms
        self._fetch_max_wait_ms = fetch_max_wait_ms
        self._stop = asyncio.Event()
        self.consumer: AIOKafkaConsumer | None = None
        self.assigned = asyncio.Event()
        self._lag_reported: set[TopicPartition] = set()
        self.backlog = 0
        """Events behind the high-water marks of this member's partitions, as last measured."""

    def stop(self) -> None:
        self._stop.set()

    async def check(self) -> None:
        """Readiness: joined to the broker (the producer's check covers reachability)."""
        if self.consumer is None:
            raise BrokerUnavailable("consumer not connected to the broker yet")

    async def run(self) -> None:
        await self._connect()
        consumer = self.consumer
        if consumer is None:
            return
        try:
            while not self._stop.is_set():
                batches = await consumer.getmany(timeout_ms=250, max_records=self._max_batch)
                if consumer.assignment():
                    self.assigned.set()
                if batches:
                    await self._process_poll(consumer, [r for records in batches.values() for r in records])
                await self._record_lag(consumer)
        finally:
            self.consumer = None
            await consumer.stop()

    async def _connect(self) -> None:
        while not self._stop.is_set():
            consumer = AIOKafkaConsumer(
                *self.topics,
                bootstrap_servers=self._bootstrap,
                group_id=self.group_id,
                client_id=f"{self._service}-consumer",
                enable_auto_commit=False,
                auto_offset_reset="earliest",
                max_partition_fetch_bytes=4 * 1024 * 1024,
                # Frequent heartbeats let a member learn of a finished rebalance sooner: a join
                # takes ~3 s instead of ~5 s on the dev broker, and replicas take over faster.
                heartbeat_interval_ms=500,
                session_timeout_ms=self._session_timeout_ms,
                fetch_max_wait_ms=self._fetch_max_wait_ms,
            )
            try:
                await consumer.start()
            except (KafkaError, OSError) as error:
                log.warning("consumer cannot reach broker yet: %s", error)
                await consumer.stop()
                await self._sleep(1.0)
                continue
            self.consumer = consumer
            return

    async def _record_lag(self, consumer: AIOKafkaConsumer) -> None:
        """Export lag per assigned partition (what KEDA scales on, and what an operator watches).

        A partition lost in a rebalance loses its series too: its last value would otherwise stay
        frozen here while the new owner reports the live one, and a sum over replicas double-counts."""
        assignment = consumer.assignment()
        for tp in self._lag_reported - assignment:
            with contextlib.suppress(KeyError):
                self._metrics.consumer_lag.remove(self._service, tp.topic, str(tp.partition))
        self._lag_reported = set(assignment)
        backlog = 0
        for tp in assignment:
            highwater = consumer.highwater(tp)
            if highwater is None:
                continue
            try:
                position = await asyncio.wait_for(consumer.position(tp), 0.5)
            except (KafkaError, IllegalStateError, TimeoutError):
                continue  # revoked in a rebalance since assignment() was read
            lag = max(highwater - position, 0)
            backlog += lag
            self._metrics.consumer_lag.labels(self._service, tp.topic, str(tp.partition)).set(lag)
        self.backlog = backlog

    async def _process_poll(self, consumer: AIOKafkaConsumer, records: list[ConsumerRecord[bytes, bytes]]) -> None:
        """Settle one poll's records (partition after partition) in runs, committing the offsets
        of each run's partitions once it is settled."""
        fetched = _Fetched(records)
        position = 0
        while position < len(fetched) and not self._stop.is_set():
            settled = await self._settle_some(fetched, position)
            if not settled:
                break
            offsets = {
                TopicPartition(r.topic, r.partition): r.offset + 1 for r in records[position : position + settled]
            }
            position += settled
            if not await self._commit(consumer, offsets):
                break
        if position < len(fetched):
            # Stopped part-way (shutdown, a transient failure, a lost partition): rewind each
            # partition to its first record not settled, so the rest is re-read — by this member,
            # or by the partition's new owner from its commit.
            rewind: dict[TopicPartition, int] = {}
            for record in records[position:]:
                rewind.setdefault(TopicPartition(record.topic, record.partition), record.offset)
            for tp, offset in rewind.items():
                with contextlib.suppress(IllegalStateError, KeyError):
                    consumer.seek(tp, offset)

    async def _commit(self, consumer: AIOKafkaConsumer, offsets: dict[TopicPartition, int]) -> bool:
        """Commit ``offsets`` of the partitions still assigned; False: stop this poll here.

        aiokafka refuses a whole commit that names one partition no longer assigned, so a
        partition lost in a rebalance part-way through a poll is left out; the others' progress
        is still committed, and the poll stops so nothing more of the lost one is applied."""
        assigned = consumer.assignment()
        owned = {tp: offset for tp, offset in offsets.items() if tp in assigned}
        lost = sorted(set(offsets) - set(owned))
        if lost:
            # Its new owner replays from the last committed offset and dedupes by event_id.
            log.warning("partitions %s were revoked part-way through a poll; their new owner replays them", lost)
        try:
            if owned:
                await consumer.commit(owned)
        except (CommitFailedError, IllegalStateError, KafkaConnectionError) as error:
            # The group moved on (or the broker blinked): whoever owns these partitions next
            # replays from the last committed offsets and dedupes by event_id: nothing is lost.
            log.warning("offset commit for %s failed, will replay: %s", sorted(owned), error)
            return False
        return not lost

    async def _settle_some(self, fetched: _Fetched, start: int) -> int:
        """Apply or dead-letter records from ``start`` on; how many are settled (0: stop here)."""
        event = fetched.event(start)
        record = fetched.records[start]
        if isinstance(event, ContractError):
            return int(await self._dead_letter(record, f"unparseable: {event}"))
        if self._batches is None:
            return int(await self._process_alone(event, record))
        return await self._process_batch(self._batches, fetched, start)

    async def _process_batch(self, handler: BatchHandler, fetched: _Fetched, start: int) -> int:
        attempt = 0
        while not self._stop.is_set():
            progress = _Progress()
            try:
                await self._one_transaction(handler, fetched, start, progress)
            except asyncio.CancelledError:
                raise
            except Exception as error:
                attempt += 1
                if self._is_transient(error):
                    log.warning(
                        "transient failure applying %d events, retrying the batch",
                        progress.begun,
                        extra={"error": repr(error)},
                    )
                    await self._sleep(self._backoff(attempt))
                    continue
                # Something in the batch is wrong. Its events are re-applied one per transaction,
                # so the good ones commit and only the culprit is retried and dead-lettered.
                log.warning(
                    "a batch of %d events failed, applying them one by one: %r",
                    progress.begun,
                    error,
                    extra={"error": repr(error)},
                )
                return await self._process_one_by_one(fetched, start, max(progress.begun, 1))
            for topic, count in Counter(r.topic for r in fetched.records[start : start + progress.applied]).items():
                self._metrics.events_consumed.labels(self._service, topic, "processed").inc(count)
            return progress.applied
        return 0

    async def _one_transaction(self, handler: BatchHandler, fetched: _Fetched, start: int, progress: _Progress) -> None:
        """Apply records from ``start`` in one transaction until the size or time budget is spent
        or an unparseable record comes (it goes to the DLQ in a run of its own)."""
        began = time.monotonic()
        upcoming: list[AnyEvent] = []
        for index in range(start, min(start + self._transaction_records, len(fetched))):
            event = fetched.event(index)
            if isinstance(event, ContractError):
                break
            upcoming.append(event)
        async with handler.transaction(upcoming) as apply:
            for index, event in enumerate(upcoming, start):
                record = fetched.records[index]
                progress.begun += 1
                with _log_ids(event, record):
                    await apply(event, record)
                progress.applied += 1
                if self._stop.is_set() or time.monotonic() - began >= self._transaction_seconds:
                    break

    async def _process_one_by_one(self, fetched: _Fetched, start: int, count: int) -> int:
        for index in range(start, start + count):
            event = fetched.event(index)
            assert not isinstance(event, ContractError), "a batch transaction never begins an unparseable record"
            if not await self._process_alone(event, fetched.records[index]):
                return index - start
        return count

    async def _process_alone(self, event: AnyEvent, record: ConsumerRecord[bytes, bytes]) -> bool:
        """Apply one event in its own transaction; False means stop here and retry it later."""
        attempt = 0
        while not self._stop.is_set():
            try:
                with _log_ids(event, record):
                    await self._handler(event, record)
            except asyncio.CancelledError:
                raise
            except Exception as error:
                attempt += 1
                if self._is_transient(error):
                    with _log_ids(event, record):
                        log.warning("transient failure on %s, retrying", event.event_id, extra={"error": repr(error)})
                    await self._sleep(self._backoff(attempt))
                    continue
                if attempt >= self._max_attempts:
                    with _log_ids(event, record):
                        log.exception("giving up on %s after %d attempts", event.event_id, attempt)
                    return await self._dead_letter(record, f"handler failed {attempt} times: {error!r}")
                await self._sleep(self._backoff(attempt))
                continue
            self._metrics.events_consumed.labels(self._service, record.topic, "processed").inc()
            return True
        return False

    async def _dead_letter(self, record: ConsumerRecord[bytes, bytes], error: str) -> bool:
        message = dead_letter(record, error, self._service, self.group_id)
        attempt = 0
        while not self._stop.is_set():
            try:
                await self._producer.publish(message)
            except BrokerUnavailable:
                attempt += 1
                await self._sleep(self._backoff(attempt))
                continue
            log.error("sent %s[%d]@%d to the DLQ: %s", record.topic, record.partition, record.offset, error)
            self._metrics.dlq_messages.labels(self._service, record.topic).inc()
            self._metrics.events_consumed.labels(self._service, record.topic, "dead_lettered").inc()
            return True
        return False

    def _backoff(self, attempt: int) -> float:
        base: float = min(self._backoff_cap, 0.2 * 2 ** min(attempt, 10))
        return base * (0.5 + random.random() / 2)

    async def _sleep(self, seconds: float) -> None:
        try:
            await asyncio.wait_for(self._stop.wait(), seconds)
        except TimeoutError:
            pass
