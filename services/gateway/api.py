"""Gateway's process: the versioned operator API composed from the other services, and the console."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, RedirectResponse
from fastapi.staticfiles import StaticFiles
from fastapi_offline import FastAPIOffline
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from services.gateway.api_keys import BOOTSTRAP_NAME, KeyManagementError, register_key
from services.gateway.auth import Role
from services.gateway.context import Gateway
from services.gateway.downstream import Downstream, DownstreamFailure, ServiceRefused, call_counter
from services.gateway.ratelimit import RateLimiter
from services.gateway.route_table import ROUTES
from services.gateway.routers import audit, keys, privacy, reports, session
from services.gateway.routing import build_routers
from services.gateway.settings import GatewaySettings
from shared.keys import new_key
from shared.observability import ServiceMetrics
from shared.runtime import open_runtime
from shared.service import install_common

MIGRATIONS = Path(__file__).parent / "migrations"
CONSOLE = Path(__file__).parent / "console"
log = logging.getLogger("huitou.gateway")

DESCRIPTION = """The one front door for operators. Every route needs an API key
(`Authorization: Bearer <key>` or `X-API-Key`) with a role: **viewer** reads, **operator** also
changes customer files, touches, care plans and templates, **admin** also manages keys, sources,
models and privacy requests. Every write is recorded in the audit log. Errors are
`{"error": "...", "problems": [...]}`; 502/504 mean the service owning the resource is down or slow."""

CONSOLE_HEADERS = [
    (
        b"content-security-policy",
        b"default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; connect-src 'self'; "
        b"frame-ancestors 'none'; base-uri 'none'; form-action 'self'",
    ),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"cache-control", b"no-cache"),
]


class ConsoleHeaders:
    """A strict Content-Security-Policy on the console: it loads nothing but its own files."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not str(scope.get("path", "")).startswith("/console"):
            await self.app(scope, receive, send)
            return

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), *CONSOLE_HEADERS]
            await send(message)

        await self.app(scope, receive, with_headers)


def create_app(
    settings: GatewaySettings | None = None, *, transport: httpx.AsyncBaseTransport | None = None
) -> FastAPI:
    """The gateway app. ``transport`` replaces the network for calls to the other services
    (tests mount the real services' apps in-process with it)."""
    settings = settings or GatewaySettings()
    metrics = ServiceMetrics()
    calls = call_counter(metrics.registry)
    readiness: dict[str, Any] = {}

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        runtime = await open_runtime(settings, MIGRATIONS, metrics, with_producer=False)
        key = settings.admin_key
        if key is None and settings.env == "dev":
            key = new_key("hk")
            log.warning("no admin key configured; generated one: %s", key)
        if key is not None:
            await register_key(runtime.sessions, BOOTSTRAP_NAME, key, Role.ADMIN)
        timeout = settings.downstream_timeout_seconds
        client = httpx.AsyncClient(
            timeout=httpx.Timeout(timeout),
            limits=httpx.Limits(max_connections=100, max_keepalive_connections=20),
            transport=transport,
        )
        downstream = Downstream(
            client,
            {"scoring": settings.scoring_url, "outreach": settings.outreach_url, "ingest": settings.ingest_url},
            settings.internal_token,
            settings.downstream_retries,
            timeout=timeout,
            slow_timeout=settings.slow_downstream_timeout_seconds,
            calls=calls,
        )
        app.state.gateway = Gateway(settings, runtime.sessions, downstream)
        app.state.runtime = runtime
        readiness.update(runtime.readiness())
        try:
            yield
        finally:
            await client.aclose()
            await runtime.close()

    app = FastAPIOffline(title="Huitou gateway", version="1", description=DESCRIPTION, lifespan=lifespan)
    app.state.settings = settings
    app.state.rate_limiter = RateLimiter(settings.rate_limit_per_second, settings.rate_limit_burst)
    app.state.public_rate_limiter = RateLimiter(settings.public_rate_limit_per_second, settings.public_rate_limit_burst)
    install_common(app, service="gateway", metrics=metrics, readiness=readiness)
    _install_error_bodies(app)
    for router in (session.router, privacy.router, *build_routers(ROUTES), reports.router, keys.router, audit.router):
        app.include_router(router)
    if settings.console_enabled:
        _mount_console(app)
    return app


def _install_error_bodies(app: FastAPI) -> None:
    @app.exception_handler(DownstreamFailure)
    async def downstream_failed(_request: Request, failure: DownstreamFailure) -> JSONResponse:
        return JSONResponse({"error": failure.message}, failure.status)

    @app.exception_handler(ServiceRefused)
    async def downstream_refused(_request: Request, refused: ServiceRefused) -> JSONResponse:
        return JSONResponse(refused.body, refused.status)

    @app.exception_handler(KeyManagementError)
    async def key_refused(_request: Request, error: KeyManagementError) -> JSONResponse:
        return JSONResponse({"error": str(error)}, error.status)


def _mount_console(app: FastAPI) -> None:
    app.add_middleware(ConsoleHeaders)
    app.mount("/console", StaticFiles(directory=CONSOLE, html=True), name="console")

    @app.get("/", include_in_schema=False)
    async def home() -> RedirectResponse:
        return RedirectResponse("/console/")
