"""Per-key rate limiting: a token bucket per API key (or client address), in this process's memory.

Each gateway replica keeps its own buckets, so behind N replicas a key may send up to N times
the configured rate; that is the accepted price of keeping the gateway stateless.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass


@dataclass
class _Bucket:
    tokens: float
    updated: float


@dataclass(frozen=True)
class Verdict:
    allowed: bool
    remaining: int
    retry_after: float  # seconds until one token is available; 0 when allowed

    @property
    def retry_after_header(self) -> str:
        return str(max(1, math.ceil(self.retry_after)))


class RateLimiter:
    """``rate`` tokens per second refill a bucket of ``burst``; each request takes one."""

    def __init__(
        self, rate: float, burst: int, *, clock: Callable[[], float] = time.monotonic, max_buckets: int = 100_000
    ) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError("rate must be positive and burst at least 1")
        self.rate = rate
        self.burst = burst
        self._clock = clock
        self._buckets: dict[str, _Bucket] = {}
        self._max_buckets = max_buckets

    def take(self, who: str) -> Verdict:
        now = self._clock()
        bucket = self._buckets.get(who)
        if bucket is None:
            if len(self._buckets) >= self._max_buckets:
                self._forget_full_buckets(now)
            bucket = self._buckets[who] = _Bucket(float(self.burst), now)
        bucket.tokens = min(float(self.burst), bucket.tokens + (now - bucket.updated) * self.rate)
        bucket.updated = now
        if bucket.tokens >= 1:
            bucket.tokens -= 1
            return Verdict(True, int(bucket.tokens), 0.0)
        return Verdict(False, 0, (1 - bucket.tokens) / self.rate)

    def _forget_full_buckets(self, now: float) -> None:
        """A bucket that has refilled completely holds no information; drop those to bound memory."""
        full_after = self.burst / self.rate
        self._buckets = {k: b for k, b in self._buckets.items() if now - b.updated < full_after}
        if len(self._buckets) >= self._max_buckets:
            self._buckets.clear()
