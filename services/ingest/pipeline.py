"""The one publish path every interface shares: validate → dedupe → publish (acks=all) → remember.

An interface (native, Segment, CloudEvents) only turns its request into candidates and the
outcome into its own response; what "accepted" means is decided here, once.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy.exc import SQLAlchemyError

from services.ingest.intake import Candidate, Rejection, validate
from services.ingest.metrics import IntakeMetrics
from services.ingest.publisher import BatchPublisher, event_records
from services.ingest.repository import DedupeWindow
from shared.contracts import IntakeEvent
from shared.kafka import BrokerUnavailable
from shared.topics import EVENTS

log = logging.getLogger("huitou.ingest")


@dataclass
class Outcome:
    """Per-item result of one request. ``accepted`` ids are in Kafka (acks=all)."""

    accepted: list[str] = field(default_factory=list)
    duplicates: list[str] = field(default_factory=list)
    rejected: list[Rejection] = field(default_factory=list)

    @property
    def nothing_valid(self) -> bool:
        return not self.accepted and not self.duplicates

    def rejected_json(self) -> list[dict[str, object]]:
        return [r.as_json() for r in self.rejected]


class IntakePipeline:
    def __init__(
        self, publisher: BatchPublisher, dedupe: DedupeWindow, metrics: IntakeMetrics, topic: str = EVENTS
    ) -> None:
        self._publisher = publisher
        self._dedupe = dedupe
        self._metrics = metrics
        self._topic = topic

    async def submit(
        self,
        candidates: Sequence[Candidate],
        rejected: Sequence[Rejection],
        *,
        source: str,
        received_at: datetime,
        interface: str,
        trace_id: str | None = None,
    ) -> Outcome:
        """Raises BrokerUnavailable when the broker did not acknowledge every fresh event: then
        nothing from the request is accepted and no id is remembered, so the retry is fresh.

        ``trace_id`` is the request's trace: events without a trace of their own join it."""
        verdicts = validate(candidates, source=source, received_at=received_at, trace_id=trace_id)
        outcome = Outcome(rejected=sorted([*rejected, *verdicts.rejected], key=lambda r: r.index))
        fresh, outcome.duplicates = await self._split_duplicates(verdicts.valid)
        try:
            await self._publish(fresh)
        except BrokerUnavailable:
            self._metrics.refused.labels(interface, "broker_unavailable").inc()
            raise
        self._dedupe.remember([event.event_id for event in fresh])  # written behind, seen at once
        outcome.accepted = [event.event_id for event in fresh]
        self._count(interface, outcome)
        return outcome

    async def _split_duplicates(self, events: list[IntakeEvent]) -> tuple[list[IntakeEvent], list[str]]:
        if not events:
            return [], []
        try:
            seen = await self._dedupe.seen([e.event_id for e in events])
        except (SQLAlchemyError, OSError) as error:
            # Intake stays available without its dedupe store: a re-published event is skipped
            # by every consumer (they dedupe by event_id), a refused one is lost business.
            log.warning("dedupe window unavailable, publishing without it: %r", error)
            seen = set()
        fresh: list[IntakeEvent] = []
        duplicates: list[str] = []
        for event in events:
            if event.event_id in seen:
                duplicates.append(event.event_id)
            else:
                seen.add(event.event_id)  # the same id twice in one request is published once
                fresh.append(event)
        return fresh, duplicates

    async def _publish(self, events: list[IntakeEvent]) -> None:
        if not events:
            return
        await self._publisher.publish(self._topic, event_records(events))
        self._metrics.shared.events_published.labels("ingest", self._topic).inc(len(events))

    def _count(self, interface: str, outcome: Outcome) -> None:
        counter = self._metrics.events
        if outcome.accepted:
            counter.labels(interface, "accepted").inc(len(outcome.accepted))
        if outcome.duplicates:
            counter.labels(interface, "duplicate").inc(len(outcome.duplicates))
            self._metrics.shared.duplicates_skipped.labels("ingest").inc(len(outcome.duplicates))
        if outcome.rejected:
            counter.labels(interface, "rejected").inc(len(outcome.rejected))
