"""Outreach's process: the internal API, the public unsubscribe route and, in its lifespan, the
consumer of huitou.customers and huitou.events, the dispatcher and the calendar planner."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
from fastapi import FastAPI
from fastapi_offline import FastAPIOffline

from services.outreach.calendar_planner import CalendarPlanner
from services.outreach.channels import ChannelAdapter, SmtpAdapter, SmtpConfig, WebhookAdapter
from services.outreach.dispatcher import Dispatcher, release_leases
from services.outreach.metrics import TouchCensus
from services.outreach.planning import PlanCatalog
from services.outreach.routes import customers, planner, plans, public, reports, tasks, templates, touches
from services.outreach.routes.deps import Outreach
from services.outreach.settings import OutreachSettings
from services.outreach.tables import outbox, processed_events
from services.outreach.worker import OutreachHandler
from shared.contracts import Channel
from shared.ledger import OutboxRelay
from shared.observability import ServiceMetrics
from shared.runtime import open_runtime, start_pipeline
from shared.service import install_common
from shared.topics import CUSTOMERS, EVENTS

MIGRATIONS = Path(__file__).parent / "migrations"


def build_adapters(settings: OutreachSettings, client: httpx.AsyncClient) -> dict[Channel, ChannelAdapter]:
    """Email always (SMTP); SMS, push and the generic webhook when their endpoint is configured."""
    adapters: dict[Channel, ChannelAdapter] = {
        Channel.EMAIL: SmtpAdapter(
            SmtpConfig(
                host=settings.smtp_host,
                port=settings.smtp_port,
                mail_from=settings.mail_from,
                message_id_domain=settings.message_id_domain,
                timeout=settings.smtp_timeout_seconds,
                starttls=settings.smtp_starttls,
                username=settings.smtp_username,
                password=settings.smtp_password,
            ),
            pool_size=settings.dispatch_concurrency,
        )
    }
    for channel, url in (
        (Channel.SMS, settings.sms_webhook_url),
        (Channel.PUSH, settings.push_webhook_url),
        (Channel.WEBHOOK, settings.webhook_url),
    ):
        if url:
            adapters[channel] = WebhookAdapter(url, settings.webhook_secret, client)
    return adapters


def create_app(settings: OutreachSettings | None = None) -> FastAPI:
    settings = settings or OutreachSettings()
    metrics = ServiceMetrics()
    readiness: dict[str, Any] = {}

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        runtime = await open_runtime(settings, MIGRATIONS, metrics)
        catalog = PlanCatalog(runtime.sessions, settings)
        await catalog.seed_defaults()
        client = httpx.AsyncClient(timeout=httpx.Timeout(settings.webhook_timeout_seconds))
        adapters = build_adapters(settings, client)
        relays: list[OutboxRelay] = []

        def make_handler(relay: OutboxRelay) -> OutreachHandler:
            relays.append(relay)
            return OutreachHandler(runtime.sessions, relay, metrics, settings=settings, catalog=catalog)

        consumer = start_pipeline(
            runtime,
            outbox=outbox,
            processed=processed_events,
            topics=[CUSTOMERS, EVENTS],
            group_id=settings.consumer_group,
            make_handler=make_handler,
        )
        dispatcher = Dispatcher(runtime.sessions, settings, catalog, adapters, relays[0], metrics)
        calendar = CalendarPlanner(runtime.sessions, settings, catalog, relays[0])
        dispatching = runtime.spawn(dispatcher.run(), "dispatcher") if settings.dispatch_enabled else None
        census = TouchCensus(metrics)
        runtime.spawn(calendar.run(), "calendar-planner")
        runtime.spawn(census.run(runtime.sessions, settings.census_interval_seconds), "touch-census")
        runtime.on_close.extend([dispatcher.stop, calendar.stop, census.stop])
        readiness.update(runtime.readiness(), consumer=consumer.check)
        app.state.runtime = runtime
        app.state.outreach = Outreach(settings, catalog, adapters, dispatcher, calendar)
        try:
            yield
        finally:
            dispatcher.stop()
            if dispatching is not None:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(asyncio.shield(dispatching), 10)
                with contextlib.suppress(Exception):
                    await release_leases(runtime.sessions, dispatcher.owner)
            await runtime.close()
            for adapter in adapters.values():
                with contextlib.suppress(Exception):
                    await adapter.close()
            await client.aclose()

    app = FastAPIOffline(
        title="Huitou outreach (internal)",
        version="1",
        lifespan=lifespan,
        description="Care plans, templates, touches, operator tasks, suppressions and reports for the gateway "
        "(send the service token in X-Huitou-Internal-Token); /public/v1/unsubscribe for customers.",
    )
    app.state.settings = settings
    install_common(app, service="outreach", metrics=metrics, readiness=readiness)
    for router in (
        touches.router,
        customers.router,
        plans.router,
        templates.router,
        tasks.router,
        reports.suppressions,
        reports.reports,
        planner.router,
        public.router,
    ):
        app.include_router(router)
    return app
