"""Segment's HTTP Tracking API, so shops keep the SDKs they already use.

``/v1/track``, ``/identify``, ``/page``, ``/screen``, ``/group``, ``/alias`` and ``/v1/batch``, plus
the short paths analytics.js posts to (``/v1/t``, ``/v1/i``…, ``/v1/b`` for its batches, with the
write key in the body and ``Content-Type: text/plain``) and ``/v1/import`` (a batch marked historical).
Answers are Segment's: ``200 {"success": true}`` — sent only after the broker acknowledged every
accepted event — and ``{"code", "message"}`` on failure, which the SDKs read.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from services.ingest.edge import Intake, authenticate, is_json_type, presented_key, refusal, request_trace
from services.ingest.intake import item_sizes
from services.ingest.routes_native import SECURITY
from services.ingest.schemas import SegmentResult, errors, json_body
from services.ingest.segment import SegmentContext, map_batch

router = APIRouter(tags=["segment"])
RESPONSES = errors(400, 401, 403, 413, 415, 429, 503)
SHORT_PATHS = {"track": "t", "identify": "i", "page": "p", "screen": "s", "group": "g", "alias": "a"}


def _accepts(content_type: str) -> bool:
    # analytics.js sends text/plain so browsers skip the CORS preflight.
    return is_json_type(content_type) or content_type == "text/plain"


async def segment_intake(request: Request, *, call: str | None, historical: bool = False) -> JSONResponse:
    received_at = datetime.now(UTC)
    trace_id = request_trace(request)
    intake = Intake(request)
    settings = intake.settings
    header_key = presented_key(request)
    source = None
    if header_key is not None or not settings.accept_body_write_key:
        source = await authenticate(intake.sources, header_key, settings)
    with intake.hold(request) as hold:
        data, size = await intake.read_json(request, hold, _accepts, "application/json (or text/plain holding JSON)")
        if not isinstance(data, dict):
            raise refusal(400, 'body must be a JSON object (a message, or {"batch": [...]})', code="invalid_request")
        if source is None:
            body_key = data.get("writeKey")
            source = await authenticate(intake.sources, body_key if isinstance(body_key, str) else None, settings)
        messages = _messages(data, call, size, settings.max_event_bytes)
        hold.grow(len(messages), 0)
        context = SegmentContext(
            received_at=received_at,
            sent_at=data.get("sentAt") if call is None else None,
            batch_context=data.get("context") if call is None and isinstance(data.get("context"), dict) else None,
            historical=historical,
            default_currency=settings.default_currency,
            anonymous_prefix=settings.anonymous_prefix,
        )
        sizes = item_sizes(messages, size, settings.max_event_bytes) if call is None else [0]
        candidates, rejected = map_batch(messages, sizes, context, settings.max_event_bytes, call=call)
        outcome = await intake.pipeline.submit(
            candidates, rejected, source=source.name, received_at=received_at, interface="segment", trace_id=trace_id
        )
    body: dict[str, Any] = {
        "accepted": outcome.accepted,
        "duplicates": outcome.duplicates,
        "rejected": outcome.rejected_json(),
    }
    if outcome.nothing_valid:
        first = outcome.rejected[0]
        message = f"message {first.index} rejected: " + "; ".join(first.problems)
        if len(outcome.rejected) > 1:
            message = f"no valid message in the batch; {message} (see rejected for the others)"
        return JSONResponse(
            {"success": False, "error": message, "code": "invalid_request", "message": message, **body}, 400
        )
    return JSONResponse({"success": True, **body}, 200)


def _messages(data: dict[str, Any], call: str | None, size: int, max_event_bytes: int) -> list[Any]:
    if call is not None:
        if size > max_event_bytes:
            raise refusal(
                413,
                f"event is {size} bytes; Segment's per-event limit is {max_event_bytes} bytes",
                code="payload_too_large",
            )
        return [data]
    batch = data.get("batch")
    if not isinstance(batch, list) or not batch:
        raise refusal(400, "batch: required — a non-empty list of messages", code="invalid_request")
    return batch


def _single(call: str) -> Any:
    async def post(request: Request) -> JSONResponse:
        return await segment_intake(request, call=call)

    post.__name__ = f"segment_{call}"
    return post


for _call, _short in SHORT_PATHS.items():
    _handler = _single(_call)
    router.add_api_route(
        f"/v1/{_call}",
        _handler,
        methods=["POST"],
        response_model=SegmentResult,
        responses=RESPONSES,
        summary=f"Segment {_call} call",
        openapi_extra={**json_body(_call, media_types=("application/json", "text/plain")), **SECURITY},
    )
    router.add_api_route(f"/v1/{_short}", _handler, methods=["POST"], include_in_schema=False)


@router.post(
    "/v1/batch",
    response_model=SegmentResult,
    responses=RESPONSES,
    summary="Segment batch: up to 500 KB of messages, each judged on its own",
    openapi_extra={**json_body("segment_batch", media_types=("application/json", "text/plain")), **SECURITY},
)
async def segment_batch(request: Request) -> JSONResponse:
    return await segment_intake(request, call=None)


@router.post("/v1/b", include_in_schema=False)  # analytics.js's batching delivery strategy
async def segment_batch_short(request: Request) -> JSONResponse:
    return await segment_intake(request, call=None)


@router.post(
    "/v1/import",
    response_model=SegmentResult,
    responses=RESPONSES,
    summary="Segment import: a batch of past events, marked historical (they never trigger a past-due touch)",
    openapi_extra={**json_body("segment_batch"), **SECURITY},
)
async def segment_import(request: Request) -> JSONResponse:
    return await segment_intake(request, call=None, historical=True)
