"""The fault suite's deterministic workload, the client that sends it, and the outcome it is
judged by.

A seeded generator builds customers (identify + consent, phase A) and their purchases, resent
orders, refunds and complaints (phase B). A clean run of the same workload gives the expected
outcome; a run under faults must end in exactly the same one:

* every customer file's order count and revenue (nothing lost, nothing double-counted);
* the touches of the event-driven plans — welcome, post-purchase follow-up (one per order),
  complaint recovery — with their final status;
* deliveries: every sent touch delivered once (by Message-ID at the SMTP server, by
  Idempotency-Key at the webhook receiver), nothing delivered twice, nothing delivered that is
  not recorded as sent.

Touches of change- and calendar-triggered plans (tier, grade, lifecycle moves) depend on when
population statistics were refitted, i.e. on timing, so only their delivery (once each) is
checked, not their number.
"""

from __future__ import annotations

import asyncio
import itertools
import random
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

import httpx

from tests.faults.channels import FlakySmtp, FlakyWebhook
from tests.faults.stack import INTERNAL, WRITE_KEY, FaultStack

EXACT_PLANS = frozenset({"welcome", "post_purchase_follow_up", "complaint_recovery"})
DELIVERED = frozenset({"sent", "converted"})

# What outreach needs so that the workload's touches are due at once and sent deterministically:
# no holdout, caps that never bind, follow-ups due a second after the purchase, fast dispatch
# and quick recovery of attempts interrupted by a kill.
OUTREACH_ENV = {
    "HUITOU_OUTREACH_HOLDOUT_SHARE": "0",
    "HUITOU_OUTREACH_CAP_MARKETING_PER_DAY": "1000",
    "HUITOU_OUTREACH_CAP_MARKETING_PER_WEEK": "1000",
    "HUITOU_OUTREACH_FOLLOW_UP_DELAY": "PT1S",
    "HUITOU_OUTREACH_DISPATCH_INTERVAL_SECONDS": "0.2",
    "HUITOU_OUTREACH_DISPATCH_LEASE": "PT3S",
    "HUITOU_OUTREACH_RETRY_BASE": "PT0.2S",
    "HUITOU_OUTREACH_RETRY_CAP": "PT2S",
    "HUITOU_OUTREACH_MAX_ATTEMPTS": "30",
    "HUITOU_OUTREACH_SMTP_TIMEOUT_SECONDS": "5",
    "HUITOU_OUTREACH_WEBHOOK_TIMEOUT_SECONDS": "5",
}


def daytime_zone() -> str:
    """A fixed-offset zone where it is early afternoon now: quiet hours and send windows stay open."""
    now = datetime.now(UTC)
    for offset in range(-12, 15):
        name = f"Etc/GMT{'+' if offset <= 0 else '-'}{abs(offset)}" if offset else "UTC"
        if 12 <= now.astimezone(ZoneInfo(name)).hour < 15:
            return name
    raise AssertionError("no zone found")


