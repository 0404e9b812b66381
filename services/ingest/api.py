"""Ingest's process: the intake interfaces (native, Segment, CloudEvents) and the internal
sources API. A 2xx from any intake route means the broker acknowledged the events (acks=all)."""

from __future__ import annotations

import asyncio
import gc
import logging
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from pathlib import Path

import uvicorn
from fastapi import FastAPI, Request
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse
from fastapi_offline import FastAPIOffline

from services.ingest import routes_cloudevents, routes_native, routes_segment, routes_sources
from services.ingest.budget import InFlightBudget, OverBudget
from services.ingest.metrics import IntakeMetrics
from services.ingest.pipeline import IntakePipeline
from services.ingest.publisher import BatchPublisher
from services.ingest.repository import DedupeWindow, SourceStore
from services.ingest.schemas import install_openapi
from services.ingest.settings import IngestSettings
from shared.db import create_engine, migrate
from shared.kafka import BrokerUnavailable
from shared.keys import new_key
from shared.observability import ServiceMetrics, configure_logging
from shared.runtime import Runtime, open_runtime
from shared.service import ReadinessCheck, install_common

MIGRATIONS = Path(__file__).parent / "migrations"
log = logging.getLogger("huitou.ingest")


def _interface(request: Request) -> str:
    path = request.url.path
    if path.startswith("/v1/events"):
        return "native"
    if path.startswith("/v1/cloudevents"):
        return "cloudevents"
    return "segment"


def install_refusals(app: FastAPI, settings: IngestSettings, metrics: IntakeMetrics) -> None:
    """Whole-request refusals: the caller's retry after Retry-After is the right response to both."""

    @app.exception_handler(BrokerUnavailable)
    async def broker_unavailable(request: Request, error: BrokerUnavailable) -> JSONResponse:
        log.warning("intake refused, broker unavailable: %s", error)
        message = "the event store is unavailable; nothing from this request was accepted, retry later"
        return JSONResponse(
            {"error": message, "code": "unavailable", "message": message},
            503,
            headers={"Retry-After": str(settings.retry_after_seconds)},
        )

    @app.exception_handler(OverBudget)
    async def over_budget(request: Request, error: OverBudget) -> JSONResponse:
        metrics.refused.labels(_interface(request), "busy").inc()
        seconds = str(settings.busy_retry_after_seconds)
        message = f"ingest is at its in-flight limit; nothing from this request was accepted, retry in {seconds} s"
        return JSONResponse(
            {"error": message, "code": "rate_limited", "message": message},
            429,
            # X-RateLimit-Reset is what analytics.js reads on a 429.
            headers={"Retry-After": seconds, "X-RateLimit-Reset": seconds},
        )


async def _await_producer(runtime: Runtime, seconds: float) -> None:
    """Give the broker a moment at start-up: /readyz does not wait for it, so without this a
    normal boot would answer its first requests 503. A broker still down after ``seconds`` is
    an outage like any other: ingest serves, and intake answers 503 until it is back."""
    if runtime.producer_started is not None:
        await asyncio.wait([runtime.producer_started], timeout=seconds)
    if runtime.producer is None or not runtime.producer.ready:
        log.warning("broker not reachable at start-up; intake answers 503 until it is")


async def _prune_periodically(dedupe: DedupeWindow, settings: IngestSettings, stop: asyncio.Event) -> None:
    while not stop.is_set():
        with suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), settings.dedupe_prune_interval.total_seconds())
        if stop.is_set():
            return
        try:
            forgotten = await dedupe.prune()
            log.info("dedupe window: forgot %d expired event ids", forgotten)
        except Exception:
            log.exception("dedupe prune failed; will try again")


