"""HMAC signatures (pure): webhook requests and unsubscribe tokens.

* Webhooks carry ``X-Huitou-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256 of "t.body">`` —
  the Stripe scheme, so a receiver can reject replays older than its tolerance.
* Unsubscribe tokens are ``<base64url payload>.<base64url HMAC>``; the payload names the
  customer, channel and purpose, so the link works without a login and cannot be forged.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from dataclasses import dataclass

SIGNATURE_HEADER = "X-Huitou-Signature"
IDEMPOTENCY_HEADER = "Idempotency-Key"


def webhook_signature(secret: str, body: bytes, timestamp: int) -> str:
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={mac}"


def verify_webhook_signature(secret: str, body: bytes, header: str, *, now: int, tolerance: int = 300) -> bool:
    """What a receiver does: recompute, compare in constant time, refuse stale timestamps."""
    try:
        parts = dict(item.split("=", 1) for item in header.split(","))
        timestamp = int(parts["t"])
        given = parts["v1"]
    except (KeyError, ValueError):
        return False
    if abs(now - timestamp) > tolerance:
        return False
    expected = webhook_signature(secret, body, timestamp).split("v1=", 1)[1]
    return hmac.compare_digest(expected, given)


@dataclass(frozen=True)
class UnsubscribeClaim:
    customer_id: str
    channel: str
    purpose: str


class BadToken(ValueError):
    """An unsubscribe token that was altered, truncated or signed with another secret."""


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def unsubscribe_token(secret: str, claim: UnsubscribeClaim) -> str:
    payload = json.dumps([claim.customer_id, claim.channel, claim.purpose], separators=(",", ":")).encode()
    mac = hmac.new(secret.encode(), b"unsubscribe:" + payload, hashlib.sha256).digest()[:16]
    return f"{_b64(payload)}.{_b64(mac)}"


def read_unsubscribe_token(secret: str, token: str) -> UnsubscribeClaim:
    try:
        encoded, given = token.split(".", 1)
        payload = _unb64(encoded)
        mac = _unb64(given)
    except (ValueError, TypeError):
        raise BadToken("malformed unsubscribe token") from None
    expected = hmac.new(secret.encode(), b"unsubscribe:" + payload, hashlib.sha256).digest()[:16]
    if not hmac.compare_digest(expected, mac):
        raise BadToken("unsubscribe token signature does not match")
    try:
        customer_id, channel, purpose = json.loads(payload)
    except (ValueError, TypeError):
        raise BadToken("malformed unsubscribe token") from None
    return UnsubscribeClaim(str(customer_id), str(channel), str(purpose))
