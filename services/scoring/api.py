"""Scoring's process: the internal customer-file API and, in its lifespan, the event consumer,
the outbox relay and the maintenance task (refits, re-scoring, the lapse sweep)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from fastapi import FastAPI
from fastapi_offline import FastAPIOffline

from services.scoring.clock import Clock
from services.scoring.deps import ScoringContext
from services.scoring.engine import ModelStore
from services.scoring.maintenance import Maintenance
from services.scoring.operations import Operations
from services.scoring.order_cache import OrderCache
from services.scoring.routes import customers, edits, models, reports
from services.scoring.settings import ScoringSettings
from services.scoring.tables import outbox, processed_events
from services.scoring.worker import ScoringHandler
from shared.kafka import Handler
from shared.ledger import OutboxRelay
from shared.observability import ServiceMetrics
from shared.runtime import open_runtime, start_pipeline
from shared.service import install_common
from shared.topics import EVENTS, TOUCHES

MIGRATIONS = Path(__file__).parent / "migrations"


def create_app(settings: ScoringSettings | None = None) -> FastAPI:
    settings = settings or ScoringSettings()
    metrics = ServiceMetrics()
    readiness: dict[str, Any] = {}

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        runtime = await open_runtime(settings, MIGRATIONS, metrics)
        clock = Clock(settings.clock)
        model_store = ModelStore(runtime.sessions)
        relays: list[OutboxRelay] = []
        # One for the process: the consumer fills it, an erasure through the API empties an entry.
        order_cache = OrderCache(settings.order_cache_lines)

        def make_handler(relay: OutboxRelay) -> Handler:
            relays.append(relay)
            return ScoringHandler(
                runtime.sessions,
                relay,
                metrics,
                settings=settings,
                models=model_store,
                clock=clock,
                order_cache=order_cache,
            )

        consumer = start_pipeline(
            runtime,
            outbox=outbox,
            processed=processed_events,
            topics=[EVENTS, TOUCHES],  # intake to fold; touch outcomes for the care kept in the file
            group_id=settings.consumer_group,
            make_handler=make_handler,
        )
        relay = relays[0]
        maintenance = Maintenance(
            runtime.sessions, relay, model_store, settings, clock, backlog=lambda: consumer.backlog
        )
        runtime.spawn(maintenance.run(runtime.stop), "scoring-maintenance")
        app.state.runtime = runtime
        app.state.scoring = ScoringContext(
            settings=settings,
            sessions=runtime.sessions,
            models=model_store,
            clock=clock,
            maintenance=maintenance,
            operations=Operations(
                runtime.sessions, settings.rules(), model_store, clock, relay, maintenance, order_cache
            ),
        )
        readiness.update(runtime.readiness(), consumer=consumer.check)
        try:
            yield
        finally:
            await runtime.close()

    app = FastAPIOffline(title="Huitou scoring (internal)", version="1", lifespan=lifespan)
    app.state.settings = settings
    install_common(app, service="scoring", metrics=metrics, readiness=readiness)
    for router in (customers.router, edits.router, reports.router, models.router):
        app.include_router(router)
    return app
