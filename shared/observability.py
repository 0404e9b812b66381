"""Prometheus metrics and JSON logs, the same shape in every service."""

from __future__ import annotations

import gc
import json
import logging
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    GCCollector,
    Histogram,
    PlatformCollector,
    ProcessCollector,
)
from prometheus_client.core import CounterMetricFamily
from prometheus_client.registry import Collector

from shared.tracing import log_context

_STANDARD = set(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {"message", "asctime", "color_message"}


_gc_pause_seconds = [0.0, 0.0, 0.0]
"""Seconds this process spent in garbage-collector passes, by generation (``gc.callbacks``)."""
_gc_pass_started = [0.0]


def _time_gc_pass(phase: str, info: dict[str, int]) -> None:
    if phase == "start":
        _gc_pass_started[0] = time.perf_counter()
    else:
        _gc_pause_seconds[info["generation"]] += time.perf_counter() - _gc_pass_started[0]


class _GcPauses(Collector):
    """The time spent in garbage-collector passes, so the cost of collection (see
    ``shared.service.settle_heap``) is a number on /metrics rather than a guess."""

    def collect(self) -> Iterator[CounterMetricFamily]:
        family = CounterMetricFamily(
            "huitou_gc_pause_seconds", "time spent in garbage-collector passes", labels=["generation"]
        )
        for generation, seconds in enumerate(_gc_pause_seconds):
            family.add_metric([str(generation)], seconds)
        yield family


class ServiceMetrics:
    """One registry per app, so several services can live in one test process."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        # The client's standard process_* (CPU, memory, open files) and python_gc_* series, as the
        # default registry would have them: what a capacity question starts from.
        ProcessCollector(registry=self.registry)
        GCCollector(registry=self.registry)
        PlatformCollector(registry=self.registry)
        self.heap_blocks = Gauge(
            "huitou_python_allocated_blocks",
            "memory blocks Python's allocator holds (sys.getallocatedblocks): RSS growing while this "
            "stays flat is native memory (SQLite's page cache, the allocator's arenas), not Python objects",
            registry=self.registry,
        )
        self.heap_blocks.set_function(sys.getallocatedblocks)
        if _time_gc_pass not in gc.callbacks:  # once per process, however many registries read it
            gc.callbacks.append(_time_gc_pass)
        self.registry.register(_GcPauses())
        self.http_requests = Counter(
            "huitou_http_requests_total",
            "HTTP requests served",
            ["service", "method", "route", "status"],
            registry=self.registry,
        )
        self.http_latency = Histogram(
            "huitou_http_request_duration_seconds",
            "HTTP request latency",
            ["service", "method", "route"],
            registry=self.registry,
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
        )
        self.events_consumed = Counter(
            "huitou_events_consumed_total",
            "Kafka messages consumed, by outcome",
            ["service", "topic", "outcome"],
            registry=self.registry,
        )
        self.events_published = Counter(
            "huitou_events_published_total",
            "Messages acknowledged by the broker",
            ["service", "topic"],
            registry=self.registry,
        )
        self.dlq_messages = Counter(
            "huitou_dlq_messages_total",
            "Messages handed to huitou.dlq",
            ["service", "topic"],
            registry=self.registry,
        )
        self.outbox_backlog = Gauge(
            "huitou_outbox_backlog",
            "Outbox rows not yet relayed to Kafka",
            ["service"],
            registry=self.registry,
        )
        self.consumer_lag = Gauge(
            "huitou_consumer_lag",
            "Messages on a partition not yet consumed by this member (high-water mark − position)",
            ["service", "topic", "partition"],
            registry=self.registry,
        )
        self.duplicates_skipped = Counter(
            "huitou_duplicate_events_total",
            "Events skipped because their event_id was seen",
            ["service"],
            registry=self.registry,
        )


class JsonFormatter(logging.Formatter):
    def __init__(self, service: str) -> None:
        super().__init__()
        self._service = service

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "service": self._service,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        entry.update(log_context())  # the event, customer and trace being handled, if any
        entry.update({k: v for k, v in record.__dict__.items() if k not in _STANDARD})
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str, ensure_ascii=False)


def configure_logging(service: str, level: str = "INFO") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter(service))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for noisy in ("aiokafka", "kafka"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