@dataclass
class Workload:
    seed: int
    customers: list[str]
    phase_a: list[dict[str, Any]]
    phase_b: list[dict[str, Any]]
    orders: dict[str, set[str]]
    complaints: int

    @property
    def size(self) -> int:
        return len(self.phase_a) + len(self.phase_b)

    def chunks(self, n: int) -> list[list[dict[str, Any]]]:
        step = -(-len(self.phase_b) // n)
        return [self.phase_b[i : i + step] for i in range(0, len(self.phase_b), step)]


def build_workload(seed: int = 8, customers: int = 100, orders_per_customer: int = 8) -> Workload:
    rng = random.Random(seed)
    base = datetime.now(UTC).replace(microsecond=0)
    zone = daytime_zone()
    ids = itertools.count()

    def event(type_: str, cid: str, at: datetime, payload: dict[str, Any]) -> dict[str, Any]:
        return {
            "event_id": f"f{seed}-{next(ids)}",
            "type": type_,
            "customer_id": cid,
            "occurred_at": at.isoformat(),
            "payload": payload,
        }

    phase_a: list[dict[str, Any]] = []
    phase_b: list[dict[str, Any]] = []
    orders: dict[str, set[str]] = {}
    complaints = 0
    names = [f"f{seed}-c{n:03d}" for n in range(customers)]
    for n, cid in enumerate(names):
        reach = rng.random()
        traits: dict[str, Any] = {"first_name": f"C{n}", "locale": "en", "timezone": zone}
        channel = None
        if reach < 0.7:
            traits["email"], channel = f"{cid}@example.com", "email"
        elif reach < 0.9:
            traits["phone"], channel = f"+86138{n:08d}", "sms"
        at = base - timedelta(hours=3) + timedelta(seconds=n)
        phase_a.append(event("identify", cid, at, {"traits": traits}))
        if channel and rng.random() < 0.6:
            consent = {"channel": channel, "purpose": "marketing", "granted": True}
            phase_a.append(event("consent", cid, at + timedelta(seconds=1), consent))
        orders[cid] = set()
        for k in range(rng.randint(1, 2 * orders_per_customer - 1)):
            order_id = f"{cid}-o{k}"
            amount = Decimal(rng.randint(1000, 50000)) / 100
            when = base - timedelta(hours=2) + timedelta(minutes=k, seconds=n)
            purchase = {"order_id": order_id, "amount": str(amount), "currency": "CNY",
                        "items": [{"sku": f"sku-{rng.randint(1, 9)}", "category": "tea", "quantity": 1}]}  # fmt: skip
            phase_b.append(event("purchase", cid, when, purchase))
            orders[cid].add(order_id)
            if rng.random() < 0.1:  # the shop resends the order under a new event id
                phase_b.append(event("purchase", cid, when, purchase))
            if rng.random() < 0.08:
                refund = {"order_id": order_id, "amount": str((amount / 2).quantize(Decimal("0.01")))}
                phase_b.append(event("refund", cid, when + timedelta(minutes=30), refund))
        if rng.random() < 0.2:
            complaints += 1
            complaint = {"kind": "complaint", "rating": 1, "complaint_id": f"{cid}-k", "text": "the tea was stale"}
            phase_b.append(event("interaction", cid, base - timedelta(hours=1), complaint))
    rng.shuffle(phase_b)
    return Workload(seed, names, phase_a, phase_b, orders, complaints)


@dataclass
class Sender:
    """A shop's client: posts batches to ingest and retries the same batch (same event ids) on
    503, 429, 5xx and connection errors until it is answered 202."""

    url: str
    batch: int = 20
    retry_cap: float = 1.0
    acknowledged: set[str] = field(default_factory=set)
    statuses: Counter[str] = field(default_factory=Counter)
    retries: int = 0
    answered_202_while: list[tuple[float, int]] = field(default_factory=list)

    async def send(self, events: Sequence[dict[str, Any]], pace: float = 0.0, concurrency: int = 2) -> None:
        batches = [list(events[i : i + self.batch]) for i in range(0, len(events), self.batch)]
        queue: asyncio.Queue[list[dict[str, Any]]] = asyncio.Queue()
        for b in batches:
            queue.put_nowait(b)
        async with httpx.AsyncClient(auth=(WRITE_KEY, ""), timeout=30) as client:
            await asyncio.gather(*(self._worker(client, queue, pace) for _ in range(concurrency)))

    async def _worker(self, client: httpx.AsyncClient, queue: asyncio.Queue[list[dict[str, Any]]], pace: float) -> None:
        while not queue.empty():
            batch = queue.get_nowait()
            await self._post_until_stored(client, batch)
            if pace:
                await asyncio.sleep(pace)

    async def _post_until_stored(self, client: httpx.AsyncClient, batch: list[dict[str, Any]]) -> None:
        deadline = time.monotonic() + 300
        while True:
            assert time.monotonic() < deadline, f"ingest did not take a batch within 300 s: {self.statuses}"
            try:
                response = await client.post(self.url + "/v1/events", json=batch)
            except httpx.HTTPError as error:
                self.statuses[type(error).__name__] += 1
                self.retries += 1
                await asyncio.sleep(0.2)
                continue
            self.statuses[str(response.status_code)] += 1
            if response.status_code == 202:
                body = response.json()
                assert not body["rejected"], body
                taken = set(body["accepted"]) | set(body["duplicates"])
                assert taken == {e["event_id"] for e in batch}, body
                self.acknowledged |= taken
                return
            assert response.status_code in (429, 503) or response.status_code >= 500, response.text
            self.retries += 1
            retry_after = float(response.headers.get("retry-after", "1"))
            await asyncio.sleep(min(retry_after, self.retry_cap))


@dataclass
class Outcome:
    files: dict[str, tuple[int, str]]
    touches: dict[str, dict[str, Any]]
    mail: Counter[str]  # touch id → deliveries at the SMTP server
    hooks: Counter[str]  # touch id (Idempotency-Key) → deliveries at the webhook receiver

    def exact(self) -> dict[str, Any]:
        """The part of the outcome a faulty run must reproduce exactly."""
        return {
            "files": self.files,
            "touches": {t: (v["customer_id"], v["plan"], v["status"]) for t, v in self.touches.items()
                        if v["plan"] in EXACT_PLANS},
        }  # fmt: skip

    def delivery_problems(self) -> list[str]:
        """Deliveries that are not exactly one per sent touch."""
        problems = []
        for tid, n in {**self.mail, **self.hooks}.items():
            if n > 1:
                problems.append(f"touch {tid} delivered {n} times")
            touch = self.touches.get(tid)
            if touch is None or touch["status"] not in DELIVERED:
                problems.append(f"touch {tid} delivered but recorded as {touch and touch['status']}")
        for tid, touch in self.touches.items():
            if touch["status"] not in DELIVERED:
                continue
            delivered = self.mail[tid] if touch["channel"] == "email" else self.hooks[tid]
            if delivered == 0 and not (touch["reason"] or "").startswith("unconfirmed"):
                problems.append(f"touch {tid} ({touch['plan']}) recorded as sent but never delivered")
        return problems

    def figures(self) -> dict[str, int]:
        statuses = Counter(t["status"] for t in self.touches.values())
        return {
            "customers": len(self.files),
            "orders": sum(n for n, _ in self.files.values()),
            "touches": len(self.touches),
            "sent": statuses["sent"] + statuses["converted"],
            "emails": sum(self.mail.values()),
            "webhooks": sum(self.hooks.values()),
            "unconfirmed": sum(1 for t in self.touches.values() if (t["reason"] or "").startswith("unconfirmed")),
        }


async def outcome(stack: FaultStack, smtp: FlakySmtp, hook: FlakyWebhook | None = None) -> Outcome:
    files: dict[str, tuple[int, str]] = {}
    touches: dict[str, dict[str, Any]] = {}
    async with httpx.AsyncClient(headers=INTERNAL, timeout=30) as client:
        offset: int | None = 0
        while offset is not None:
            params = {"limit": 500, "offset": offset}
            page = await client.get(stack.url("scoring") + "/internal/v1/customers", params=params)
            page.raise_for_status()
            body = page.json()
            for item in body["items"]:
                files[item["customer_id"]] = (item["order_count"], str(Decimal(str(item["revenue"])).normalize()))
            offset = body["next_offset"]
        offset = 0
        while True:
            params = {"limit": 500, "offset": offset}
            page = await client.get(stack.url("outreach") + "/internal/v1/touches", params=params)
            page.raise_for_status()
            body = page.json()
            for item in body["items"]:
                touches[item["touch_id"]] = item
            offset += len(body["items"])
            if not body["items"] or offset >= body["total"]:
                break
    mail = Counter({tid.strip("<>").split("@")[0]: n for tid, n in smtp.message_ids().items()})
    hooks = Counter(dict(hook.delivered)) if hook else Counter()
    return Outcome(files, touches, mail, hooks)


def settled_touches(touches: dict[str, dict[str, Any]]) -> bool:
    """No touch is mid-send or due and waiting for the dispatcher."""
    now = datetime.now(UTC)
    for touch in touches.values():
        if touch["status"] == "sending":
            return False
        if touch["status"] == "scheduled":
            due = datetime.fromisoformat(touch["due_at"].replace("Z", "+00:00"))
            if due <= now:
                return False
    return True


async def quiescent(stack: FaultStack) -> bool:
    backlog = await stack.backlog()
    return all(v is not None and v["lag"] == 0 and v["outbox"] == 0 for v in backlog.values())


async def settle(
    stack: FaultStack,
    smtp: FlakySmtp,
    hook: FlakyWebhook | None = None,
    *,
    expected: Outcome | None = None,
    timeout: float = 300,
    stable_for: float = 4.0,
) -> Outcome:
    """Wait until nothing is in flight (consumer lag 0, outbox empty, no due touch) and the
    outcome stopped changing (or, given ``expected``, matches it); then look once more."""
    deadline = time.monotonic() + timeout
    last: Outcome | None = None
    stable_since = time.monotonic()
    while True:
        stack.assert_alive()
        current = await outcome(stack, smtp, hook)
        calm = await quiescent(stack) and settled_touches(current.touches)
        if calm and expected is not None and current.exact() == expected.exact():
            await asyncio.sleep(stable_for)  # a late duplicate would show up now
            return await outcome(stack, smtp, hook)
        if last is None or not calm or _fingerprint(current) != _fingerprint(last):
            stable_since = time.monotonic()
        elif expected is None and time.monotonic() - stable_since >= stable_for:
            return current
        last = current
        if time.monotonic() > deadline:
            return current  # the caller's comparison says what differs
        await asyncio.sleep(1.0)


def _fingerprint(o: Outcome) -> Any:
    return (o.exact(), {t: v["status"] for t, v in o.touches.items()}, dict(o.mail), dict(o.hooks))


def differences(expected: Outcome, actual: Outcome) -> list[str]:
    """What a faulty run got wrong, in words."""
    problems = []
    want, got = expected.exact(), actual.exact()
    for cid, file in want["files"].items():
        if cid not in got["files"]:
            problems.append(f"customer file {cid} lost")
        elif got["files"][cid] != file:
            problems.append(f"customer {cid}: (orders, revenue) {got['files'][cid]} instead of {file}")
    problems += [f"unexpected customer file {c}" for c in set(got["files"]) - set(want["files"])]
    for tid, touch in want["touches"].items():
        if tid not in got["touches"]:
            problems.append(f"touch {touch} lost")
        elif got["touches"][tid] != touch:
            problems.append(f"touch {tid}: {got['touches'][tid]} instead of {touch}")
    problems += [f"unexpected touch {got['touches'][t]}" for t in set(got["touches"]) - set(want["touches"])]
    return problems + actual.delivery_problems()


def expected_orders(workload: Workload) -> dict[str, int]:
    return {cid: len(orders) for cid, orders in workload.orders.items()}
