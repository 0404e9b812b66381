"""Calls from the gateway to the other services' internal APIs, with a clear 502/504 when one is
down or slow — never a hang.

Every attempt is bounded twice: by httpx's per-operation timeouts and by an overall deadline of
``timeout`` seconds, so a server that trickles bytes cannot hold a caller. Idempotent calls
(GET) are retried on transport errors, timeouts and 502/503/504; writes are retried only when
the connection could not even be opened (nothing was sent, so nothing can be applied twice).
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx
from prometheus_client import CollectorRegistry, Counter

from shared.service import INTERNAL_TOKEN_HEADER

log = logging.getLogger("huitou.gateway")

QueryParams = Sequence[tuple[str, str]] | Mapping[str, str] | None
_RETRYABLE_STATUS = {502, 503, 504}
# What a FastAPI service answers for a path or method it does not serve (as opposed to a domain
# 404 such as "no customer file for 'c-1'"): the gateway and that service disagree on versions.
_ROUTING_MISSES = {"Not Found", "Method Not Allowed"}


class DownstreamFailure(Exception):
    """A service could not give an answer the caller can act on (502 or 504)."""

    status = 502

    def __init__(self, service: str, message: str) -> None:
        super().__init__(message)
        self.service = service
        self.message = message


class ServiceUnavailable(DownstreamFailure):
    status = 502


class ServiceTimeout(DownstreamFailure):
    status = 504


class ServiceRefused(Exception):
    """A service answered 4xx: the caller's mistake, passed through as the service phrased it."""

    def __init__(self, service: str, status: int, body: Any) -> None:
        super().__init__(f"{service} answered {status}")
        self.service = service
        self.status = status
        self.body = body


@dataclass(frozen=True)
class Reply:
    """A service's answer below 500."""

    service: str
    status: int
    content: bytes
    content_type: str
    headers: dict[str, str] = field(default_factory=dict)

    @property
    def is_json(self) -> bool:
        return self.content_type.split(";")[0].strip().endswith("json")

    def json(self) -> Any:
        if not self.content:
            return None
        try:
            return json.loads(self.content)
        except ValueError:
            return None

    def ok(self) -> Any:
        """The JSON body of a 2xx answer; a 4xx becomes :class:`ServiceRefused`."""
        if self.status >= 400:
            raise ServiceRefused(self.service, self.status, self.error_body())
        return self.json()

    def error_body(self) -> Any:
        body = self.json()
        if body is None:
            return {"error": self.content.decode(errors="replace")[:500] or f"{self.service} answered {self.status}"}
        return body


def call_counter(registry: CollectorRegistry) -> Counter:
    """``huitou_gateway_downstream_calls_total``: what became of the gateway's calls, per service."""
    return Counter(
        "huitou_gateway_downstream_calls_total",
        "Calls from the gateway to other services, by outcome",
        ["service", "method", "outcome"],
        registry=registry,
    )


