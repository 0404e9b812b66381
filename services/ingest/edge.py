"""The HTTP edge every intake interface shares: error bodies, reading a body (content type,
gzip, size limits, JSON) and write-key authentication."""

from __future__ import annotations

import base64
import binascii
import zlib
from collections.abc import Callable
from typing import Any

from fastapi import HTTPException, Request
from pydantic_core import from_json
from sqlalchemy.exc import SQLAlchemyError

from services.ingest.budget import Hold, InFlightBudget
from services.ingest.pipeline import IntakePipeline
from services.ingest.repository import Source, SourceStore
from services.ingest.settings import IngestSettings
from shared.tracing import new_trace_id, trace_id_from_headers

CHALLENGE = {"WWW-Authenticate": 'Basic realm="huitou-ingest"'}


def refusal(
    status: int, message: str, *, code: str, headers: dict[str, str] | None = None, **extra: Any
) -> HTTPException:
    """An error the caller can act on. ``error`` is Huitou's field; ``code`` and ``message`` are
    what Segment's SDKs read from a failed upload, so every interface answers the same shape."""
    return HTTPException(status, {"error": message, "code": code, "message": message, **extra}, headers)


def is_json_type(media_type: str) -> bool:
    return media_type == "application/json" or media_type.endswith("+json")


def media_type(request: Request) -> str:
    return request.headers.get("content-type", "").split(";")[0].strip().lower()


async def read_body(request: Request, max_bytes: int, accepts: Callable[[str], bool], wanted: str) -> bytes:
    """The request body, gzip undone, within ``max_bytes`` before and after decompression."""
    content_type = media_type(request)
    if not accepts(content_type):
        raise refusal(
            415, f"send Content-Type: {wanted} (got {content_type or 'none'!r})", code="unsupported_media_type"
        )
    encoding = request.headers.get("content-encoding", "identity").strip().lower()
    if encoding not in ("identity", "gzip", "x-gzip", ""):
        raise refusal(415, f"Content-Encoding must be gzip or identity (got {encoding!r})", code="unsupported_encoding")
    too_big = refusal(
        413, f"request body over {max_bytes} bytes; split it into smaller batches", code="payload_too_large"
    )
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > max_bytes:
        raise too_big
    body = bytearray()
    async for chunk in request.stream():
        body.extend(chunk)
        if len(body) > max_bytes:
            raise too_big
    if encoding in ("gzip", "x-gzip"):
        return _gunzip(bytes(body), max_bytes, too_big)
    return bytes(body)


def _gunzip(data: bytes, max_bytes: int, too_big: HTTPException) -> bytes:
    inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
    try:
        # Bounded output: a small bomb that inflates to gigabytes stops at max_bytes + 1.
        out = inflater.decompress(data, max_bytes + 1)
    except zlib.error as error:
        raise refusal(400, f"body is not valid gzip: {error}", code="invalid_encoding") from None
    if len(out) > max_bytes or inflater.unconsumed_tail:
        raise too_big
    if not inflater.eof:
        raise refusal(400, "gzip body is truncated", code="invalid_encoding")
    return out


def parse_json(body: bytes) -> Any:
    """Strict JSON (no NaN or Infinity, at most 200 levels deep), parsed by pydantic-core."""
    if not body.strip():
        raise refusal(400, "body is empty; send a JSON document", code="invalid_json")
    try:
        return from_json(body, allow_inf_nan=False)
    except ValueError as error:
        raise refusal(400, f"body is not valid JSON: {error}", code="invalid_json") from None


def request_trace(request: Request) -> str:
    """The trace this request belongs to: the caller's ``traceparent``, else a new one. A
    malformed ``traceparent`` is not the caller's error: W3C trace context says to restart the
    trace, so it is ignored rather than refused."""
    return trace_id_from_headers(request.headers) or new_trace_id()


def presented_key(request: Request) -> str | None:
    """Segment-style HTTP Basic (write key as user name) or a Bearer token."""
    header = request.headers.get("authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    if scheme.lower() == "basic" and value.strip():
        try:
            user, _, _password = base64.b64decode(value.strip(), validate=True).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return None
        return user or None
    return None


async def authenticate(store: SourceStore, key: str | None, settings: IngestSettings) -> Source:
    if key is None:
        raise refusal(
            401,
            "send your write key as the HTTP Basic user name (or as a Bearer token)",
            code="unauthorized",
            headers=CHALLENGE,
        )
    try:
        source = await store.authenticate(key)
    except (SQLAlchemyError, OSError):
        raise refusal(
            503,
            "cannot check write keys right now; nothing was accepted, retry later",
            code="unavailable",
            headers={"Retry-After": str(settings.retry_after_seconds)},
        ) from None
    if source is None:
        raise refusal(401, "unknown write key", code="unauthorized", headers=CHALLENGE)
    if not source.enabled:
        raise refusal(403, f"source {source.name!r} is disabled; ask an operator to enable it", code="forbidden")
    return source


class Intake:
    """What an intake route needs, from the app state the lifespan filled.

    Built by the route itself rather than through ``Depends``: on the hot path FastAPI's
    dependency solving costs more than the whole of our own per-request work.
    """

    __slots__ = ("budget", "pipeline", "settings", "sources")

    def __init__(self, request: Request) -> None:
        state = request.app.state
        self.settings: IngestSettings = state.settings
        self.pipeline: IntakePipeline = state.pipeline
        self.sources: SourceStore = state.sources
        self.budget: InFlightBudget = state.budget

    async def source_from_header(self, request: Request) -> str:
        return (await authenticate(self.sources, presented_key(request), self.settings)).name

    def hold(self, request: Request) -> Hold:
        """Reserve the body's bytes before reading it (raises OverBudget → 429)."""
        declared = request.headers.get("content-length", "")
        size = int(declared) if declared.isdigit() else self.settings.max_request_bytes
        return self.budget.hold(min(size, self.settings.max_request_bytes))

    async def read_json(
        self, request: Request, hold: Hold, accepts: Callable[[str], bool], wanted: str
    ) -> tuple[Any, int]:
        """The decoded JSON body and its size; the hold grows to what gzip inflated it to."""
        body = await read_body(request, self.settings.max_request_bytes, accepts, wanted)
        if len(body) > hold.bytes:
            hold.grow(0, len(body) - hold.bytes)
        return parse_json(body), len(body)
