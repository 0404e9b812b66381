"""The consumer loop's lag gauge follows the assignment: a partition lost in a rebalance stops
being reported by this member (its new owner reports it), so a sum over replicas stays true."""

from __future__ import annotations

from aiokafka import TopicPartition

from shared.kafka import ConsumerLoop, EventProducer
from shared.observability import ServiceMetrics


class Assigned:
    """Just what ``_record_lag`` asks of an aiokafka consumer."""

    def __init__(self, highwater: dict[TopicPartition, int], positions: dict[TopicPartition, int]) -> None:
        self._highwater = highwater
        self._positions = positions

    def assignment(self) -> set[TopicPartition]:
        return set(self._highwater)

    def highwater(self, tp: TopicPartition) -> int:
        return self._highwater[tp]

    async def position(self, tp: TopicPartition) -> int:
        return self._positions[tp]


def lag_series(metrics: ServiceMetrics) -> dict[str, float]:
    return {s.labels["partition"]: s.value for m in metrics.consumer_lag.collect() for s in m.samples}


async def test_lag_of_a_partition_lost_in_a_rebalance_is_no_longer_reported() -> None:
    metrics = ServiceMetrics()
    loop = ConsumerLoop(
        topics=["huitou.events"],
        group_id="g",
        bootstrap_servers="127.0.0.1:1",
        handler=lambda event, record: None,  # type: ignore[arg-type,return-value]
        producer=EventProducer("127.0.0.1:1"),
        metrics=metrics,
        service="scoring",
        is_transient=lambda error: False,
    )
    p0, p1, p2 = (TopicPartition("huitou.events", n) for n in range(3))
    await loop._record_lag(Assigned({p0: 10, p1: 7, p2: 4}, {p0: 3, p1: 7, p2: 0}))  # type: ignore[arg-type]
    assert lag_series(metrics) == {"0": 7.0, "1": 0.0, "2": 4.0}
    assert loop.backlog == 11  # what scoring's maintenance reads to let a refit wait out a backfill

    await loop._record_lag(Assigned({p1: 9}, {p1: 8}))  # type: ignore[arg-type]  # p0 and p2 moved away
    assert lag_series(metrics) == {"1": 1.0}
    assert loop.backlog == 1  # partitions that moved away no longer count

    await loop._record_lag(Assigned({p1: 9, p2: 6}, {p1: 9, p2: 6}))  # type: ignore[arg-type]  # p2 came back
    assert lag_series(metrics) == {"1": 0.0, "2": 0.0}
