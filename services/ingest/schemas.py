"""Shapes of intake requests and responses, for the OpenAPI document.

The routes read raw bodies (they must check size, encoding and auth before parsing, and judge
each item of a batch on its own), so FastAPI cannot infer the request bodies; these models
describe them, and ``install_openapi`` publishes them as components. The Segment and
CloudEvents models are deliberately lenient (``extra="allow"``): they document the wire
format, the mapping modules decide what is acceptable.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

from shared.contracts import IntakeEvent


class ErrorBody(BaseModel):
    """Every refusal: what went wrong and what to do. ``message`` mirrors ``error`` for Segment's SDKs."""

    error: str
    code: str | None = None
    message: str | None = None
    problems: list[str] | None = None


class RejectedItem(BaseModel):
    index: int = Field(description="position of the item in the request (a batch's list)")
    event_id: str | None = Field(description="the caller's id for it (event_id, messageId or CloudEvents id)")
    problems: list[str] = Field(description="one line per problem: `where: what to fix`")


class IntakeResult(BaseModel):
    """Per-item outcome of an intake call. ``accepted`` ids are stored in Kafka (acks=all)."""

    accepted: list[str]
    duplicates: list[str] = Field(description="ids seen within the dedupe window: answered, not re-published")
    rejected: list[RejectedItem]


class SegmentResult(IntakeResult):
    success: bool = Field(True, description="what Segment's API answers; the SDKs read only the status")


class _Segment(BaseModel):
    model_config = ConfigDict(extra="allow")

    messageId: str | None = Field(None, max_length=200, description="becomes event_id; retries with it are no-ops")
    userId: str | None = Field(None, max_length=200, description="the customer id (partition key)")
    anonymousId: str | None = Field(None, max_length=200, description="until identified: customer id `anon:<id>`")
    timestamp: str | None = Field(None, description="ISO 8601; corrected for clock skew with sentAt")
    sentAt: str | None = None
    context: dict[str, Any] | None = None
    integrations: dict[str, Any] | None = None


class SegmentTrack(_Segment):
    type: Literal["track"] = "track"
    event: str = Field(description="e.g. Order Completed, Order Refunded, Product Viewed, or any name")
    properties: dict[str, Any] | None = None


class SegmentIdentify(_Segment):
    type: Literal["identify"] = "identify"
    traits: dict[str, Any] | None = Field(
        None, description="email, phone, name, firstName, lastName, birthday, timezone, locale, address, createdAt…"
    )


class SegmentPage(_Segment):
    type: Literal["page"] = "page"
    name: str | None = None
    category: str | None = None
    properties: dict[str, Any] | None = None


class SegmentScreen(_Segment):
    type: Literal["screen"] = "screen"
    name: str | None = None
    category: str | None = None
    properties: dict[str, Any] | None = None


class SegmentGroup(_Segment):
    type: Literal["group"] = "group"
    groupId: str = Field(max_length=200, description="becomes the customer's account_id")
    traits: dict[str, Any] | None = None


class SegmentAlias(_Segment):
    type: Literal["alias"] = "alias"
    previousId: str = Field(max_length=200)


SegmentMessage = Annotated[
    SegmentTrack | SegmentIdentify | SegmentPage | SegmentScreen | SegmentGroup | SegmentAlias,
    Field(discriminator="type"),
]


class SegmentBatch(BaseModel):
    model_config = ConfigDict(extra="allow")

    batch: list[SegmentMessage] = Field(min_length=1)
    sentAt: str | None = None
    context: dict[str, Any] | None = None
    writeKey: str | None = Field(None, description="accepted when no Authorization header is sent")


class CloudEvent(BaseModel):
    """A CloudEvents 1.0 event in the JSON format; extension attributes are allowed."""

    model_config = ConfigDict(extra="allow")

    specversion: Literal["1.0"]
    id: str = Field(min_length=1, max_length=200, description="becomes event_id")
    source: str = Field(min_length=1, description="URI-reference of the sender (informational)")
    type: str = Field(description="an intake type, optionally prefixed: purchase, com.example.pos.purchase")
    subject: str | None = Field(None, description="the customer id, unless the customerid extension is sent")
    customerid: str | None = None
    time: str = Field(description="when it happened (RFC 3339) → occurred_at")
    datacontenttype: str | None = "application/json"
    data: dict[str, Any] | None = Field(None, description="the payload of the Huitou event type")
    data_base64: str | None = None
    historical: bool | None = None
    traceparent: str | None = None


_REF = "#/components/schemas/{model}"
NativeBody = IntakeEvent | list[IntakeEvent]


def _schema(name: str, annotation: Any, defs: dict[str, Any]) -> dict[str, Any]:
    schema = TypeAdapter(annotation).json_schema(ref_template=_REF)
    defs.update(schema.pop("$defs", {}))
    defs[name] = schema
    return {"$ref": _REF.format(model=name)}


def request_bodies() -> tuple[dict[str, dict[str, Any]], dict[str, Any]]:
    """(request body by name, component schemas) for the routes' ``openapi_extra``."""
    defs: dict[str, Any] = {}
    refs = {
        "native": _schema("NativeIntakeBody", NativeBody, defs),
        "segment_batch": _schema("SegmentBatch", SegmentBatch, defs),
        "cloudevent": _schema("CloudEvent", CloudEvent, defs),
        "cloudevent_batch": _schema("CloudEventBatch", list[CloudEvent], defs),
    }
    for name, model in (
        ("track", SegmentTrack),
        ("identify", SegmentIdentify),
        ("page", SegmentPage),
        ("screen", SegmentScreen),
        ("group", SegmentGroup),
        ("alias", SegmentAlias),
    ):
        refs[name] = _schema(model.__name__, model, defs)
    return refs, defs


REFS, COMPONENTS = request_bodies()


def json_body(ref: str, *, media_types: tuple[str, ...] = ("application/json",)) -> dict[str, Any]:
    return {"requestBody": {"required": True, "content": {m: {"schema": REFS[ref]} for m in media_types}}}


def errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
    meaning = {
        400: "malformed request (not JSON, bad gzip, empty batch); the body says what to fix",
        401: "missing or unknown write key",
        403: "the source is disabled",
        413: "body over the request limit (500 KB), or a single event over 32 KB",
        415: "unsupported Content-Type or Content-Encoding",
        422: "no valid event in the request; each rejection says why",
        429: "over the in-flight budget; nothing accepted, retry after Retry-After seconds",
        503: "broker unavailable; nothing accepted, retry after Retry-After seconds",
    }
    return {status: {"description": meaning[status], "model": ErrorBody} for status in statuses}


def install_openapi(app: FastAPI) -> None:
    """Add the request-body components and the write-key security schemes to the document."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema:
            return app.openapi_schema
        document = get_openapi(title=app.title, version=app.version, routes=app.routes, description=app.description)
        components = document.setdefault("components", {})
        schemas = components.setdefault("schemas", {})
        for name, schema in COMPONENTS.items():
            schemas.setdefault(name, schema)
        components["securitySchemes"] = {
            "writeKey": {"type": "http", "scheme": "basic", "description": "the write key as the user name"},
            "writeKeyBearer": {"type": "http", "scheme": "bearer"},
        }
        app.openapi_schema = document
        return document

    app.openapi = openapi  # type: ignore[method-assign]
