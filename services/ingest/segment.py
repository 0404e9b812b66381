"""Segment's Tracking API spec mapped onto Huitou's contracts. Pure: no I/O, no clock.

The table this module implements is documented in docs/ingest.md ("Segment mapping"). In short:
``identify`` and ``group`` become ``identify``; ``Order Completed`` a ``purchase``; ``Order
Refunded`` a ``refund``; consent-like track events a ``consent``; service events (complaints,
feedback, referrals, email opens…) interactions of their kind; ``page``/``screen`` a page view;
``alias`` an ``alias``; and every other track event an interaction of kind ``other`` that keeps
its name and properties — nothing a shop sends is dropped for being unfamiliar.
"""

from __future__ import annotations

import functools
import hashlib
import json
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from services.ingest.intake import Candidate, MappingError, Rejection, oversize

SEGMENT_TYPES = ("track", "identify", "page", "screen", "group", "alias")
_VOLATILE = ("sentAt", "writeKey", "receivedAt")  # differ between retries of one message


@dataclass(frozen=True)
class SegmentContext:
    """What the mapping needs besides the message: the server's receipt time and request-level fields."""

    received_at: datetime
    sent_at: Any = None  # the batch's sentAt; a message's own sentAt wins
    batch_context: dict[str, Any] | None = None
    historical: bool = False
    default_currency: str = "CNY"
    anonymous_prefix: str = "anon:"


# --- track events with a meaning of their own -------------------------------------------------

_CONSENT_EVENTS: dict[str, tuple[str, bool | None]] = {
    # event → (default channel, granted; None = read properties.granted)
    "consent updated": ("all", None),
    "subscribed": ("email", True),
    "unsubscribed": ("email", False),
    "email marked as spam": ("email", False),
}

_INTERACTION_EVENTS: dict[str, str] = {
    "product viewed": "product_viewed",
    "email opened": "email_open",
    "email link clicked": "email_click",
    "store visited": "visit",
    "visit": "visit",
    "support ticket created": "support_contact",
    "support contacted": "support_contact",
    "live chat conversation started": "support_contact",
    "complaint submitted": "complaint",
    "complaint resolved": "complaint_resolved",
    "feedback submitted": "feedback",
    "survey completed": "feedback",
    "product reviewed": "feedback",
    "referral completed": "referral",
}

# Where a contract problem about the mapped event came from in the Segment message, so a
# rejection names the field the caller actually sent.
_COMMON_RENAMES = (("event_id", "messageId"), ("customer_id", "userId"), ("occurred_at", "timestamp"))
_RENAMES: dict[str, tuple[tuple[str, str], ...]] = {
    "purchase": (
        ("payload.amount", "properties.total"),
        ("payload.items", "properties.products"),
        ("payload", "properties"),
    ),
    "refund": (("payload.amount", "properties.total"), ("payload", "properties")),
    "consent": (("payload", "properties"),),
    "interaction": (("payload.properties", "properties"), ("payload", "properties")),
    "identify": (("payload.traits", "traits"),),
    "alias": (("payload.previous_ids", "previousId"),),
}


@functools.lru_cache(maxsize=4096)  # a shop sends a handful of names, over and over
def normalise_event_name(name: str) -> str:
    """'Order Completed', 'order_completed' and 'order-completed' are the same spec event."""
    return re.sub(r"[\s_\-]+", " ", name).strip().casefold()


def map_batch(
    messages: list[Any], sizes: list[int], context: SegmentContext, max_event_bytes: int, call: str | None = None
) -> tuple[list[Candidate], list[Rejection]]:
    """Map every message of a batch on its own; a bad one is reported, never sinks the rest.

    ``call`` is the type a single-call endpoint implies (``/v1/track`` …); batch items name their own.
    """
    candidates: list[Candidate] = []
    rejected: list[Rejection] = []
    for index, (message, size) in enumerate(zip(messages, sizes, strict=True)):
        too_big = oversize(index, message, size, max_event_bytes, id_field="messageId")
        if too_big is not None:
            rejected.append(too_big)
            continue
        try:
            candidates.extend(map_message(message, index, context, call=call))
        except MappingError as error:
            rejected.append(Rejection(index, _message_id_or_none(message), error.problems))
    return candidates, rejected


