"""Poison messages in every topic: they go to huitou.dlq with the error, the partition keeps
moving (a good message behind them on the same partition is applied), and the DLQ can be
replayed with ``huitou dlq replay``.

Into every partition of huitou.events, huitou.customers and huitou.touches go three poison
messages — bytes that are not UTF-8, text that is not JSON, and JSON that breaks the contract —
and then one good message.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import httpx
import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.structs import ConsumerRecord

from shared.contracts import (
    CustomerCause,
    CustomerSnapshot,
    CustomerUpdatedEvent,
    CustomerUpdatedPayload,
    PurchaseEvent,
    PurchasePayload,
    to_wire,
)
from shared.kafka import dead_letter, ensure_topics
from shared.topics import CUSTOMERS, DLQ, EVENTS, TOPICS, TOUCHES
from tests.faults.channels import FlakySmtp
from tests.faults.conftest import record_figures
from tests.faults.stack import INTERNAL, ROOT, FaultStack
from tests.support import Broker, eventually, free_port, read_topic

pytestmark = [pytest.mark.faults, pytest.mark.broker]
PARTITIONS = {t.name: t.partitions for t in TOPICS}
CONSUMERS = {EVENTS: {"huitou-scoring", "huitou-outreach"}, CUSTOMERS: {"huitou-outreach"}, TOUCHES: {"huitou-scoring"}}
NOW = datetime.now(UTC).replace(microsecond=0)


def poison(topic: str, partition: int) -> list[bytes]:
    wrong = {"event_id": f"bad-{topic}-{partition}", "type": "purchase", "customer_id": f"p{partition}",
             "occurred_at": NOW.isoformat(), "payload": {"order_id": "x", "amount": "a lot"}}  # fmt: skip
    return [b"\xff\xfe\x00 not utf-8 \x81", b"{this is not json", json.dumps(wrong).encode()]


def good_purchase(partition: int) -> PurchaseEvent:
    return PurchaseEvent(
        event_id=f"good-purchase-{partition}",
        customer_id=f"poison-buyer-{partition}",
        occurred_at=NOW - timedelta(hours=1),
        payload=PurchasePayload(order_id=f"good-{partition}", amount=Decimal("12.30")),
    )


def good_update(partition: int) -> CustomerUpdatedEvent:
    cause = CustomerCause(event_id=f"cause-{partition}", type="identify", occurred_at=NOW - timedelta(hours=1))
    return CustomerUpdatedEvent(
        event_id=f"good-update-{partition}",
        customer_id=f"poison-file-{partition}",
        occurred_at=NOW - timedelta(hours=1),
        payload=CustomerUpdatedPayload(version=1, cause=cause, snapshot=CustomerSnapshot(first_name="P")),
    )


@dataclass
class Poisoned:
    broker: Broker
    stack: FaultStack
    sent: dict[tuple[str, int], list[int]]  # (topic, partition) → offsets of the poison
    letters: list[dict[str, Any]]
    seconds: float


async def produce(bootstrap: str) -> dict[tuple[str, int], list[int]]:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", enable_idempotence=False)
    await producer.start()
    sent: dict[tuple[str, int], list[int]] = {}
    try:
        for topic in (EVENTS, CUSTOMERS, TOUCHES):
            for partition in range(PARTITIONS[topic]):
                for value in poison(topic, partition):
                    meta = await producer.send_and_wait(topic, value, key=b"poison", partition=partition)
                    sent.setdefault((topic, partition), []).append(meta.offset)
                good = {EVENTS: good_purchase, CUSTOMERS: good_update}.get(topic)
                if good is not None:
                    event = good(partition)
                    await producer.send_and_wait(
                        topic, to_wire(event), key=event.customer_id.encode(), partition=partition
                    )
    finally:
        await producer.stop()
    return sent


async def applied(stack: FaultStack) -> bool:
    async with httpx.AsyncClient(headers=INTERNAL, timeout=10) as client:
        for partition in range(PARTITIONS[EVENTS]):
            r = await client.get(f"{stack.url('scoring')}/internal/v1/customers/poison-buyer-{partition}")
            if r.status_code != 200 or r.json()["purchases"]["order_count"] != 1:
                return False
        for partition in range(PARTITIONS[CUSTOMERS]):
            r = await client.get(f"{stack.url('outreach')}/internal/v1/customers/poison-file-{partition}/export")
            if r.status_code != 200 or r.json()["snapshot"] is None:
                return False
    return True


@pytest.fixture(scope="module")
def poisoned(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Poisoned]:
    root = tmp_path_factory.mktemp("poison")
    broker = Broker(free_port(), root / "broker.log")
    smtp = FlakySmtp().start()
    broker.start()
    stack = FaultStack(root / "var", broker.bootstrap, smtp.port, names=("scoring", "outreach"))
    started = time.monotonic()
    try:
        asyncio.run(ensure_topics(broker.bootstrap))
        asyncio.run(stack.start())
        sent = asyncio.run(produce(broker.bootstrap))
        asyncio.run(eventually(lambda: applied(stack), timeout=120, what="the good messages behind the poison"))
        expected = sum(len(v) * len(CONSUMERS[t]) for (t, _), v in sent.items() if t != TOUCHES)

        async def dead_letters() -> list[dict[str, Any]]:
            records = await read_topic(broker.bootstrap, DLQ, expect_at_least=expected)
            return [json.loads(r.value) for r in records]

        letters = asyncio.run(dead_letters())
        yield Poisoned(broker, stack, sent, letters, time.monotonic() - started)
    finally:
        stack.stop()
        broker.stop()
        smtp.stop()


def letters_of(poisoned: Poisoned, topic: str) -> Counter[tuple[str, int, int]]:
    return Counter((d["group_id"], d["partition"], d["offset"]) for d in poisoned.letters if d["topic"] == topic)


@pytest.mark.parametrize("topic", [EVENTS, CUSTOMERS])
def test_poison_goes_to_the_dlq_with_its_error_and_the_partition_moves_on(poisoned: Poisoned, topic: str) -> None:
    want = Counter(
        (group, partition, offset)
        for (t, partition), offsets in poisoned.sent.items() if t == topic
        for offset in offsets
        for group in CONSUMERS[topic]
    )  # fmt: skip
    got = letters_of(poisoned, topic)
    assert got == want, f"missing {want - got}, unexpected {got - want}"
    for letter in (d for d in poisoned.letters if d["topic"] == topic):
        assert letter["error"].startswith("unparseable"), letter
        assert ("value" in letter) != ("value_base64" in letter)
    binary = [d for d in poisoned.letters if d["topic"] == topic and "value_base64" in d]
    assert len(binary) == PARTITIONS[topic] * len(CONSUMERS[topic])
    record_figures(
        f"poison {topic}",
        {"poison": sum(len(v) for (t, _), v in poisoned.sent.items() if t == topic), "dead_letters": sum(got.values()),
         "good_messages_applied": PARTITIONS[topic], "seconds": round(poisoned.seconds)},
    )  # fmt: skip


async def test_poison_on_the_touches_topic_reaches_the_dlq(poisoned: Poisoned) -> None:
    async def dead_lettered() -> bool:
        records = await read_topic(poisoned.broker.bootstrap, DLQ)
        return any(json.loads(r.value)["topic"] == TOUCHES for r in records)

    await eventually(dead_lettered, timeout=10, what="a dead letter from huitou.touches")


def dlq_cli(bootstrap: str, *argv: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "HUITOU_KAFKA_BOOTSTRAP_SERVERS": bootstrap}
    return subprocess.run(
        [sys.executable, "-m", "shared.cli", "dlq", *argv],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


async def test_the_dlq_can_be_replayed_once_the_cause_is_fixed(poisoned: Poisoned) -> None:
    """A purchase scoring had given up on (its dead letter, as the consumer loop writes it) is
    applied once replayed; the replayed poison is dead-lettered again; a second replay of the
    same period replays nothing."""
    bootstrap = poisoned.broker.bootstrap
    event = good_purchase(99).model_copy(update={"event_id": "replayed-purchase", "customer_id": "replayed-buyer"})
    value = to_wire(event)
    original = ConsumerRecord(EVENTS, 2, 4242, 0, 0, b"replayed-buyer", value, None, 14, len(value), [])
    letter = dead_letter(original, "handler failed 5 times: RuntimeError('fixed since')", "scoring", "huitou-scoring")
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", enable_idempotence=False)
    await producer.start()
    try:
        await producer.send_and_wait(DLQ, letter.value, key=b"replayed-buyer", headers=list(letter.headers))
    finally:
        await producer.stop()
    before = len(await read_topic(bootstrap, DLQ))
    cutoff = datetime.now(UTC) + timedelta(seconds=1)
    await asyncio.sleep(1.5)

    first = await asyncio.to_thread(dlq_cli, bootstrap, "replay", "--service", "scoring", "--topic", EVENTS)
    assert first.returncode == 0, first.stdout + first.stderr
    replayed = [line for line in first.stdout.splitlines() if line.startswith("replayed ")]
    text_poison = 2 * PARTITIONS[EVENTS]  # per partition: the non-JSON and the contract-breaking message
    assert len(replayed) in (text_poison + 1, text_poison + 1 + PARTITIONS[EVENTS]), first.stdout

    async def file_applied() -> bool:
        async with httpx.AsyncClient(headers=INTERNAL, timeout=10) as client:
            r = await client.get(f"{poisoned.stack.url('scoring')}/internal/v1/customers/replayed-buyer")
        return r.status_code == 200 and r.json()["purchases"]["order_count"] == 1

    await eventually(file_applied, timeout=60, what="the replayed purchase in the customer file")
    # Each replayed poison message is dead-lettered again, by both consumer groups.
    again = 2 * (len(replayed) - 1)
    records = await read_topic(bootstrap, DLQ, expect_at_least=before + again, timeout=60)
    assert len(records) == before + again

    second = await asyncio.to_thread(
        dlq_cli, bootstrap, "replay", "--service", "scoring", "--topic", EVENTS, "--until", cutoff.isoformat()
    )
    assert second.returncode == 0, second.stdout + second.stderr
    assert not [line for line in second.stdout.splitlines() if line.startswith("replayed ")], second.stdout
    await asyncio.sleep(2)
    assert await file_applied(), "the replayed purchase was counted twice"
    record_figures("dlq replay", {"replayed": len(replayed), "dead_lettered_again": again, "second_replay": 0})