def create_app(settings: IngestSettings | None = None) -> FastAPI:
    settings = settings or IngestSettings()
    metrics = ServiceMetrics()
    budget = InFlightBudget(settings.max_in_flight_events, settings.max_in_flight_bytes)
    intake_metrics = IntakeMetrics(metrics, budget)
    # Ready when what ingest needs to answer correctly works: its database (write keys, the dedupe
    # window). The broker is shown but does not gate: during an outage intake answers 503.
    readiness: dict[str, ReadinessCheck] = {}
    reported: dict[str, ReadinessCheck] = {}

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        runtime = await open_runtime(settings, MIGRATIONS, metrics)
        sources = SourceStore(runtime.sessions, settings.auth_cache_seconds)
        dedupe = DedupeWindow(runtime.sessions, settings.dedupe_window)
        key = settings.write_key
        if key is None and settings.env == "dev":
            key = new_key("wk")
            log.warning("no write key configured; generated one for source %r: %s", settings.write_key_source, key)
        if key is not None:
            await sources.register(settings.write_key_source, key)
        await dedupe.prune()
        runtime.spawn(_prune_periodically(dedupe, settings, runtime.stop), "dedupe-prune")
        runtime.spawn(dedupe.run_writer(runtime.stop), "dedupe-writer")
        checks = runtime.readiness()
        reported["broker"] = checks.pop("broker")
        readiness.update(checks)
        app.state.runtime = runtime
        app.state.sources = sources
        assert runtime.producer is not None
        publisher = BatchPublisher(
            runtime.producer,
            timeout_seconds=settings.kafka_request_timeout_ms / 1000 + 1,
            linger_seconds=settings.publish_linger_ms / 1000,
        )
        app.state.pipeline = IntakePipeline(publisher, dedupe, intake_metrics)
        await _await_producer(runtime, settings.kafka_request_timeout_ms / 1000)
        try:
            yield
        finally:
            await runtime.close()

    app = FastAPIOffline(
        title="Huitou ingest",
        version="1",
        lifespan=lifespan,
        description="Event intake: native JSON, Segment's Tracking API and CloudEvents. "
        "A 2xx means the events are stored in Kafka (acks=all).",
    )
    app.state.settings = settings
    app.state.budget = budget
    install_common(app, service="ingest", metrics=metrics, readiness=readiness, reported=reported)
    install_refusals(app, settings, intake_metrics)
    # Browsers (analytics.js) post cross-origin; write keys are public there by Segment's design.
    app.add_middleware(
        CORSMiddleware,
        allow_origins=settings.cors_allow_origins,
        allow_methods=["POST", "OPTIONS"],
        allow_headers=["Authorization", "Content-Type", "Content-Encoding"],
    )
    for module in (routes_native, routes_segment, routes_cloudevents, routes_sources):
        app.include_router(module.router)
    install_openapi(app)
    return app


def tune_gc(settings: IngestSettings) -> None:
    """For a serving process (not for tests): intake allocates many short-lived objects per event,
    while the app's own object graph (routes, schemas, validators) never dies. Freezing that graph
    keeps full collections from walking it, and a larger young generation collects less often —
    together a quarter less CPU per event in bench/bench_ingest.py."""
    gc.collect()
    gc.freeze()
    _, middle, old = gc.get_threshold()
    gc.set_threshold(settings.gc_young_threshold, middle, old)


def worker_app() -> FastAPI:
    """uvicorn's app factory in each worker process (``serve_workers``)."""
    settings = IngestSettings()
    configure_logging(settings.service_name, settings.log_level)
    app = create_app(settings)
    tune_gc(settings)
    return app


def serve_workers(settings: IngestSettings) -> None:
    """Several ingest processes on one port, like replicas behind a Service.

    What must happen once happens here, before the workers start: the migrations, and in dev
    the generated write key (each worker would otherwise register a different one).
    """
    configure_logging(settings.service_name, settings.log_level)
    if settings.auto_migrate:

        async def apply() -> None:
            engine = create_engine(settings.effective_database_url, settings.effective_schema)
            try:
                await migrate(engine, MIGRATIONS, settings.effective_schema)
            finally:
                await engine.dispose()

        asyncio.run(apply())
    os.environ["HUITOU_INGEST_AUTO_MIGRATE"] = "false"
    if settings.write_key is None and settings.env == "dev":
        os.environ["HUITOU_INGEST_WRITE_KEY"] = key = new_key("wk")
        log.warning("no write key configured; generated one for source %r: %s", settings.write_key_source, key)
    uvicorn.run(
        "services.ingest.api:worker_app",
        factory=True,
        host=settings.host,
        port=settings.port,
        workers=settings.workers,
        log_config=None,
        access_log=False,
        timeout_graceful_shutdown=10,
    )