def map_message(message: Any, index: int, context: SegmentContext, *, call: str | None = None) -> list[Candidate]:
    """One Segment message → one or two native candidates (an identify may also link an alias)."""
    if not isinstance(message, dict):
        raise MappingError(["each message must be a JSON object"])
    kind = call or message.get("type")
    if kind not in SEGMENT_TYPES:
        raise MappingError([f"type: must be one of {', '.join(SEGMENT_TYPES)}; got {kind!r}"])
    problems: list[str] = []
    event_id = _collect(problems, lambda: message_id(message))
    occurred_at = _collect(problems, lambda: occurred_at_of(message, context))
    if kind == "alias":
        customer_id = _collect(problems, lambda: _id(message.get("userId"), "userId", required=True))
    else:
        customer_id = _collect(problems, lambda: customer_id_of(message, context.anonymous_prefix))
    body = _collect(problems, lambda: _map_body(kind, message, context))
    if problems:
        raise MappingError(problems)
    assert event_id is not None and occurred_at is not None and customer_id is not None and body is not None
    event_type, payload = body
    envelope = {
        "event_id": event_id,
        "customer_id": customer_id,
        "occurred_at": occurred_at,  # the datetime itself: validation need not parse it back from text
        "historical": context.historical,
    }
    renames = _COMMON_RENAMES + _RENAMES.get(event_type, ())
    note = f"as Huitou {event_type}"
    out = [Candidate(index, {**envelope, "type": event_type, "payload": payload}, note=note, renames=renames)]
    anonymous = _id(message.get("anonymousId"), "anonymousId")
    if kind == "identify" and anonymous and message.get("userId") not in (None, ""):
        # Segment links an anonymousId to the userId that identifies it; we say so explicitly,
        # so scoring can fold the visitor's anonymous history into the customer file.
        link = {
            **envelope,
            "event_id": derived_id(event_id, "alias"),
            "type": "alias",
            "payload": {"previous_ids": [context.anonymous_prefix + anonymous]},
        }
        out.append(Candidate(index, link, note="as Huitou alias", renames=_COMMON_RENAMES))
    return out


def _collect(problems: list[str], step: Any) -> Any:
    try:
        return step()
    except MappingError as error:
        problems.extend(error.problems)
        return None


# --- identity, ids and time ------------------------------------------------------------------


def _id(value: Any, name: str, *, required: bool = False) -> str | None:
    if value is None or value == "":
        if required:
            raise MappingError([f"{name}: required"])
        return None
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise MappingError([f"{name}: must be a string (or a number); got {type(value).__name__}"])
    return str(value)


def customer_id_of(message: dict[str, Any], anonymous_prefix: str = "anon:") -> str:
    """The partition key: the userId; before identification, the namespaced anonymousId."""
    user = _id(message.get("userId"), "userId")
    if user is not None:
        return user
    anonymous = _id(message.get("anonymousId"), "anonymousId")
    if anonymous is not None:
        return anonymous_prefix + anonymous
    raise MappingError(["userId or anonymousId: one is required (anonymousId until the visitor is identified)"])


def message_id(message: dict[str, Any]) -> str:
    """Segment's messageId, or — when a hand-rolled client left it out — a digest of the message,
    so that a retry of the same message still dedupes."""
    given = _id(message.get("messageId"), "messageId")
    if given is not None:
        return given
    stable = {key: value for key, value in message.items() if key not in _VOLATILE}
    canonical = json.dumps(stable, sort_keys=True, separators=(",", ":"), default=str)
    return "seg-" + hashlib.sha256(canonical.encode()).hexdigest()[:32]


def derived_id(event_id: str, suffix: str) -> str:
    candidate = f"{event_id}#{suffix}"
    if len(candidate) <= 200:
        return candidate
    return f"{hashlib.sha256(event_id.encode()).hexdigest()}#{suffix}"


