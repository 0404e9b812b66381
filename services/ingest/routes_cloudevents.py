"""POST /v1/cloudevents: CloudEvents 1.0 over HTTP — structured, batched and binary content modes."""

from __future__ import annotations

from datetime import UTC, datetime

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from services.ingest import cloudevents
from services.ingest.edge import Intake, is_json_type, media_type, refusal, request_trace
from services.ingest.intake import Candidate, MappingError, Rejection, caller_id, item_sizes, oversize
from services.ingest.routes_native import SECURITY
from services.ingest.schemas import REFS, IntakeResult, errors

router = APIRouter(tags=["cloudevents"])
WANTED = f"{cloudevents.STRUCTURED}, {cloudevents.BATCH}, or application/json with ce-* headers (binary mode)"
_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            cloudevents.STRUCTURED: {"schema": REFS["cloudevent"]},
            cloudevents.BATCH: {"schema": REFS["cloudevent_batch"]},
            "application/json": {"schema": {"type": "object", "description": "binary mode: the data"}},
        },
    },
    "parameters": [
        {"name": f"ce-{name}", "in": "header", "required": False, "schema": {"type": "string"}}
        for name in ("specversion", "id", "source", "type", "subject", "time")
    ],
}


@router.post(
    "/v1/cloudevents",
    status_code=202,
    response_model=IntakeResult,
    responses=errors(400, 401, 403, 413, 415, 422, 429, 503),
    summary="Post CloudEvents 1.0 (structured, batch or binary mode) whose type is a Huitou intake type",
    openapi_extra={**_BODY, **SECURITY},
)
async def post_cloudevents(request: Request) -> JSONResponse:
    received_at = datetime.now(UTC)
    trace_id = request_trace(request)
    intake = Intake(request)
    source = await intake.source_from_header(request)
    limit = intake.settings.max_event_bytes
    mode = media_type(request)
    with intake.hold(request) as hold:
        data, size = await intake.read_json(request, hold, is_json_type, WANTED)
        if mode == cloudevents.BATCH:
            if not isinstance(data, list) or not data:
                raise refusal(400, "a CloudEvents batch is a non-empty JSON array of events", code="empty_batch")
            items = data
        else:
            items = [data]
        hold.grow(len(items), 0)
        candidates: list[Candidate] = []
        rejected: list[Rejection] = []
        for index, (item, item_size) in enumerate(zip(items, item_sizes(items, size, limit), strict=True)):
            too_big = oversize(index, item, item_size, limit, id_field="id")
            if too_big is not None:
                rejected.append(too_big)
                continue
            try:
                if mode in (cloudevents.BATCH, cloudevents.STRUCTURED):
                    candidates.append(cloudevents.from_structured(item, index))
                else:
                    candidates.append(_binary(request, item))
            except MappingError as error:
                rejected.append(Rejection(index, caller_id(item, "id") or request.headers.get("ce-id"), error.problems))
        outcome = await intake.pipeline.submit(
            candidates, rejected, source=source, received_at=received_at, interface="cloudevents", trace_id=trace_id
        )
    body = {"accepted": outcome.accepted, "duplicates": outcome.duplicates, "rejected": outcome.rejected_json()}
    if outcome.nothing_valid:
        message = "no valid event in the request; see rejected for what to fix"
        return JSONResponse({"error": message, "code": "invalid_events", "message": message, **body}, 422)
    return JSONResponse(body, 202)


def _binary(request: Request, data: object) -> Candidate:
    if "ce-specversion" not in request.headers:
        raise MappingError(
            [
                "binary mode needs the ce-specversion, ce-id, ce-source, ce-type and ce-time headers "
                f"(or send the whole event with Content-Type {cloudevents.STRUCTURED})"
            ]
        )
    return cloudevents.from_binary(request.headers, data)
