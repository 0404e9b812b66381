"""CloudEvents 1.0 over HTTP (structured, batched and binary content modes) mapped onto Huitou's
envelope. Pure: no I/O.

| CloudEvents attribute | Huitou envelope |
|---|---|
| ``id`` | ``event_id`` |
| ``type`` (``purchase`` or any ``….purchase``) | ``type`` |
| extension ``customerid``, else ``subject`` | ``customer_id`` |
| ``time`` | ``occurred_at`` (required: scores run on event time) |
| ``data`` (JSON object; or ``data_base64`` of JSON) | ``payload`` |
| extension ``historical`` | ``historical`` |
| extension ``traceparent`` (W3C) | ``trace_id`` |

``source`` is required by the spec and checked, but the envelope's ``source`` is always the
write key's source — a sender cannot claim to be another.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Mapping
from typing import Any
from urllib.parse import unquote

from services.ingest.intake import Candidate, MappingError
from shared.contracts import INTAKE_TYPES
from shared.tracing import parse_traceparent

SPEC_VERSION = "1.0"
STRUCTURED = "application/cloudevents+json"
BATCH = "application/cloudevents-batch+json"
_REQUIRED = ("specversion", "id", "source", "type")
_RENAMES = (
    ("event_id", "id"),
    ("customer_id", "subject"),
    ("occurred_at", "time"),
    ("trace_id", "traceparent"),
    ("payload", "data"),
)


def huitou_type(ce_type: str) -> str | None:
    """``purchase``, ``huitou.purchase`` and ``com.example.pos.purchase`` all mean a purchase."""
    last = ce_type.rsplit(".", 1)[-1]
    return last if last in INTAKE_TYPES else None


def is_json_media_type(media_type: str | None) -> bool:
    if not media_type:
        return True  # the spec's default for data in a JSON-format event
    base = media_type.split(";")[0].strip().lower()
    return base in ("application/json", "text/json") or base.endswith("+json")


def from_structured(event: Any, index: int = 0) -> Candidate:
    """One event in the JSON event format (structured mode, or one item of a batch)."""
    if not isinstance(event, dict):
        raise MappingError(["each CloudEvent must be a JSON object"])
    attributes = {k: v for k, v in event.items() if k not in ("data", "data_base64")}
    if "data_base64" in event:
        data = _decode_base64_json(event["data_base64"], attributes.get("datacontenttype"))
    else:
        if "data" in event and not is_json_media_type(_text(attributes.get("datacontenttype"))):
            raise MappingError(["datacontenttype: data must be JSON (application/json)"])
        data = event.get("data")
    return _candidate(attributes, data, index)


def from_binary(headers: Mapping[str, str], data: Any) -> Candidate:
    """Binary mode: attributes in ``ce-*`` headers, the body is the data (already decoded JSON)."""
    attributes: dict[str, Any] = {}
    for name, value in headers.items():
        lowered = name.lower()
        if lowered.startswith("ce-"):
            # The HTTP binding percent-encodes header values outside printable ASCII.
            attributes[lowered[3:]] = unquote(value)
    if "traceparent" in headers and "traceparent" not in attributes:
        attributes["traceparent"] = headers["traceparent"]
    return _candidate(attributes, data, 0)


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _decode_base64_json(value: Any, media_type: Any) -> Any:
    if not is_json_media_type(_text(media_type)):
        raise MappingError(["datacontenttype: data must be JSON (application/json)"])
    try:
        return json.loads(base64.b64decode(value, validate=True))
    except (TypeError, ValueError, binascii.Error, UnicodeDecodeError):
        raise MappingError(["data_base64: must be base64 of a JSON object"]) from None


def _candidate(attributes: dict[str, Any], data: Any, index: int) -> Candidate:
    problems = []
    for name in _REQUIRED:
        value = attributes.get(name)
        if not isinstance(value, str) or not value:
            problems.append(f"{name}: required (a non-empty string)")
    if isinstance(attributes.get("specversion"), str) and attributes["specversion"] != SPEC_VERSION:
        problems.append(f"specversion: only {SPEC_VERSION} is supported; got {attributes['specversion']!r}")
    ce_type = attributes.get("type")
    event_type = huitou_type(ce_type) if isinstance(ce_type, str) and ce_type else None
    if isinstance(ce_type, str) and ce_type and event_type is None:
        problems.append(
            f"type: must be one of {', '.join(INTAKE_TYPES)}, optionally prefixed (e.g. com.example.pos.purchase);"
            f" got {ce_type!r}"
        )
    customer = attributes.get("customerid") or attributes.get("subject")
    if customer is None:
        problems.append("subject: required — the customer id (or send the customerid extension attribute)")
    if attributes.get("time") is None:
        problems.append("time: required — when the event happened, RFC 3339 with an offset")
    if not isinstance(data, dict):
        problems.append("data: must be a JSON object holding the event's payload")
    historical = _boolean(attributes.get("historical", False))
    if historical is None:
        problems.append("historical: must be true or false")
    if problems:
        raise MappingError(problems)
    native: dict[str, Any] = {
        "event_id": attributes["id"],
        "type": event_type,
        "customer_id": customer,
        "occurred_at": attributes["time"],
        "payload": data,
        "historical": historical,
    }
    trace_id = _trace_id(attributes.get("traceparent"))
    if trace_id is not None:
        native["trace_id"] = trace_id
    return Candidate(index, native, renames=_RENAMES)


def _boolean(value: Any) -> bool | None:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    return None


def _trace_id(traceparent: Any) -> str | None:
    # Malformed (or all-zero) is as good as absent: the request's trace applies (W3C: restart).
    return parse_traceparent(traceparent) if isinstance(traceparent, str) else None