def parse_time(value: Any, name: str) -> datetime:
    """ISO 8601; a time without an offset is taken as UTC (Segment's own reading)."""
    if isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value.strip())
        except ValueError:
            pass
        else:
            return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)
    raise MappingError([f"{name}: must be an ISO 8601 date-time such as 2026-11-20T10:00:00Z; got {value!r}"])


def occurred_at_of(message: dict[str, Any], context: SegmentContext) -> datetime:
    """Segment's clock-skew correction: received − (sentAt − timestamp).

    The device's clock may be wrong, but the *interval* between the event and its sending is
    measured on that one clock, so subtracting it from our own receipt time cancels the error.
    An event cannot happen after we received it, so the result is capped at ``received_at``.
    """
    raw = message.get("timestamp") or message.get("originalTimestamp")
    if raw is None:
        return context.received_at
    timestamp = parse_time(raw, "timestamp")
    sent_raw = message.get("sentAt") or context.sent_at
    if sent_raw is None:
        return min(timestamp, context.received_at)
    sent_at = parse_time(sent_raw, "sentAt")
    return min(context.received_at - (sent_at - timestamp), context.received_at)


def _message_id_or_none(message: Any) -> str | None:
    if not isinstance(message, dict):
        return None
    try:
        return message_id(message)
    except MappingError:
        return None


# --- bodies ----------------------------------------------------------------------------------


def _object(message: dict[str, Any], name: str) -> dict[str, Any]:
    value = message.get(name)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise MappingError([f"{name}: must be a JSON object; got {type(value).__name__}"])
    return value


def _map_body(kind: str, message: dict[str, Any], context: SegmentContext) -> tuple[str, dict[str, Any]]:
    if kind == "identify":
        merged = _merged_context(message, context)
        # RudderStack's SDKs send identify traits in context.traits rather than at the root.
        context_traits = merged.get("traits")
        traits = {**(context_traits if isinstance(context_traits, dict) else {}), **_object(message, "traits")}
        return "identify", {"traits": map_traits(traits, merged)}
    if kind == "group":
        return "identify", _group(message)
    if kind == "alias":
        return "alias", _alias(message, context.anonymous_prefix)
    if kind in ("page", "screen"):
        return "interaction", _view(kind, message)
    return _track(message, context)


def _merged_context(message: dict[str, Any], context: SegmentContext) -> dict[str, Any]:
    """Segment merges a batch's context into each message's; the message's own keys win."""
    own = message.get("context")
    return {**(context.batch_context or {}), **(own if isinstance(own, dict) else {})}


def _group(message: dict[str, Any]) -> dict[str, Any]:
    group_id = _id(message.get("groupId"), "groupId", required=True)
    traits: dict[str, Any] = {"account_id": group_id}
    account = _object(message, "traits")
    if account:
        traits["custom"] = {"account_traits": account}  # the company's traits, not the person's
    return {"traits": traits}


def _alias(message: dict[str, Any], anonymous_prefix: str) -> dict[str, Any]:
    previous = _id(message.get("previousId"), "previousId", required=True)
    assert previous is not None
    # previousId may be an earlier userId or the anonymousId of the same person; we cannot tell
    # which, so both customer ids it could have been filed under are named.
    ids = [previous] if previous.startswith(anonymous_prefix) else [previous, anonymous_prefix + previous]
    return {"previous_ids": ids}


def _view(kind: str, message: dict[str, Any]) -> dict[str, Any]:
    properties = dict(_object(message, "properties"))
    name = message.get("name") or properties.get("name")
    category = message.get("category")
    if category is not None:
        properties.setdefault("category", category)
    if kind == "screen":
        properties["segment_type"] = "screen"
    payload: dict[str, Any] = {"kind": "page_view", "properties": properties}
    if name is not None:
        payload["name"] = name
    return payload


def _track(message: dict[str, Any], context: SegmentContext) -> tuple[str, dict[str, Any]]:
    event = message.get("event")
    if not isinstance(event, str) or not event.strip():
        raise MappingError(["event: required — the name of what happened, e.g. 'Order Completed'"])
    properties = _object(message, "properties")
    key = normalise_event_name(event)
    if key == "order completed":
        return "purchase", _purchase(properties, context.default_currency)
    if key == "order refunded":
        return "refund", _refund(properties, context.default_currency)
    if key in _CONSENT_EVENTS:
        return "consent", _consent(key, properties)
    kind = _INTERACTION_EVENTS.get(key, "other")
    return "interaction", _interaction(kind, event, properties)


