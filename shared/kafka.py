"""Kafka plumbing on aiokafka: a producer that only reports success on acks=all, a consumer loop
that commits offsets only after the handler's database transaction, and the DLQ hand-off.

The dev broker (Tansu) has no idempotent producer, and neither does an effectively-once design
need one: producers may duplicate on retry, every consumer dedupes by ``event_id``.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import random
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

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
TransientCheck = Callable[[BaseException], bool]


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


class ConsumerLoop:
    """Consume, hand each event to ``handler`` (which commits its own DB transaction), then
    commit offsets. Unparseable messages and messages that keep failing go to the DLQ;
    transient failures (database or broker down) pause the partition's progress and retry."""

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
        max_batch: int = 500,
        backoff_cap_seconds: float = 15.0,
    ) -> None:
        self.topics = list(topics)
        self.group_id = group_id
        self._bootstrap = bootstrap_servers
        self._handler = handler
        self._producer = producer
        self._metrics = metrics
        self._service = service
        self._is_transient = is_transient
        self._max_attempts = max_attempts
        self._max_batch = max_batch
        self._backoff_cap = backoff_cap_seconds
        self._stop = asyncio.Event()
        self.consumer: AIOKafkaConsumer | None = None
        self.assigned = asyncio.Event()

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
                for tp, records in batches.items():
                    await self._process_partition_batch(consumer, tp, records)
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
                session_timeout_ms=10_000,
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
        """Export lag per assigned partition (what KEDA scales on, and what an operator watches)."""
        for tp in consumer.assignment():
            highwater = consumer.highwater(tp)
            if highwater is None:
                continue
            try:
                position = await asyncio.wait_for(consumer.position(tp), 0.5)
            except (KafkaError, IllegalStateError, TimeoutError):
                continue  # revoked in a rebalance since assignment() was read
            lag = max(highwater - position, 0)
            self._metrics.consumer_lag.labels(self._service, tp.topic, str(tp.partition)).set(lag)

    async def _process_partition_batch(
        self, consumer: AIOKafkaConsumer, tp: TopicPartition, records: list[ConsumerRecord[bytes, bytes]]
    ) -> None:
        done = None
        for record in records:
            if self._stop.is_set():
                break
            if not await self._process(record):
                break
            done = record.offset
        if done is None:
            return
        try:
            await consumer.commit({tp: done + 1})
        except (CommitFailedError, IllegalStateError, KafkaConnectionError) as error:
            # The partition moved to another member (or the broker blinked). Its new owner
            # replays from the last committed offset and dedupes by event_id: nothing is lost.
            log.warning("offset commit for %s failed, will replay: %s", tp, error)
        if done < records[-1].offset:
            # Stopped part-way (shutdown or a transient failure): rewind so the rest is re-read.
            consumer.seek(tp, done + 1)

    async def _process(self, record: ConsumerRecord[bytes, bytes]) -> bool:
        """Handle one record; False means stop here and retry it later."""
        try:
            event = parse_event(record.value or b"")
        except ContractError as error:
            return await self._dead_letter(record, f"unparseable: {error}")
        attempt = 0
        while not self._stop.is_set():
            try:
                await self._handler(event, record)
            except asyncio.CancelledError:
                raise
            except Exception as error:
                attempt += 1
                if self._is_transient(error):
                    log.warning(
                        "transient failure on %s, retrying",
                        event.event_id,
                        extra={"event_id": event.event_id, "customer_id": event.customer_id, "error": repr(error)},
                    )
                    await self._sleep(self._backoff(attempt))
                    continue
                if attempt >= self._max_attempts:
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
