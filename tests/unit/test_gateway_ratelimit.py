"""The per-key token bucket: bursts up to the bucket size, then the sustained rate."""

from __future__ import annotations

import pytest

from services.gateway.ratelimit import RateLimiter


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_burst_passes_then_the_bucket_refuses_with_the_wait() -> None:
    clock = Clock()
    limiter = RateLimiter(rate=2, burst=3, clock=clock)
    assert [limiter.take("k").allowed for _ in range(4)] == [True, True, True, False]
    refused = limiter.take("k")
    assert refused.retry_after == pytest.approx(0.5)
    assert refused.retry_after_header == "1"


def test_tokens_refill_at_the_rate_and_never_beyond_the_burst() -> None:
    clock = Clock()
    limiter = RateLimiter(rate=2, burst=3, clock=clock)
    for _ in range(3):
        limiter.take("k")
    clock.now += 0.5  # one token back
    assert limiter.take("k").allowed
    assert not limiter.take("k").allowed
    clock.now += 3600
    assert limiter.take("k").remaining == 2  # refilled to 3, took one


def test_each_caller_has_its_own_bucket() -> None:
    limiter = RateLimiter(rate=1, burst=1, clock=Clock())
    assert limiter.take("a").allowed and not limiter.take("a").allowed
    assert limiter.take("b").allowed


def test_retry_after_rounds_up_to_whole_seconds() -> None:
    limiter = RateLimiter(rate=0.25, burst=1, clock=Clock())
    limiter.take("k")
    assert limiter.take("k").retry_after_header == "4"


def test_memory_stays_bounded_by_forgetting_full_buckets() -> None:
    clock = Clock()
    limiter = RateLimiter(rate=10, burst=1, clock=clock, max_buckets=3)
    for who in "abc":
        limiter.take(who)
    clock.now += 1  # every bucket has refilled: nothing to remember
    limiter.take("d")
    assert len(limiter._buckets) == 1


def test_nonsense_limits_are_refused() -> None:
    with pytest.raises(ValueError):
        RateLimiter(rate=0, burst=1)
    with pytest.raises(ValueError):
        RateLimiter(rate=1, burst=0)