def _purchase(properties: dict[str, Any], default_currency: str) -> dict[str, Any]:
    order_id = _id(properties.get("order_id") or properties.get("orderId"), "properties.order_id", required=True)
    items = _products(properties.get("products"))
    amount = _amount(properties, items, "Order Completed", "the amount the customer paid")
    payload: dict[str, Any] = {
        "order_id": order_id,
        "amount": amount,
        "currency": _currency(properties.get("currency"), default_currency),
        "items": items,
    }
    if properties.get("margin") is not None:
        payload["margin"] = properties["margin"]
    return payload


def _refund(properties: dict[str, Any], default_currency: str) -> dict[str, Any]:
    order_id = _id(properties.get("order_id") or properties.get("orderId"), "properties.order_id", required=True)
    items = _products(properties.get("products"))
    payload: dict[str, Any] = {
        "order_id": order_id,
        "amount": _amount(properties, items, "Order Refunded", "the amount refunded"),
        "currency": _currency(properties.get("currency"), default_currency),
    }
    if properties.get("reason") is not None:
        payload["reason"] = properties["reason"]
    return payload


def _amount(properties: dict[str, Any], items: list[dict[str, Any]], event: str, meaning: str) -> Any:
    """Segment's ``total`` (what was paid), else ``revenue``, else the products' sum."""
    for name in ("total", "revenue", "value"):
        value = properties.get(name)
        if value is not None:
            return _decimal_text(value)
    if items and all(item.get("price") is not None for item in items):
        try:
            return str(sum(Decimal(str(item["price"])) * int(item.get("quantity", 1)) for item in items))
        except (InvalidOperation, ValueError, TypeError):
            pass
    raise MappingError([f"properties.total: required for {event} — {meaning} (or revenue, or products with price)"])


def _decimal_text(value: Any) -> Any:
    # Floats go through str() so 19.9 stays 19.9 rather than 19.899999999999998578…
    return str(value) if isinstance(value, float | int) and not isinstance(value, bool) else value


def _currency(value: Any, default: str) -> Any:
    if value is None or value == "":
        return default
    return value.strip().upper() if isinstance(value, str) else value


def _products(value: Any) -> list[dict[str, Any]]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise MappingError([f"properties.products: must be a list of products; got {type(value).__name__}"])
    items = []
    for position, product in enumerate(value):
        if not isinstance(product, dict):
            raise MappingError([f"properties.products.{position}: must be a JSON object"])
        item: dict[str, Any] = {}
        sku = product.get("sku") or product.get("product_id") or product.get("productId")
        if sku is not None:
            item["sku"] = str(sku)
        for name in ("name", "category"):
            if product.get(name) is not None:
                item[name] = product[name]
        if product.get("quantity") is not None:
            item["quantity"] = product["quantity"]
        if product.get("price") is not None:
            item["price"] = _decimal_text(product["price"])
        items.append(item)
    return items


def _consent(key: str, properties: dict[str, Any]) -> dict[str, Any]:
    channel, granted = _CONSENT_EVENTS[key]
    if granted is None:
        granted = properties.get("granted")
        if not isinstance(granted, bool):
            raise MappingError(["properties.granted: required for Consent Updated — true or false"])
    return {
        "channel": properties.get("channel") or channel,
        "purpose": properties.get("purpose") or "marketing",
        "granted": granted,
    }


def _first(properties: dict[str, Any], *names: str) -> Any:
    for name in names:
        if properties.get(name) is not None:
            return properties[name]
    return None


