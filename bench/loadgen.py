"""A load generator for the whole pipeline: a population of customers with purchase rhythms,
identities (birthdays, locale, time zone, consent), product views, complaints and refunds, sent to
ingest's native ``POST /v1/events`` in batches at a target rate (or flat out).

Every event carries a trace id of its own, so what it causes downstream — the ``customer.updated``
scoring publishes and the touches outreach schedules — can be traced back to the moment it was sent.

    population = Population.generate(5_000, seed=7)
    traffic = Traffic(population, seed=7)
    events = traffic.take(10_000)          # native intake events (dicts), in sending order
"""

from __future__ import annotations

import asyncio
import math
import random
import secrets
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

import httpx

ZONES = ("Asia/Shanghai", "Asia/Shanghai", "Asia/Shanghai", "Asia/Hong_Kong", "Europe/Berlin", "America/New_York")
CATEGORIES = ("tea", "teaware", "snacks", "gifts", "books")


@dataclass
class Customer:
    customer_id: str
    locale: str
    timezone: str
    birthday: date
    marketing_consent: bool
    days_between_orders: float
    """Mean of the customer's purchase rhythm (exponential gaps around it)."""
    basket: float
    """Typical order amount; orders vary log-normally around it."""
    favourite: str
    known: bool = False
    orders: list[str] = field(default_factory=list)


@dataclass
class Population:
    customers: list[Customer]

    @classmethod
    def generate(cls, size: int, seed: int = 7, prefix: str = "load") -> Population:
        rng = random.Random(seed)
        run = secrets.token_hex(3)  # fresh ids per run: earlier runs' files never answer for this one
        customers = []
        for n in range(size):
            chinese = rng.random() < 0.7
            customers.append(
                Customer(
                    customer_id=f"{prefix}-{run}-{n:06d}",
                    locale="zh-CN" if chinese else "en",
                    timezone=rng.choice(ZONES[:4] if chinese else ZONES[3:]),
                    birthday=date(rng.randint(1950, 2005), rng.randint(1, 12), rng.randint(1, 28)),
                    marketing_consent=rng.random() < 0.8,
                    # Heavy buyers are few: gaps from a gamma with a long tail (days).
                    days_between_orders=max(2.0, rng.gammavariate(1.5, 30)),
                    basket=math.exp(rng.gauss(math.log(120), 0.6)),
                    favourite=rng.choice(CATEGORIES),
                )
            )
        return cls(customers)


class Traffic:
    """The population's events, drawn at random in proportion to how often each customer acts.

    A customer's first event identifies them (traits, then consent), as a shop's sign-up would;
    after that: product views (most frequent), purchases at the customer's rhythm, now and then a
    complaint, feedback, or a refund of an earlier order.
    """

    def __init__(self, population: Population, seed: int = 7) -> None:
        self._rng = random.Random(seed + 1)
        self._customers = population.customers
        weights = [1 / c.days_between_orders for c in self._customers]
        total = sum(weights)
        self._cumulative = list(_accumulate(w / total for w in weights))
        self._serial = 0

    def take(self, count: int) -> list[dict[str, Any]]:
        events: list[dict[str, Any]] = []
        while len(events) < count:
            events.extend(self._next_for(self._pick()))
        return events[:count]

    def _pick(self) -> Customer:
        return self._customers[_bisect(self._cumulative, self._rng.random())]

    def _next_for(self, customer: Customer) -> list[dict[str, Any]]:
        now = datetime.now(UTC)
        if not customer.known:
            customer.known = True
            return [self._identify(customer, now), self._consent(customer, now)]
        roll = self._rng.random()
        if roll < 0.55:
            return [self._interaction(customer, now, "product_viewed")]
        if roll < 0.93 or not customer.orders:
            return [self._purchase(customer, now)]
        if roll < 0.96:
            return [self._interaction(customer, now, "complaint")]
        if roll < 0.98:
            return [self._interaction(customer, now, "feedback")]
        return [self._refund(customer, now)]

    def _envelope(self, customer: Customer, kind: str, at: datetime, payload: dict[str, Any]) -> dict[str, Any]:
        self._serial += 1
        return {
            "event_id": f"{customer.customer_id}-{self._serial}",
            "type": kind,
            "customer_id": customer.customer_id,
            "occurred_at": at.isoformat(),
            "trace_id": secrets.token_hex(16),
            "payload": payload,
        }

    def _identify(self, customer: Customer, at: datetime) -> dict[str, Any]:
        traits = {
            "first_name": f"Cust{customer.customer_id[-4:]}",
            "email": f"{customer.customer_id}@example.com",
            "birthday": customer.birthday.isoformat(),
            "locale": customer.locale,
            "timezone": customer.timezone,
            "signup_at": (at - timedelta(days=self._rng.randint(0, 900))).isoformat(),
        }
        return self._envelope(customer, "identify", at, {"traits": traits})

    def _consent(self, customer: Customer, at: datetime) -> dict[str, Any]:
        payload = {"channel": "email", "purpose": "marketing", "granted": customer.marketing_consent}
        return self._envelope(customer, "consent", at, payload)

    def _purchase(self, customer: Customer, at: datetime) -> dict[str, Any]:
        order_id = f"o-{customer.customer_id}-{len(customer.orders) + 1}"
        customer.orders.append(order_id)
        amount = round(customer.basket * math.exp(self._rng.gauss(0, 0.3)), 2)
        category = customer.favourite if self._rng.random() < 0.7 else self._rng.choice(CATEGORIES)
        items = [{"sku": f"{category}-{self._rng.randint(1, 40)}", "category": category, "quantity": 1}]
        payload = {"order_id": order_id, "amount": f"{amount:.2f}", "currency": "CNY", "items": items}
        return self._envelope(customer, "purchase", at, payload)

    def _refund(self, customer: Customer, at: datetime) -> dict[str, Any]:
        payload = {"order_id": self._rng.choice(customer.orders), "amount": "10.00", "currency": "CNY"}
        return self._envelope(customer, "refund", at, payload)

    def _interaction(self, customer: Customer, at: datetime, kind: str) -> dict[str, Any]:
        payload: dict[str, Any] = {"kind": kind}
        if kind == "complaint":
            payload |= {"complaint_id": f"c-{self._serial}", "text": "The parcel arrived damaged."}
        elif kind == "feedback":
            payload |= {"rating": self._rng.randint(1, 5)}
        else:
            payload |= {"properties": {"sku": f"{customer.favourite}-{self._rng.randint(1, 40)}"}}
        return self._envelope(customer, "interaction", at, payload)


