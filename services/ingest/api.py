"""Ingest's HTTP intake. 202 means: the broker acknowledged the event with acks=all."""

from __future__ import annotations

import base64
import binascii
import json
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Depends, FastAPI, HTTPException, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from sqlalchemy import delete, insert, select, update
from sqlalchemy.exc import IntegrityError

from services.ingest.intake import stamp_and_validate
from services.ingest.settings import IngestSettings
from services.ingest.tables import seen_events, sources
from shared.contracts import IntakeEvent, to_wire
from shared.kafka import BrokerUnavailable, Outgoing
from shared.keys import digest, new_key
from shared.observability import ServiceMetrics
from shared.runtime import Runtime, get_runtime, open_runtime
from shared.service import install_common
from shared.topics import EVENTS

MIGRATIONS = Path(__file__).parent / "migrations"
log = logging.getLogger("huitou.ingest")


class IntakeResult(BaseModel):
    """Per-item outcome of an intake call."""

    accepted: list[str]
    duplicates: list[str]
    rejected: list[dict[str, Any]]


RuntimeDep = Annotated[Runtime, Depends(get_runtime)]


def _presented_key(request: Request) -> str | None:
    """Segment-style HTTP Basic (write key as user name) or a Bearer token."""
    header = request.headers.get("authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() == "bearer" and value:
        return value.strip()
    if scheme.lower() == "basic" and value:
        try:
            user, _, _password = base64.b64decode(value.strip(), validate=True).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return None
        return user or None
    return None


async def source_for(request: Request, runtime: RuntimeDep) -> str:
    key = _presented_key(request)
    challenge = {"WWW-Authenticate": 'Basic realm="huitou-ingest"'}
    if key is None:
        raise HTTPException(
            401, {"error": "send your write key as the HTTP Basic user name (or as a Bearer token)"}, challenge
        )
    async with runtime.sessions() as session:
        row = (
            await session.execute(select(sources.c.name, sources.c.enabled).where(sources.c.key_hash == digest(key)))
        ).first()
    if row is None:
        raise HTTPException(401, {"error": "unknown write key"}, challenge)
    if not row.enabled:
        raise HTTPException(403, {"error": f"source {row.name!r} is disabled; ask an operator to enable it"})
    return str(row.name)


SourceDep = Annotated[str, Depends(source_for)]


async def read_json_body(request: Request, limit: int) -> Any:
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type != "application/json" and not content_type.endswith("+json"):
        raise HTTPException(415, {"error": f"send Content-Type: application/json (got {content_type or 'none'!r})"})
    body = bytearray()
    async for chunk in request.stream():
        body.extend(chunk)
        if len(body) > limit:
            raise HTTPException(413, {"error": f"request body over {limit} bytes; split it into smaller batches"})
    try:
        return json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise HTTPException(400, {"error": f"body is not valid JSON: {error}"}) from None


router = APIRouter(tags=["intake"])


@router.post(
    "/v1/events",
    status_code=202,
    response_model=IntakeResult,
    responses={
        401: {"description": "missing or unknown write key"},
        413: {"description": "body too large"},
        415: {"description": "not JSON"},
        422: {"description": "no valid event in the request"},
        503: {"description": "broker unavailable; retry after Retry-After seconds"},
    },
    summary="Post one event or a list of events in Huitou's native envelope",
)
async def post_events(request: Request, runtime: RuntimeDep, source: SourceDep) -> JSONResponse:
    settings: IngestSettings = request.app.state.settings
    data = await read_json_body(request, settings.max_request_bytes)
    items = data if isinstance(data, list) else [data]
    if not items:
        raise HTTPException(400, {"error": "the list of events is empty"})
    sizes = [len(json.dumps(item, separators=(",", ":")).encode()) for item in items]
    verdicts = stamp_and_validate(
        items, source=source, received_at=datetime.now(UTC), max_event_bytes=settings.max_event_bytes, sizes=sizes
    )
    rejected = [r.as_json() for r in verdicts.rejected]
    if not verdicts.valid:
        return JSONResponse({"error": "no valid event", "accepted": [], "duplicates": [], "rejected": rejected}, 422)
    fresh, duplicates = await _split_duplicates(runtime, verdicts.valid)
    try:
        await _publish(runtime, fresh)
    except BrokerUnavailable as error:
        log.warning("intake refused, broker unavailable: %s", error)
        return JSONResponse(
            {"error": "the event store is unavailable; nothing from this request was accepted, retry later"},
            503,
            headers={"Retry-After": str(settings.retry_after_seconds)},
        )
    await _remember(runtime, fresh)
    result = IntakeResult(accepted=[e.event_id for e in fresh], duplicates=duplicates, rejected=rejected)
    return JSONResponse(result.model_dump(), 202)


async def _split_duplicates(runtime: Runtime, events: list[IntakeEvent]) -> tuple[list[IntakeEvent], list[str]]:
    ids = [e.event_id for e in events]
    async with runtime.sessions() as session:
        seen = set((await session.scalars(select(seen_events.c.event_id).where(seen_events.c.event_id.in_(ids)))).all())
    fresh: list[IntakeEvent] = []
    duplicates: list[str] = []
    for event in events:
        if event.event_id in seen:
            duplicates.append(event.event_id)
        else:
            seen.add(event.event_id)
            fresh.append(event)
    return fresh, duplicates


async def _publish(runtime: Runtime, events: list[IntakeEvent]) -> None:
    if not events:
        return
    assert runtime.producer is not None
    await runtime.producer.publish_many([Outgoing(EVENTS, e.customer_id, to_wire(e)) for e in events])
    for _ in events:
        runtime.metrics.events_published.labels("ingest", EVENTS).inc()


async def _remember(runtime: Runtime, events: list[IntakeEvent]) -> None:
    """Record accepted ids for dedupe. Best effort: the events are already safely in Kafka, and
    every consumer dedupes by event_id too, so a failure here costs at most a re-publish."""
    if not events:
        return
    now = datetime.now(UTC)
    try:
        async with runtime.sessions() as session, session.begin():
            await session.execute(insert(seen_events), [{"event_id": e.event_id, "accepted_at": now} for e in events])
    except IntegrityError:
        # A concurrent request accepted one of these ids first; record the rest one by one.
        for event in events:
            try:
                async with runtime.sessions() as session, session.begin():
                    await session.execute(insert(seen_events).values(event_id=event.event_id, accepted_at=now))
            except IntegrityError:
                continue
    except Exception:
        log.exception("could not record accepted event ids for dedupe")


async def register_write_key(runtime: Runtime, source: str, key: str) -> None:
    """Make ``key`` the write key of ``source`` (created enabled if new)."""
    now = datetime.now(UTC)
    async with runtime.sessions() as session, session.begin():
        await session.execute(delete(sources).where(sources.c.key_hash == digest(key), sources.c.name != source))
        exists = await session.scalar(select(sources.c.name).where(sources.c.name == source))
        if exists:
            await session.execute(update(sources).where(sources.c.name == source).values(key_hash=digest(key)))
        else:
            await session.execute(
                insert(sources).values(name=source, key_hash=digest(key), enabled=True, created_at=now)
            )


async def prune_seen(runtime: Runtime, settings: IngestSettings) -> None:
    async with runtime.sessions() as session, session.begin():
        await session.execute(
            delete(seen_events).where(seen_events.c.accepted_at < datetime.now(UTC) - settings.dedupe_window)
        )


def create_app(settings: IngestSettings | None = None) -> FastAPI:
    settings = settings or IngestSettings()
    metrics = ServiceMetrics()
    readiness: dict[str, Any] = {}

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        runtime = await open_runtime(settings, MIGRATIONS, metrics)
        key = settings.write_key
        if key is None and settings.env == "dev":
            key = new_key("wk")
            log.warning("no write key configured; generated one for source %r: %s", settings.write_key_source, key)
        if key is not None:
            await register_write_key(runtime, settings.write_key_source, key)
        await prune_seen(runtime, settings)
        readiness.update(runtime.readiness())
        app.state.runtime = runtime
        try:
            yield
        finally:
            await runtime.close()

    app = FastAPI(title="Huitou ingest", version="1", lifespan=lifespan)
    app.state.settings = settings
    install_common(app, service="ingest", metrics=metrics, readiness=readiness)
    app.include_router(router)
    return app