def _interaction(kind: str, event: str, properties: dict[str, Any]) -> dict[str, Any]:
    payload: dict[str, Any] = {"kind": kind, "name": event, "properties": properties}
    lifted = {
        "touch_id": _first(properties, "touch_id"),
        "rating": _first(properties, "rating") if kind == "feedback" else None,
        "text": _first(properties, "text", "comment", "review_body", "description"),
        "complaint_id": _first(properties, "complaint_id", "ticket_id")
        if kind in ("complaint", "complaint_resolved", "support_contact")
        else None,
        "churn_reason": _first(properties, "churn_reason") if kind == "complaint" else None,
        "referred_customer_id": _first(properties, "referred_customer_id", "referred_user_id", "referee_id")
        if kind == "referral"
        else None,
    }
    for name, value in lifted.items():
        if value is not None:
            payload[name] = str(value) if name in ("touch_id", "complaint_id", "referred_customer_id") else value
    return payload


# --- identify traits -------------------------------------------------------------------------

_TRAITS = {
    "name": "name",
    "firstName": "first_name",
    "first_name": "first_name",
    "lastName": "last_name",
    "last_name": "last_name",
    "email": "email",
    "phone": "phone",
    "birthday": "birthday",
    "timezone": "timezone",
    "locale": "locale",
    "address": "address",
    "createdAt": "signup_at",
    "created_at": "signup_at",
    "lunarBirthday": "lunar_birthday",
    "lunar_birthday": "lunar_birthday",
    "communicationStyle": "communication_style",
    "communication_style": "communication_style",
    "accountId": "account_id",
    "account_id": "account_id",
}


def map_traits(traits: dict[str, Any], context: dict[str, Any]) -> dict[str, Any]:
    """Segment's reserved traits onto ours; anything else is kept in ``custom``, never dropped."""
    mapped: dict[str, Any] = {}
    custom: dict[str, Any] = {}
    for name, value in traits.items():
        ours = _TRAITS.get(name)
        if ours is None:
            custom[name] = value
        elif value is not None:
            mapped[ours] = value
    if "timezone" not in mapped and _valid_zone(context.get("timezone")):
        mapped["timezone"] = context["timezone"]
    if "locale" in mapped:
        mapped["locale"] = normalise_locale(mapped["locale"]) or mapped["locale"]
    elif isinstance(context.get("locale"), str) and normalise_locale(context["locale"]):
        mapped["locale"] = normalise_locale(context["locale"])
    if "phone" in mapped and isinstance(mapped["phone"], int | float) and not isinstance(mapped["phone"], bool):
        mapped["phone"] = str(mapped["phone"])
    if isinstance(mapped.get("address"), dict):
        mapped["address"] = {str(k): str(v) for k, v in mapped["address"].items() if v is not None}
    if "birthday" in mapped:
        mapped["birthday"] = birthday_date(mapped["birthday"], mapped.get("timezone"))
    if isinstance(mapped.get("signup_at"), str):
        try:
            mapped["signup_at"] = parse_time(mapped["signup_at"], "traits.createdAt").isoformat()
        except MappingError:
            pass  # left as sent: the contract names the field and what to fix
    if custom:
        mapped["custom"] = custom
    return mapped


def _valid_zone(value: Any) -> bool:
    if not isinstance(value, str) or not value:
        return False
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError):
        return False
    return True


def normalise_locale(value: Any) -> str | None:
    """'zh_CN', 'zh-cn', 'zh-Hans-CN' → 'zh-CN'; 'EN' → 'en'; None if it is no locale at all."""
    if not isinstance(value, str):
        return None
    parts = [part for part in re.split(r"[-_]", value.strip()) if part]
    if not parts or not re.fullmatch(r"[A-Za-z]{2}", parts[0]):
        return None
    language = parts[0].lower()
    region = parts[-1] if len(parts) > 1 and re.fullmatch(r"[A-Za-z]{2}", parts[-1]) else None
    return f"{language}-{region.upper()}" if region else language


def birthday_date(value: Any, timezone: Any) -> Any:
    """A birthday sent as a date-time (JavaScript ``Date``) is a midnight somewhere: read it in the
    customer's own zone when known, or the day would slip for everyone east of UTC."""
    if not isinstance(value, str) or len(value) <= 10:
        return value
    try:
        moment = datetime.fromisoformat(value.strip())
    except ValueError:
        return value
    if moment.tzinfo is not None and _valid_zone(timezone):
        moment = moment.astimezone(ZoneInfo(timezone))
    return moment.date().isoformat()