def _accumulate(values: Iterator[float]) -> Iterator[float]:
    total = 0.0
    for value in values:
        total += value
        yield total


def _bisect(cumulative: list[float], x: float) -> int:
    low, high = 0, len(cumulative) - 1
    while low < high:
        middle = (low + high) // 2
        if cumulative[middle] < x:
            low = middle + 1
        else:
            high = middle
    return low


@dataclass
class Sent:
    """When each event was sent (perf_counter seconds, by trace id) and what ingest answered."""

    at: dict[str, float] = field(default_factory=dict)
    accepted: int = 0
    failed: int = 0
    first: float = 0.0
    last: float = 0.0


async def drive(
    ingest_url: str,
    write_key: str,
    events: list[dict[str, Any]],
    *,
    rate: float | None,
    batch: int = 100,
    concurrency: int = 4,
) -> Sent:
    """Post ``events`` to ``/v1/events`` in batches, paced to ``rate`` events/s (None: flat out).

    A batch's events are stamped as sent just before its request starts: latency downstream is
    then measured from intake, including ingest's own time and the broker acknowledgement.
    """
    sent = Sent()
    chunks = [events[i : i + batch] for i in range(0, len(events), batch)]
    queue: asyncio.Queue[list[dict[str, Any]] | None] = asyncio.Queue(maxsize=concurrency * 2)
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)

    async with httpx.AsyncClient(base_url=ingest_url, auth=(write_key, ""), timeout=30, limits=limits) as client:

        async def worker() -> None:
            while (chunk := await queue.get()) is not None:
                stamp = time.perf_counter()
                for event in chunk:
                    sent.at[event["trace_id"]] = stamp
                for attempt in range(5):
                    response = await client.post("/v1/events", json=chunk)
                    if response.status_code != 503:
                        break
                    await asyncio.sleep(0.2 * 2**attempt)  # broker busy: ingest asks for a retry
                if response.status_code == 202:
                    sent.accepted += len(response.json()["accepted"])
                else:
                    sent.failed += len(chunk)

        workers = [asyncio.create_task(worker()) for _ in range(concurrency)]
        sent.first = time.perf_counter()
        for index, chunk in enumerate(chunks):
            if rate:
                # Open-loop pacing: batch n leaves at n·batch/rate whatever the answers took, so a
                # slow pipeline shows up as latency instead of silently lowering the offered load.
                delay = sent.first + index * batch / rate - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
            await queue.put(chunk)
        for _ in workers:
            await queue.put(None)
        await asyncio.gather(*workers)
        sent.last = time.perf_counter()
    return sent
