"""The batching publisher and the records it writes, against a stand-in for aiokafka's producer
that keeps every batch it is handed (the broker itself is exercised by the integration tests)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

import pytest
from aiokafka.partitioner import DefaultPartitioner
from aiokafka.producer.message_accumulator import BatchBuilder
from aiokafka.record.default_records import DefaultRecordBatch

from services.ingest.publisher import BatchPublisher, event_records
from shared.contracts import parse_intake
from shared.kafka import BrokerUnavailable
from shared.tracing import trace_id_from_headers

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
PARTITIONS = [0, 1, 2, 3, 4, 5]


def purchase(event_id: str, customer_id: str = "c-1", **extra: Any) -> Any:
    return parse_intake(
        {
            "event_id": event_id,
            "type": "purchase",
            "customer_id": customer_id,
            "occurred_at": "2026-11-20T10:00:00+08:00",
            "received_at": datetime(2026, 11, 20, 3, tzinfo=UTC),
            "payload": {"order_id": f"o-{event_id}", "amount": "9.90"},
            **extra,
        }
    )


class Recorder:
    """What BatchPublisher uses of AIOKafkaProducer; each batch is decoded as the broker would."""

    def __init__(self, *, batch_size: int = 1024 * 1024, fail: bool = False) -> None:
        self.batch_size = batch_size
        self.fail = fail
        self.sent: list[tuple[int, list[tuple[bytes, bytes, list[tuple[str, bytes]]]]]] = []

    async def partitions_for(self, topic: str) -> set[int]:
        return set(PARTITIONS)

    def create_batch(self) -> BatchBuilder:
        return BatchBuilder(magic=2, batch_size=self.batch_size, compression_type=0, is_transactional=False)

    async def send_batch(self, builder: BatchBuilder, topic: str, *, partition: int) -> asyncio.Future[None]:
        builder.close()
        records = DefaultRecordBatch(bytes(builder._build()))  # the bytes that would go on the wire
        self.sent.append((partition, [(r.key, r.value, list(r.headers)) for r in records]))
        acked: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if self.fail:
            acked.set_exception(OSError("connection reset"))
        else:
            acked.set_result(None)
        return acked


class Producer:
    def __init__(self, client: Recorder) -> None:
        self.client = client


def test_records_are_keyed_by_customer_with_the_wire_form_and_a_traceparent() -> None:
    events = [purchase("e-1", "c-7", trace_id=TRACE), purchase("e-2", "c-8", trace_id=TRACE)]
    (first, second) = event_records(events)
    assert first[0] == "c-7" and first[1] == events[0].model_dump_json().encode()
    assert trace_id_from_headers(first[2]) == TRACE
    assert first[2] is second[2]  # one request, one hop: one span, one header list


def test_no_header_for_an_event_without_a_w3c_trace() -> None:
    (untraced, hand_written) = event_records([purchase("e-1"), purchase("e-2", trace_id="order-42")])
    assert untraced[2] == [] and hand_written[2] == []


async def test_requests_share_batches_per_partition_in_order_with_their_headers() -> None:
    client = Recorder()
    publisher = BatchPublisher(Producer(client), timeout_seconds=5)  # type: ignore[arg-type]
    header = [("traceparent", f"00-{TRACE}-00f067aa0ba902b7-01".encode())]
    requests = [
        [(f"c-{n % 7}", f"r{r}-{n}".encode(), header) for n in range(30)]  # 7 customers over 6 partitions
        for r in range(3)
    ]
    await asyncio.gather(*(publisher.publish("huitou.events", records) for records in requests))

    partitioner = DefaultPartitioner()
    by_partition: dict[int, list[bytes]] = {}
    for partition, records in client.sent:
        for key, value, headers in records:
            assert partitioner(key, PARTITIONS, PARTITIONS) == partition
            assert headers == header
            by_partition.setdefault(partition, []).append(value)
    assert len(client.sent) == len(by_partition)  # concurrent requests coalesced: one batch per partition
    sent_order = [value for values in by_partition.values() for value in values]
    assert sorted(sent_order) == sorted(value for records in requests for _, value, _ in records)
    for values in by_partition.values():  # per-partition order is arrival order
        expected = [v for records in requests for _, v, _ in records if v in set(values)]
        assert values == expected


async def test_a_full_batch_is_sent_and_another_started() -> None:
    client = Recorder(batch_size=2048)
    publisher = BatchPublisher(Producer(client), timeout_seconds=5)  # type: ignore[arg-type]
    await publisher.publish("huitou.events", [("c-1", b"x" * 400, []) for _ in range(20)])
    assert len(client.sent) > 1 and sum(len(records) for _, records in client.sent) == 20


async def test_a_failed_batch_fails_its_requests_as_broker_unavailable() -> None:
    publisher = BatchPublisher(Producer(Recorder(fail=True)), timeout_seconds=5)  # type: ignore[arg-type]
    with pytest.raises(BrokerUnavailable):
        await publisher.publish("huitou.events", [("c-1", b"x", [])])
