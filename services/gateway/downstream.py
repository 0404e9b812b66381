"""Calls from the gateway to the other services' internal APIs, with a clear 502/504 when one is
down or slow — never a hang."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import httpx
from fastapi import HTTPException

from shared.service import INTERNAL_TOKEN_HEADER

log = logging.getLogger("huitou.gateway")


class Downstream:
    def __init__(self, client: httpx.AsyncClient, urls: dict[str, str], token: str, retries: int) -> None:
        self._client = client
        self._urls = urls
        self._headers = {INTERNAL_TOKEN_HEADER: token}
        self._retries = retries

    async def get(self, service: str, path: str, params: dict[str, Any] | None = None) -> Any:
        """GET is idempotent, so connection failures and timeouts are retried before giving up."""
        url = self._urls[service] + path
        for attempt in range(self._retries + 1):
            try:
                response = await self._client.get(url, params=params, headers=self._headers)
            except httpx.TimeoutException:
                if attempt < self._retries:
                    continue
                raise HTTPException(504, {"error": f"{service} did not answer in time; try again shortly"}) from None
            except httpx.TransportError as error:
                if attempt < self._retries:
                    await asyncio.sleep(0.2 * (attempt + 1))
                    continue
                log.warning("%s unreachable: %r", service, error)
                raise HTTPException(502, {"error": f"{service} is unavailable; try again shortly"}) from None
            return self._unwrap(service, response)
        raise AssertionError("unreachable")

    @staticmethod
    def _unwrap(service: str, response: httpx.Response) -> Any:
        if response.status_code >= 500:
            raise HTTPException(502, {"error": f"{service} failed ({response.status_code}); try again shortly"})
        if response.status_code >= 400:
            try:
                body = response.json()
            except ValueError:
                body = {"error": response.text[:500]}
            raise HTTPException(response.status_code, body)
        return response.json()
