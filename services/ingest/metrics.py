"""Ingest's own Prometheus series, registered on the service's registry next to the shared ones."""

from __future__ import annotations

from prometheus_client import Counter, Gauge

from services.ingest.budget import InFlightBudget
from shared.observability import ServiceMetrics


class IntakeMetrics:
    def __init__(self, metrics: ServiceMetrics, budget: InFlightBudget) -> None:
        registry = metrics.registry
        self.shared = metrics
        self.events = Counter(
            "huitou_ingest_events_total",
            "Events by interface and outcome (accepted, duplicate, rejected)",
            ["interface", "outcome"],
            registry=registry,
        )
        self.refused = Counter(
            "huitou_ingest_requests_refused_total",
            "Whole requests refused before acceptance, by reason (busy, broker_unavailable)",
            ["interface", "reason"],
            registry=registry,
        )
        in_flight = Gauge(
            "huitou_ingest_in_flight", "Events and bytes received but not yet acknowledged", ["unit"], registry=registry
        )
        in_flight.labels("events").set_function(lambda: budget.events)
        in_flight.labels("bytes").set_function(lambda: budget.bytes)
