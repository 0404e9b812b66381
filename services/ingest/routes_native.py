"""POST /v1/events: one event or a list, in Huitou's own envelope. 202 only after the broker's ack."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from services.ingest.edge import Intake, is_json_type, refusal, request_trace
from services.ingest.intake import item_sizes, native_candidates
from services.ingest.schemas import IntakeResult, errors, json_body

router = APIRouter(tags=["native"])
SECURITY: dict[str, Any] = {"security": [{"writeKey": []}, {"writeKeyBearer": []}]}


@router.post(
    "/v1/events",
    status_code=202,
    response_model=IntakeResult,
    responses=errors(400, 401, 403, 413, 415, 422, 429, 503),
    summary="Post one event or a list of events in Huitou's native envelope",
    openapi_extra={**json_body("native"), **SECURITY},
)
async def post_events(request: Request) -> JSONResponse:
    received_at = datetime.now(UTC)
    trace_id = request_trace(request)
    intake = Intake(request)
    source = await intake.source_from_header(request)
    limit = intake.settings.max_event_bytes
    with intake.hold(request) as hold:
        data, size = await intake.read_json(request, hold, is_json_type, "application/json")
        items = data if isinstance(data, list) else [data]
        if not items:
            raise refusal(400, "the list of events is empty", code="empty_batch")
        hold.grow(len(items), 0)
        candidates, rejected = native_candidates(items, item_sizes(items, size, limit), limit)
        outcome = await intake.pipeline.submit(
            candidates, rejected, source=source, received_at=received_at, interface="native", trace_id=trace_id
        )
    body = {"accepted": outcome.accepted, "duplicates": outcome.duplicates, "rejected": outcome.rejected_json()}
    if outcome.nothing_valid:
        message = "no valid event in the request; see rejected for what to fix"
        return JSONResponse({"error": message, "code": "invalid_events", "message": message, **body}, 422)
    return JSONResponse(body, 202)
