"""The long-lived clients a service process owns, built in its lifespan and closed on shutdown."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fastapi import Request
from sqlalchemy import Table
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from shared.db import create_engine, migrate, ping, session_factory
from shared.kafka import ConsumerLoop, EventProducer, Handler
from shared.ledger import OutboxRelay, prune_processed_forever
from shared.observability import ServiceMetrics
from shared.service import ReadinessCheck, is_transient
from shared.settings import ServiceSettings

log = logging.getLogger("huitou.runtime")


@dataclass
class Runtime:
    settings: ServiceSettings
    engine: AsyncEngine
    sessions: async_sessionmaker[AsyncSession]
    metrics: ServiceMetrics
    producer: EventProducer | None = None
    producer_started: asyncio.Task[Any] | None = None  # ends once the producer reached the broker
    stop: asyncio.Event = field(default_factory=asyncio.Event)
    tasks: list[asyncio.Task[Any]] = field(default_factory=list)
    on_close: list[Callable[[], None]] = field(default_factory=list)

    def spawn(self, coro: Coroutine[Any, Any, Any], name: str) -> asyncio.Task[Any]:
        task = asyncio.create_task(coro, name=name)
        task.add_done_callback(_report_crash)
        self.tasks.append(task)
        return task

    async def close(self) -> None:
        self.stop.set()
        for stop in self.on_close:
            stop()
        if self.tasks:
            _, pending = await asyncio.wait(self.tasks, timeout=10)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
        if self.producer is not None:
            await self.producer.stop()
        await self.engine.dispose()

    def readiness(self) -> dict[str, ReadinessCheck]:
        checks: dict[str, ReadinessCheck] = {"database": lambda: ping(self.engine)}
        if self.producer is not None:
            checks["broker"] = self.producer.check
        return checks


def _report_crash(task: asyncio.Task[Any]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("background task %s crashed", task.get_name(), exc_info=task.exception())


async def open_runtime(
    settings: ServiceSettings, migrations: Path, metrics: ServiceMetrics, *, with_producer: bool = True
) -> Runtime:
    engine = create_engine(settings.effective_database_url, settings.effective_schema)
    if settings.auto_migrate:
        await migrate(engine, migrations, settings.effective_schema)
    runtime = Runtime(settings, engine, session_factory(engine), metrics)
    if with_producer:
        runtime.producer = EventProducer(
            settings.kafka_bootstrap_servers,
            request_timeout_ms=settings.kafka_request_timeout_ms,
            client_id=f"huitou-{settings.service_name}",
        )
        runtime.producer_started = runtime.spawn(runtime.producer.start_when_reachable(runtime.stop), "producer-start")
    return runtime


def start_pipeline(
    runtime: Runtime,
    *,
    outbox: Table,
    processed: Table,
    topics: Sequence[str],
    group_id: str,
    make_handler: Callable[[OutboxRelay], Handler],
) -> ConsumerLoop:
    """Consume ``topics`` into the service's handler, relay its outbox to Kafka, and keep its
    processed-events ledger bounded."""
    assert runtime.producer is not None, "a consuming service needs a producer for its outbox and DLQ"
    service = runtime.settings.service_name
    relay = OutboxRelay(runtime.sessions, outbox, runtime.producer, runtime.metrics, service)
    consumer = ConsumerLoop(
        topics=topics,
        group_id=group_id,
        bootstrap_servers=runtime.settings.kafka_bootstrap_servers,
        handler=make_handler(relay),
        producer=runtime.producer,
        metrics=runtime.metrics,
        service=service,
        is_transient=is_transient,
        transaction_records=runtime.settings.consumer_transaction_records,
        transaction_seconds=runtime.settings.consumer_transaction_seconds,
        session_timeout_ms=runtime.settings.kafka_session_timeout_ms,
        fetch_max_wait_ms=runtime.settings.kafka_fetch_max_wait_ms,
    )
    runtime.spawn(relay.run(), "outbox-relay")
    runtime.spawn(consumer.run(), "consumer")
    keep = runtime.settings.processed_event_retention
    runtime.spawn(prune_processed_forever(runtime.sessions, processed, keep, runtime.stop), "ledger-pruner")
    runtime.on_close.extend([relay.stop, consumer.stop])
    return consumer


def get_runtime(request: Request) -> Runtime:
    runtime: Runtime = request.app.state.runtime
    return runtime
