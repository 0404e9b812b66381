"""Topic names and their default shapes for the embedded broker and for Strimzi."""

from dataclasses import dataclass

EVENTS = "huitou.events"
CUSTOMERS = "huitou.customers"
TOUCHES = "huitou.touches"
DLQ = "huitou.dlq"


@dataclass(frozen=True)
class TopicSpec:
    name: str
    partitions: int
    why: str


# Partitions are the unit of consumer parallelism. Six lets scoring and outreach run up to six
# replicas each while staying cheap on a single dev broker; the DLQ is low-volume.
TOPICS: tuple[TopicSpec, ...] = (
    TopicSpec(EVENTS, 6, "intake, keyed by customer_id"),
    TopicSpec(CUSTOMERS, 6, "customer file changes, keyed by customer_id"),
    TopicSpec(TOUCHES, 3, "touch lifecycle, keyed by customer_id"),
    TopicSpec(DLQ, 1, "messages that could not be processed, with the error"),
)
