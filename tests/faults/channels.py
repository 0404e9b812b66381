"""Delivery targets for the fault suite: an SMTP server and a webhook receiver that can fail,
be slow, drop connections or flap on a seeded schedule — and that record exactly what they
delivered, so a test can count deliveries per touch.

Both run on their own thread and event loop, so the test's own loop never slows them down.
"""

from __future__ import annotations

import asyncio
import contextlib
import email
import email.policy
import json
import random
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from aiosmtpd.controller import Controller

from services.outreach.settings import DEV_WEBHOOK_SECRET
from services.outreach.signing import IDEMPOTENCY_HEADER, SIGNATURE_HEADER, verify_webhook_signature
from tests.support import free_port

OK, FAIL, SLOW, TOO_SLOW, DROP = "ok", "fail", "slow", "too_slow", "drop"


@dataclass
class Schedule:
    """What the target does with its next transaction: a seeded draw, plus flapping windows
    (``down_for`` seconds of refusing everything every ``period`` seconds)."""

    seed: int = 0
    weights: dict[str, float] = field(default_factory=lambda: {OK: 1.0})
    slow_seconds: float = 0.5
    too_slow_seconds: float = 3.0
    period: float = 0.0
    down_for: float = 0.0
    started: float = field(default_factory=time.monotonic)
    drawn: Counter[str] = field(default_factory=Counter)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        self._random = random.Random(self.seed)

    def next(self) -> str:
        with self._lock:
            if self.period and (time.monotonic() - self.started) % self.period < self.down_for:
                mode = "down"
            else:
                modes, weights = zip(*self.weights.items(), strict=True)
                mode = self._random.choices(modes, weights)[0]
            self.drawn[mode] += 1
            return mode


class FlakySmtp:
    """aiosmtpd server: 451 on DATA (``fail``/``down``), a slow reply, a message queued for
    delivery whose 250 comes later than the client's timeout (the case SMTP cannot make
    idempotent: the client cannot know it was delivered), or a dropped connection at RCPT."""

    def __init__(self, schedule: Schedule | None = None, port: int | None = None) -> None:
        self.port = port or free_port()
        self.schedule = schedule or Schedule()
        self.delivered: list[email.message.EmailMessage] = []
        self._controller: Controller | None = None
        self._lock = threading.Lock()

    async def handle_RCPT(self, server: Any, session: Any, envelope: Any, address: str, options: Any) -> str:
        envelope.rcpt_tos.append(address)
        envelope.huitou_mode = self.schedule.next()
        if envelope.huitou_mode == DROP:
            server.transport.abort()
            return "421 connection dropped"
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        mode = getattr(envelope, "huitou_mode", OK)
        if mode in (FAIL, "down"):
            return "451 4.3.0 try again later"
        raw = envelope.original_content or envelope.content
        if mode == SLOW:
            await asyncio.sleep(self.schedule.slow_seconds)
        with self._lock:  # queued for delivery: a client that hangs up from now on does not undo it
            self.delivered.append(email.message_from_bytes(raw, policy=email.policy.default))
        if mode == TOO_SLOW:
            await asyncio.sleep(self.schedule.too_slow_seconds)
        return "250 Message accepted for delivery"

    def start(self) -> FlakySmtp:
        self._controller = Controller(self, hostname="127.0.0.1", port=self.port, ready_timeout=30)
        self._controller.start()
        return self

    def stop(self) -> None:
        if self._controller is not None:
            self._controller.stop()
            self._controller = None

    def message_ids(self) -> Counter[str]:
        with self._lock:
            return Counter(str(m["Message-ID"]) for m in self.delivered)

    def touch_ids(self) -> Counter[str]:
        with self._lock:
            return Counter(str(m["X-Huitou-Touch-Id"]) for m in self.delivered)


@dataclass
class WebhookRequest:
    key: str
    touch_id: str
    status: int | None  # None: the connection was dropped without an answer
    mode: str
    signed: bool
    at: float


class FlakyWebhook:
    """A minimal HTTP/1.1 receiver (keep-alive) answering per the schedule: 503, a slow 200, a
    200 slower than the client's timeout, or a dropped connection. Like a real provider it
    delivers a given Idempotency-Key once and answers later copies 200 without delivering."""

    def __init__(self, schedule: Schedule | None = None, secret: str = DEV_WEBHOOK_SECRET) -> None:
        self.port = free_port()
        self.schedule = schedule or Schedule()
        self.secret = secret
        self.requests: list[WebhookRequest] = []
        self.delivered: Counter[str] = Counter()  # Idempotency-Key → deliveries (the provider dedupes: 1)
        self.completed: Counter[str] = Counter()  # Idempotency-Key → 2xx answers actually written
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: asyncio.Server | None = None
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    def start(self) -> FlakyWebhook:
        ready = threading.Event()

        def run() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            self._server = loop.run_until_complete(asyncio.start_server(self._serve, "127.0.0.1", self.port))
            ready.set()
            loop.run_forever()
            loop.close()

        self._thread = threading.Thread(target=run, name="flaky-webhook", daemon=True)
        self._thread.start()
        assert ready.wait(10), "webhook receiver did not start"
        return self

    def stop(self) -> None:
        if self._loop is None:
            return

        async def close() -> None:
            assert self._server is not None
            self._server.close()

        asyncio.run_coroutine_threadsafe(close(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        assert self._thread is not None
        self._thread.join(10)
        self._loop = None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                request_line = await reader.readline()
                if not request_line:
                    return
                headers: dict[str, str] = {}
                while (line := await reader.readline()) not in (b"\r\n", b"\n", b""):
                    name, _, value = line.decode("latin-1").partition(":")
                    headers[name.strip().lower()] = value.strip()
                body = await reader.readexactly(int(headers.get("content-length", "0")))
                if not await self._answer(headers, body, writer):
                    return
        except (ConnectionError, asyncio.IncompleteReadError):
            return
        finally:
            writer.transport.abort()

    async def _answer(self, headers: dict[str, str], body: bytes, writer: asyncio.StreamWriter) -> bool:
        key = headers.get(IDEMPOTENCY_HEADER.lower(), "")
        signed = verify_webhook_signature(
            self.secret, body, headers.get(SIGNATURE_HEADER.lower(), ""), now=int(time.time())
        )
        touch_id = str(json.loads(body or b"{}").get("touch_id", ""))
        mode = self.schedule.next()
        status: int | None
        if mode == DROP:
            status = None
        elif mode in (FAIL, "down"):
            status = 503
        else:
            if mode == SLOW:
                await asyncio.sleep(self.schedule.slow_seconds)
            elif mode == TOO_SLOW:
                await asyncio.sleep(self.schedule.too_slow_seconds)
            status = 200 if signed else 401
        with self._lock:
            self.requests.append(WebhookRequest(key, touch_id, status, mode, signed, time.monotonic()))
            if status == 200 and self.delivered[key] == 0:
                self.delivered[key] += 1
        if status is None:
            return False
        payload = b'{"ok": true}' if status == 200 else b'{"error": "try again"}'
        writer.write(
            f"HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {len(payload)}\r\n\r\n".encode()
            + payload
        )
        with contextlib.suppress(ConnectionError):
            await writer.drain()
            if status == 200:
                with self._lock:
                    self.completed[key] += 1
        return True
