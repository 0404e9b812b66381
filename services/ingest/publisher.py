"""Publishing intake to Kafka in coalesced per-partition batches, still answering per request.

aiokafka's per-message ``send`` costs more CPU than everything else ingest does for an event. So
requests that arrive within one ``linger`` are gathered, their records grouped by partition
(murmur2 of the key, exactly as ``send`` would choose), and each group goes out as one batch
(``send_batch``, acks=all). A caller returns only when every batch holding one of its records
was acknowledged, and raises ``BrokerUnavailable`` otherwise — the contract of
``EventProducer.publish_many``. Per-partition order is kept: batches enter the producer's
accumulator in arrival order, and the producer sends one batch per partition at a time.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError
from aiokafka.partitioner import DefaultPartitioner
from aiokafka.producer.message_accumulator import BatchBuilder
from aiokafka.structs import RecordMetadata

from shared.contracts import IntakeEvent, to_wire
from shared.kafka import BrokerUnavailable, EventProducer
from shared.tracing import kafka_headers

log = logging.getLogger("huitou.ingest")
Headers = list[tuple[str, bytes]]  # a list: aiokafka's C batch builder accepts no other sequence
Record = tuple[str, bytes, Headers]  # (key, value, headers)


def event_records(events: Iterable[IntakeEvent]) -> list[Record]:
    """Each event as a record: keyed by customer id (one customer's events share a partition, so
    their order holds), its wire form, and a ``traceparent`` header carrying its trace id.

    Events that share a trace (those of one request) share one header: publishing them is one
    hop, so one span of ingest's — and one header instead of a fresh span id per record.
    """
    headers_by_trace: dict[str | None, Headers] = {}
    records: list[Record] = []
    for event in events:
        trace_id = event.trace_id
        headers = headers_by_trace.get(trace_id)
        if headers is None:
            headers = headers_by_trace[trace_id] = list(kafka_headers(trace_id))
        records.append((event.customer_id, to_wire(event), headers))
    return records


@dataclass
class _Request:
    topic: str
    records: Sequence[Record]
    done: asyncio.Future[None]
    waiting: int = 0


@dataclass
class _Batch:
    owners: set[int] = field(default_factory=set)  # positions of the requests with records in it


class BatchPublisher:
    def __init__(self, producer: EventProducer, *, timeout_seconds: float, linger_seconds: float = 0.002) -> None:
        self._producer = producer
        self._timeout = timeout_seconds
        self._linger = linger_seconds
        self._pending: list[_Request] = []
        self._flusher: asyncio.Task[None] | None = None
        self._partitioner = DefaultPartitioner()
        # (topic, partition count) → key → partition: customers recur, murmur2 in Python does not pay
        self._partition_cache: dict[tuple[str, int], dict[str, int]] = {}

    async def publish(self, topic: str, records: Sequence[Record]) -> None:
        """Return once the broker acknowledged every record (acks=all); else BrokerUnavailable."""
        if not records:
            return
        if self._producer.client is None:
            raise BrokerUnavailable("producer not connected to the broker yet")
        request = _Request(topic, records, asyncio.get_running_loop().create_future())
        self._pending.append(request)
        if self._flusher is None:
            self._flusher = asyncio.create_task(self._flush(), name="ingest-batch-publisher")
        try:
            await asyncio.wait_for(asyncio.shield(request.done), self._timeout)
        except TimeoutError as error:
            raise BrokerUnavailable(f"broker did not acknowledge within {self._timeout:.1f} s") from error
        except (KafkaError, OSError) as error:
            raise BrokerUnavailable(f"broker did not acknowledge: {error!r}") from error

    async def _flush(self) -> None:
        try:
            while self._pending:
                await asyncio.sleep(self._linger)  # callers arriving meanwhile join this group
                group, self._pending = self._pending, []
                await self._dispatch(group)
        finally:
            self._flusher = None

    async def _dispatch(self, group: list[_Request]) -> None:
        client = self._producer.client
        try:
            if client is None:
                raise BrokerUnavailable("producer not connected to the broker yet")
            sent = await self._send(client, group)
        except Exception as error:
            for request in group:
                _fail(request, error)
            return
        for future, batch in sent:
            future.add_done_callback(lambda f, b=batch: self._acknowledged(f, b, group))  # type: ignore[misc]

    async def _send(
        self, client: AIOKafkaProducer, group: list[_Request]
    ) -> list[tuple[asyncio.Future[RecordMetadata], _Batch]]:
        # Per-record work is kept to dictionary lookups: this runs for every event ingest accepts.
        by_partition: dict[tuple[str, int], list[tuple[int, Record]]] = {}
        for position, request in enumerate(group):
            topic = request.topic
            partitions = sorted(await client.partitions_for(topic))
            known = self._known_partitions(topic, partitions)
            slots: dict[int, list[tuple[int, Record]]] = {}
            for record in request.records:
                key = record[0]
                partition = known.get(key)
                if partition is None:
                    partition = known[key] = self._partitioner(key.encode(), partitions, partitions)
                slot = slots.get(partition)
                if slot is None:
                    slot = slots[partition] = by_partition.setdefault((topic, partition), [])
                slot.append((position, record))
        sent: list[tuple[asyncio.Future[RecordMetadata], _Batch]] = []
        for (topic, partition), records in by_partition.items():
            builder, batch = client.create_batch(), _Batch()
            for position, (key, value, headers) in records:
                if builder.append(key=key.encode(), value=value, timestamp=None, headers=headers) is None:
                    # Full: send it and start another.
                    sent.append((await self._submit(client, builder, topic, partition, batch, group), batch))
                    builder, batch = client.create_batch(), _Batch()
                    builder.append(key=key.encode(), value=value, timestamp=None, headers=headers)
                batch.owners.add(position)
            sent.append((await self._submit(client, builder, topic, partition, batch, group), batch))
        return sent

    @staticmethod
    async def _submit(
        client: AIOKafkaProducer,
        builder: BatchBuilder,
        topic: str,
        partition: int,
        batch: _Batch,
        group: list[_Request],
    ) -> asyncio.Future[RecordMetadata]:
        for position in batch.owners:
            group[position].waiting += 1
        future: asyncio.Future[RecordMetadata] = await client.send_batch(builder, topic, partition=partition)
        return future

    def _known_partitions(self, topic: str, partitions: list[int]) -> dict[str, int]:
        known = self._partition_cache.get((topic, len(partitions)))
        if known is None or len(known) > 100_000:  # bounded: start afresh rather than grow forever
            known = self._partition_cache[(topic, len(partitions))] = {}
        return known

    @staticmethod
    def _acknowledged(future: asyncio.Future[RecordMetadata], batch: _Batch, group: list[_Request]) -> None:
        error = None if future.cancelled() else future.exception()
        for position in batch.owners:
            request = group[position]
            if future.cancelled() or error is not None:
                _fail(request, error or BrokerUnavailable("batch cancelled"))
                continue
            request.waiting -= 1
            if request.waiting == 0 and not request.done.done():
                request.done.set_result(None)


def _fail(request: _Request, error: BaseException) -> None:
    if not request.done.done():
        request.done.set_exception(error)
        request.done.exception()  # marks it retrieved: a caller that timed out already left
