"""`huitou dlq list` and `huitou dlq replay` against a real broker, run as an operator runs them
(a subprocess): a consumer dead-letters an event its handler cannot apply, the fix ships, the
replay hands the event back exactly once, and filters, dry runs and an unreachable broker behave."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import pytest
from aiokafka import ConsumerRecord

from shared.contracts import AnyEvent, InteractionEvent, InteractionPayload, to_wire
from shared.dlq import REPLAYED_FROM
from shared.kafka import ConsumerLoop, EventProducer, Outgoing, dead_letter
from shared.observability import ServiceMetrics
from shared.service import is_transient
from shared.topics import CUSTOMERS, DLQ, EVENTS
from shared.tracing import kafka_headers, new_trace_id, trace_id_from_headers
from tests.support import ROOT, Broker, eventually, free_port, read_topic

pytestmark = pytest.mark.broker


@dataclass
class CliResult:
    code: int
    out: str
    err: str

    def rows(self) -> list[str]:
        """The table rows of `dlq list` (its first line is the header)."""
        return self.out.splitlines()[1:]


async def huitou(*args: str, bootstrap: str) -> CliResult:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "shared.cli",
        *args,
        cwd=ROOT,
        env={**os.environ, "HUITOU_KAFKA_BOOTSTRAP_SERVERS": bootstrap},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), 120)
    assert process.returncode is not None
    return CliResult(process.returncode, out.decode(), err.decode())


@dataclass
class Handler:
    """A consumer handler with a bug for some events (a non-transient error), until it is fixed."""

    broken: set[str] = field(default_factory=set)
    applied: list[str] = field(default_factory=list)

    async def __call__(self, event: AnyEvent, record: ConsumerRecord[bytes, bytes]) -> None:
        if event.event_id in self.broken:
            raise ValueError(f"cannot fold {event.event_id}")
        self.applied.append(event.event_id)


def interaction(event_id: str, customer_id: str = "c-1", trace_id: str | None = None) -> InteractionEvent:
    return InteractionEvent(
        event_id=event_id,
        customer_id=customer_id,
        occurred_at=datetime(2026, 11, 20, 8, 0, tzinfo=UTC),
        trace_id=trace_id,
        payload=InteractionPayload(kind="page_view"),
    )


async def publish(broker: Broker, *messages: Outgoing) -> None:
    producer = EventProducer(broker.bootstrap)
    await producer.start()
    try:
        await producer.publish_many(messages)
    finally:
        await producer.stop()


async def test_a_dead_letter_is_replayed_once_after_the_fix(broker: Broker) -> None:
    trace_id = new_trace_id()
    handler = Handler(broken={"e-bad"})
    await publish(
        broker,
        Outgoing(EVENTS, "c-1", to_wire(interaction("e-1"))),
        Outgoing(EVENTS, "c-1", to_wire(interaction("e-bad", trace_id=trace_id)), kafka_headers(trace_id)),
        Outgoing(EVENTS, "c-1", to_wire(interaction("e-3"))),
    )
    producer = EventProducer(broker.bootstrap)
    await producer.start()

    def loop() -> ConsumerLoop:
        return ConsumerLoop(
            topics=[EVENTS],
            group_id="huitou-scoring",
            bootstrap_servers=broker.bootstrap,
            handler=handler,
            producer=producer,
            metrics=ServiceMetrics(),
            service="scoring",
            is_transient=is_transient,
            max_attempts=2,
        )

    loops = [loop()]
    running = asyncio.create_task(loops[0].run())
    try:
        await eventually(lambda: _true(handler.applied == ["e-1", "e-3"]), timeout=45, what="the good events")
        dead = await read_topic(broker.bootstrap, DLQ, expect_at_least=1)
        loops[0].stop()
        await asyncio.wait_for(running, 15)
        assert len(dead) == 1

        listed = await huitou("dlq", "list", bootstrap=broker.bootstrap)
        assert listed.code == 0, listed.err
        [row] = listed.rows()
        assert row.split()[:2] == [f"{DLQ}/0/0", "pending"]
        assert "scoring" in row and f"{EVENTS}[" in row and "ValueError" in row
        detail = json.loads((await huitou("dlq", "list", "--json", bootstrap=broker.bootstrap)).out)
        assert detail["state"] == "pending" and detail["key"] == "c-1" and detail["service"] == "scoring"
        assert json.loads(detail["value"])["event_id"] == "e-bad"
        assert detail["error"].startswith("handler failed 2 times: ValueError")

        handler.broken.clear()  # the fix ships
        loops.append(loop())
        running = asyncio.create_task(loops[1].run())
        replayed = await huitou("dlq", "replay", bootstrap=broker.bootstrap)
        assert replayed.code == 0, replayed.err
        assert f"replayed {DLQ}/0/0 → {EVENTS}" in replayed.out
        await eventually(lambda: _true("e-bad" in handler.applied), timeout=45, what="the replayed event applied")

        again = await huitou("dlq", "replay", bootstrap=broker.bootstrap)
        assert again.code == 0, again.err
        assert again.out == "" and "replayed 0;" in again.err and "1 replayed before" in again.err
        await asyncio.sleep(1)  # time for a wrongly resent copy to arrive
        assert handler.applied == ["e-1", "e-3", "e-bad"]
    finally:
        for consumer_loop in loops:
            consumer_loop.stop()
        await asyncio.wait_for(running, 15)
        await producer.stop()

    records = await read_topic(broker.bootstrap, EVENTS, expect_at_least=4)
    assert len(records) == 4  # the three originals and one replay, not two
    [copy] = [r for r in records if any(name == REPLAYED_FROM for name, _ in r.headers)]
    assert copy.key == b"c-1" and json.loads(copy.value)["event_id"] == "e-bad"
    assert dict(copy.headers)[REPLAYED_FROM] == f"{DLQ}/0/0".encode()
    assert trace_id_from_headers(copy.headers) == trace_id  # the original headers ride along
    pending = await huitou("dlq", "list", "--pending", bootstrap=broker.bootstrap)
    assert pending.code == 0 and pending.rows() == []


async def _true(value: bool) -> bool:
    return value


def letter(topic: str, event: AnyEvent | bytes, service: str, failed_at: str, *, offset: int = 7) -> Outgoing:
    """A DLQ message as the consumer loop writes it, with a chosen failure time."""
    value = event if isinstance(event, bytes) else to_wire(event)
    key = "c-bin" if isinstance(event, bytes) else event.customer_id
    record: ConsumerRecord[bytes, bytes] = ConsumerRecord(
        topic=topic,
        partition=2,
        offset=offset,
        timestamp=0,
        timestamp_type=0,
        key=key.encode(),
        value=value,
        checksum=None,
        serialized_key_size=len(key),
        serialized_value_size=len(value),
        headers=[],
    )
    message = dead_letter(record, "handler failed 5 times: ValueError()", service, f"huitou-{service}")
    body: dict[str, Any] = json.loads(message.value)
    body["failed_at"] = failed_at
    return Outgoing(message.topic, message.key, json.dumps(body).encode(), message.headers)


def event_ids(records: list[Any]) -> list[str]:
    return [json.loads(r.value)["event_id"] for r in records]


async def test_filters_dry_run_and_progress_per_origin(broker: Broker) -> None:
    not_utf8 = b"\xff\xfe not an event"
    await publish(
        broker,
        letter(EVENTS, interaction("a1"), "scoring", "2025-01-01T10:00:00+00:00"),  # dlq offset 0
        letter(CUSTOMERS, interaction("b1"), "outreach", "2025-01-01T10:05:00+00:00"),  # 1
        letter(EVENTS, interaction("a2"), "scoring", "2025-01-01T10:10:00+00:00"),  # 2
        letter(EVENTS, interaction("a3"), "scoring", "2025-01-01T12:00:00+00:00"),  # 3
        letter(EVENTS, not_utf8, "outreach", "2025-01-01T10:20:00+00:00"),  # 4
    )
    bootstrap = broker.bootstrap

    dry = await huitou("dlq", "replay", "--service", "scoring", "--dry-run", bootstrap=bootstrap)
    assert dry.code == 0, dry.err
    assert [line.split()[2] for line in dry.out.splitlines()] == [f"{DLQ}/0/0", f"{DLQ}/0/2", f"{DLQ}/0/3"]
    assert "would replay 3;" in dry.err
    assert await read_topic(bootstrap, EVENTS) == []  # a dry run publishes nothing…
    listed = await huitou("dlq", "list", "--pending", bootstrap=bootstrap)
    assert len(listed.rows()) == 5  # …and commits nothing

    window = await huitou("dlq", "list", "--service", "scoring", "--until", "2025-01-01T11:00Z", bootstrap=bootstrap)
    assert [row.split()[0] for row in window.rows()] == [f"{DLQ}/0/0", f"{DLQ}/0/2"]

    morning = await huitou("dlq", "replay", "--service", "scoring", "--until", "2025-01-01T11:00Z", bootstrap=bootstrap)
    assert morning.code == 0, morning.err
    assert "replayed 2;" in morning.err and "1 held" in morning.err
    assert event_ids(await read_topic(bootstrap, EVENTS, expect_at_least=2)) == ["a1", "a2"]

    rest = await huitou("dlq", "replay", "--service", "scoring", bootstrap=bootstrap)
    assert "replayed 1;" in rest.err and "2 replayed before" in rest.err
    assert event_ids(await read_topic(bootstrap, EVENTS, expect_at_least=3)) == ["a1", "a2", "a3"]

    # --since passes outreach's older customers dead letter over for good, without publishing it.
    passed = await huitou("dlq", "replay", "--topic", CUSTOMERS, "--since", "2025-01-01T10:06:00", bootstrap=bootstrap)
    assert passed.code == 0, passed.err
    assert passed.out.splitlines() == [f"passed over {DLQ}/0/1 → {CUSTOMERS} key=c-1 (outreach)"]
    assert await read_topic(bootstrap, CUSTOMERS) == []

    # The rest: only the not-UTF-8 dead letter is still pending; its bytes go back unchanged.
    last = await huitou("dlq", "replay", bootstrap=bootstrap)
    assert "replayed 1;" in last.err and "4 replayed before" in last.err
    records = await read_topic(bootstrap, EVENTS, expect_at_least=4)
    assert [r.value for r in records if r.key == b"c-bin"] == [not_utf8]

    states = [row.split()[:2] for row in (await huitou("dlq", "list", bootstrap=bootstrap)).rows()]
    assert states == [[f"{DLQ}/0/{n}", "handled"] for n in range(5)]


async def test_an_unreachable_broker_is_a_clear_failure() -> None:
    nowhere = f"127.0.0.1:{free_port()}"
    for command in (("dlq", "list"), ("dlq", "replay"), ("dlq", "replay", "--dry-run")):
        result = await huitou(*command, "--request-timeout-ms", "2000", bootstrap=nowhere)
        assert result.code == 3, (command, result)
        assert f"error: cannot reach the broker at {nowhere}" in result.err
        assert "Traceback" not in result.err


async def test_a_malformed_time_is_refused_before_touching_the_broker() -> None:
    result = await huitou("dlq", "replay", "--since", "last tuesday", bootstrap=f"127.0.0.1:{free_port()}")
    assert result.code == 2
    assert "--since 'last tuesday' is not an ISO 8601 date or time" in result.err
