"""What every Huitou HTTP process has: health, readiness, metrics, internal auth, error bodies,
and a uvicorn entry point."""

from __future__ import annotations

import asyncio
import gc
import hmac
import logging
import socket
import time
from collections.abc import Awaitable, Callable
from typing import Any

import uvicorn
from fastapi import FastAPI, Header, HTTPException, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from shared.kafka import BrokerUnavailable
from shared.observability import ServiceMetrics, configure_logging
from shared.settings import ServiceSettings

log = logging.getLogger("huitou.service")

ReadinessCheck = Callable[[], Awaitable[None]]
INTERNAL_TOKEN_HEADER = "X-Huitou-Internal-Token"


# PostgreSQL's deadlock and serialization failures: the server aborted one side of a conflict
# between transactions, and the same work retried succeeds.
_RETRYABLE_SQLSTATES = frozenset({"40P01", "40001"})


def _sqlstate(error: DBAPIError) -> str | None:
    original = error.orig
    for candidate in (original, getattr(original, "__cause__", None)):
        code = getattr(candidate, "sqlstate", None) or getattr(candidate, "pgcode", None)
        if isinstance(code, str):
            return code
    return None


def is_transient(error: BaseException) -> bool:
    """Failures that will pass by themselves: a database or broker that is down or locked, or a
    transaction the database aborted to break a deadlock."""
    if isinstance(error, DBAPIError) and (error.connection_invalidated or _sqlstate(error) in _RETRYABLE_SQLSTATES):
        return True
    return isinstance(
        error, OperationalError | InterfaceError | BrokerUnavailable | ConnectionError | OSError | TimeoutError
    )


class MetricsMiddleware:
    """Counts and times requests by route template (not raw path, to bound label cardinality)."""

    def __init__(self, app: ASGIApp, metrics: ServiceMetrics, service: str) -> None:
        self.app = app
        self.metrics = metrics
        self.service = service

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            route = scope.get("route")
            template = getattr(route, "path", "unmatched")
            method = scope.get("method", "GET")
            self.metrics.http_requests.labels(self.service, method, template, str(status)).inc()
            self.metrics.http_latency.labels(self.service, method, template).observe(time.perf_counter() - started)


async def _verdict(check: ReadinessCheck, timeout: float) -> str:
    try:
        await asyncio.wait_for(check(), timeout)
    except Exception as error:
        return f"failing: {error!r}"[:300]
    return "ok"


def install_common(
    app: FastAPI,
    *,
    service: str,
    metrics: ServiceMetrics,
    readiness: dict[str, ReadinessCheck],
    reported: dict[str, ReadinessCheck] | None = None,
) -> None:
    """/healthz, /readyz, /metrics and error bodies that tell the caller what to fix.

    ``readiness`` checks gate /readyz; ``reported`` ones are shown in its body under
    ``not_gating`` but do not take the pod out of its Service (ingest's broker: while it is down,
    intake must stay reachable to answer 503 with Retry-After, which clients retry).
    """
    app.add_middleware(MetricsMiddleware, metrics=metrics, service=service)
    shown = reported if reported is not None else {}

    @app.get("/healthz", include_in_schema=False)
    async def healthz() -> dict[str, str]:
        return {"status": "ok", "service": service}

    @app.get("/readyz", include_in_schema=False)
    async def readyz() -> Response:
        # Concurrently, each bounded: a hung dependency must not hold the answer past the probe's timeout.
        gating, extra = dict(readiness), dict(shown)
        verdicts = await asyncio.gather(*(_verdict(check, 3) for check in [*gating.values(), *extra.values()]))
        results = dict(zip([*gating, *extra], verdicts, strict=True))
        checks = {name: results[name] for name in gating}
        ready = all(v == "ok" for v in checks.values())
        body: dict[str, Any] = {"status": "ready" if ready else "not ready", "service": service, "checks": checks}
        if extra:
            body["not_gating"] = {name: results[name] for name in extra}
        return JSONResponse(body, status_code=200 if ready else 503)

    @app.get("/metrics", include_in_schema=False)
    async def prometheus() -> Response:
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    @app.exception_handler(DBAPIError)
    async def database_failed(request: Request, error: DBAPIError) -> JSONResponse:
        if not is_transient(error):
            raise error  # a bug, not the caller's doing nor the weather's: a 500, logged
        # Down, restarting, or a deadlock the server broke: the transaction was rolled back and
        # the same request succeeds later. Say so, rather than a 500 the caller cannot act on.
        log.warning("database unavailable for %s: %s", request.url.path, error.__class__.__name__)
        return JSONResponse(
            {"error": "the database is unavailable or busy; retry shortly", "retryable": True},
            status_code=503,
            headers={"Retry-After": "1"},
        )

    @app.exception_handler(RequestValidationError)
    async def invalid_request(_request: Request, error: RequestValidationError) -> JSONResponse:
        problems = []
        for item in error.errors():
            where = ".".join(str(p) for p in item.get("loc", ())) or "body"
            problems.append(f"{where}: {str(item.get('msg', 'invalid')).removeprefix('Value error, ')}")
        return JSONResponse({"error": "invalid request", "problems": problems}, status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_request: Request, error: StarletteHTTPException) -> JSONResponse:
        body: dict[str, Any] = error.detail if isinstance(error.detail, dict) else {"error": str(error.detail)}
        return JSONResponse(body, status_code=error.status_code, headers=getattr(error, "headers", None))


def internal_token_matches(settings: ServiceSettings, presented: str | None) -> bool:
    return presented is not None and hmac.compare_digest(presented, settings.internal_token)


def require_internal_token(request: Request, token: str | None = Header(None, alias=INTERNAL_TOKEN_HEADER)) -> None:
    """Dependency for internal routes: only callers holding the service token (the gateway)."""
    if not internal_token_matches(request.app.state.settings, token):
        raise HTTPException(401, {"error": f"internal API: send the service token in {INTERNAL_TOKEN_HEADER}"})


def settle_heap(settings: ServiceSettings) -> None:
    """Tune the cyclic garbage collector for a long-lived service process.

    Every event allocates thousands of objects (parsed events, rows, files); with Python's
    defaults the collector passes every 700 net allocations, and its older-generation passes walk
    the hundreds of thousands of objects that imports and start-up leave behind and that never
    die. Timed in-process, those passes cost scoring about a tenth of its CPU per event and
    outreach a sixth (docs/operations.md). Freezing what exists after start-up takes those objects
    out of every pass; a higher young threshold makes passes rare. Almost everything is freed by
    reference counting anyway: only cycles wait for a pass."""
    gc.collect()  # what start-up left as garbage is freed, not frozen
    if settings.gc_freeze:
        gc.freeze()
    _, middle, old = gc.get_threshold()
    gc.set_threshold(settings.gc_young_threshold, middle, old)


class _Server(uvicorn.Server):
    def __init__(self, config: uvicorn.Config, settings: ServiceSettings) -> None:
        super().__init__(config)
        self._settings = settings

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        # After the lifespan built the clients, ran migrations and imported what they needed.
        settle_heap(self._settings)


def serve(app: FastAPI, settings: ServiceSettings) -> None:
    """Run one service process (``python -m services.<name>``)."""
    configure_logging(settings.service_name, settings.log_level)
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_config=None,
        access_log=False,
        lifespan="on",
        timeout_graceful_shutdown=10,
    )
    _Server(config, settings).run()