class Downstream:
    def __init__(
        self,
        client: httpx.AsyncClient,
        urls: dict[str, str],
        token: str,
        retries: int,
        *,
        timeout: float = 5.0,
        slow_timeout: float = 120.0,
        calls: Counter | None = None,
    ) -> None:
        self._client = client
        self._urls = {name: url.rstrip("/") for name, url in urls.items()}
        self._headers = {INTERNAL_TOKEN_HEADER: token}
        self._retries = retries
        self._timeout = timeout
        self._slow_timeout = slow_timeout
        self._calls = calls or call_counter(CollectorRegistry())

    @property
    def services(self) -> tuple[str, ...]:
        return tuple(self._urls)

    async def get(self, service: str, path: str, params: QueryParams = None) -> Any:
        """GET a JSON resource; 4xx becomes :class:`ServiceRefused`."""
        return (await self.call("GET", service, path, params=params)).ok()

    async def call(
        self,
        method: str,
        service: str,
        path: str,
        *,
        params: QueryParams = None,
        body: Any = None,
        idempotent: bool | None = None,
        headers: Mapping[str, str] | None = None,
        slow: bool = False,
    ) -> Reply:
        """One call with retries where safe. Answers below 500 are returned as they are.

        ``slow``: the service works before it answers (a refit); allow the slow-call timeout.
        """
        idempotent = method in {"GET", "HEAD"} if idempotent is None else idempotent
        deadline = self._slow_timeout if slow else self._timeout
        url = self._urls[service] + path
        content = None if body is None else json.dumps(body, separators=(",", ":")).encode()
        send_headers = {**self._headers, **(headers or {})}
        if content is not None:
            send_headers["Content-Type"] = "application/json"
        for attempt in range(self._retries + 1):
            last = attempt >= self._retries
            try:
                async with asyncio.timeout(deadline):
                    response = await self._client.request(
                        method,
                        url,
                        params=_query(params),
                        content=content,
                        headers=send_headers,
                        timeout=httpx.Timeout(deadline),
                    )
            except (httpx.ConnectError, httpx.ConnectTimeout) as error:
                # Nothing reached the service, so even a write may be tried again.
                if not last:
                    await asyncio.sleep(0.1 * (attempt + 1))
                    continue
                self._count(service, method, "unreachable")
                log.warning("%s unreachable: %r", service, error)
                raise ServiceUnavailable(service, f"{service} is unavailable; try again shortly") from None
            except (httpx.TimeoutException, TimeoutError):
                if idempotent and not last:
                    continue
                self._count(service, method, "timeout")
                raise ServiceTimeout(service, self._timeout_message(service, idempotent, deadline)) from None
            except httpx.TransportError as error:
                if idempotent and not last:
                    await asyncio.sleep(0.1 * (attempt + 1))
                    continue
                self._count(service, method, "unreachable")
                log.warning("%s failed mid-call: %r", service, error)
                raise ServiceUnavailable(service, f"{service} is unavailable; try again shortly") from None
            if response.status_code in _RETRYABLE_STATUS and idempotent and not last:
                await asyncio.sleep(0.1 * (attempt + 1))
                continue
            return self._reply(service, method, path, response)
        raise AssertionError("unreachable")

    def _reply(self, service: str, method: str, path: str, response: httpx.Response) -> Reply:
        status = response.status_code
        if status >= 500:
            self._count(service, method, "failed")
            raise ServiceUnavailable(service, f"{service} failed ({status}){_reason(response)}; try again shortly")
        if status == 401:
            # The caller was authenticated by the gateway; the gateway itself was refused.
            self._count(service, method, "misconfigured")
            log.error("%s refused the gateway's internal token", service)
            raise ServiceUnavailable(
                service, f"{service} refused the gateway; HUITOU_INTERNAL_TOKEN must be the same on both"
            )
        reply = Reply(
            service,
            status,
            response.content,
            response.headers.get("content-type", "application/json"),
            {k: v for k, v in response.headers.items() if k.lower() == "retry-after"},
        )
        if status in {404, 405} and _is_routing_miss(reply):
            self._count(service, method, "missing_route")
            raise ServiceUnavailable(
                service, f"{service} does not serve {method} {path}; deploy matching versions of gateway and {service}"
            )
        self._count(service, method, "ok" if status < 400 else "refused")
        return reply

    def _count(self, service: str, method: str, outcome: str) -> None:
        self._calls.labels(service, method, outcome).inc()

    @staticmethod
    def _timeout_message(service: str, idempotent: bool, deadline: float) -> str:
        if idempotent:
            return f"{service} did not answer in time; try again shortly"
        return (
            f"{service} did not answer within {deadline:g}s; the change may or may not have been applied, "
            "check before trying again"
        )


def _reason(response: httpx.Response) -> str:
    """A service's own account of a deliberate 502/503/504 (e.g. its mail relay refused); a 500 is
    a bug whose details stay in that service's log."""
    if response.status_code == 500:
        return ""
    try:
        body = response.json()
    except ValueError:
        return ""
    message = body.get("error") if isinstance(body, dict) else None
    return f": {message[:300]}" if isinstance(message, str) and message else ""


def _query(params: QueryParams) -> httpx.QueryParams | None:
    if not params:
        return None
    return httpx.QueryParams(dict(params) if isinstance(params, Mapping) else list(params))


def _is_routing_miss(reply: Reply) -> bool:
    body = reply.json()
    if not isinstance(body, dict):
        return False
    message = body.get("error", body.get("detail"))
    return isinstance(message, str) and message in _ROUTING_MISSES and len(body) == 1
