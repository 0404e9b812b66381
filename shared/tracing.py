"""W3C trace context across HTTP and Kafka, and the log context of the event being handled.

A trace starts at ingest (from the caller's ``traceparent`` header, or a fresh one) and its
trace id rides in the envelope (``trace_id``) and in a ``traceparent`` Kafka header on every
record derived from the event — intake, ``customer.updated``, touch lifecycle — so one id
follows an event from the HTTP request to the touch it caused.

While a consumer handles an event, :func:`bound` puts its ids into a context variable that the
JSON log formatter adds to every line, so each log line names the event, customer and trace.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

TRACEPARENT = "traceparent"
_FORMAT = re.compile(r"^00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})$")
_INVALID_TRACE = "0" * 32
_INVALID_SPAN = "0" * 16


def new_trace_id() -> str:
    return secrets.token_hex(16)


def new_span_id() -> str:
    return secrets.token_hex(8)


def parse_traceparent(value: str | bytes | None) -> str | None:
    """The trace id of a W3C ``traceparent`` (version 00), or None if absent or malformed."""
    if value is None:
        return None
    if isinstance(value, bytes):
        value = value.decode("ascii", errors="replace")
    match = _FORMAT.match(value.strip().lower())
    if match is None or match.group(1) == _INVALID_TRACE or match.group(2) == _INVALID_SPAN:
        return None
    return match.group(1)


def is_trace_id(value: str | None) -> bool:
    return value is not None and re.fullmatch("[0-9a-f]{32}", value) is not None and value != _INVALID_TRACE


def traceparent(trace_id: str, span_id: str | None = None, *, sampled: bool = True) -> str:
    """A ``traceparent`` value for ``trace_id`` with a new span (each hop is its own span)."""
    return f"00-{trace_id}-{span_id or new_span_id()}-{'01' if sampled else '00'}"


def kafka_headers(trace_id: str | None) -> tuple[tuple[str, bytes], ...]:
    """Kafka record headers carrying ``trace_id`` onward; none for an event without a trace.

    A ``trace_id`` that is not a W3C trace id (older events, hand-written ones) is not forced
    into a header: the envelope still carries it.
    """
    if not is_trace_id(trace_id):
        return ()
    assert trace_id is not None
    return ((TRACEPARENT, traceparent(trace_id).encode()),)


def trace_id_from_headers(headers: Sequence[tuple[str, bytes]] | Mapping[str, Any] | None) -> str | None:
    """The trace id in Kafka record headers (a sequence of pairs) or HTTP headers (a mapping)."""
    if not headers:
        return None
    if isinstance(headers, Mapping):
        return parse_traceparent(headers.get(TRACEPARENT))
    for name, value in headers:
        if name == TRACEPARENT:
            return parse_traceparent(value)
    return None


_log_context: ContextVar[dict[str, Any] | None] = ContextVar("huitou_log_context", default=None)


def log_context() -> dict[str, Any]:
    """The ids bound for the current task (empty outside :func:`bound`)."""
    return _log_context.get() or {}


@contextmanager
def bound(**ids: Any) -> Iterator[None]:
    """Add ``ids`` (event_id, customer_id, trace_id, touch_id…) to every log line in this block."""
    merged = {**log_context(), **{k: v for k, v in ids.items() if v is not None}}
    token = _log_context.set(merged)
    try:
        yield
    finally:
        _log_context.reset(token)
