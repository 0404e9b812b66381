"""Helpers for the ingest integration tests (this module holds no tests of its own).

* ``running_ingest``: the app in-process (its lifespan, an httpx client over ASGI) on a real broker.
* ``ServedIngest``: the app behind a real uvicorn socket in a thread, for clients that need a URL
  (the Segment and RudderStack SDKs).
* ``TcpProxy`` and ``ProxiedBroker``: a broker whose clients all go through a proxy that can be
  cut and restored — "the broker is down" without losing the in-memory topics, so afterwards
  we can still check what Kafka really holds.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import signal
import subprocess
import threading
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import uvicorn
from fastapi import FastAPI

from services.ingest.api import create_app
from services.ingest.settings import IngestSettings
from shared.devstack import tansu_binary
from shared.topics import EVENTS
from tests.support import eventually, free_port, read_topic, wait_for_port

WRITE_KEY = "wk_integration_test_key_0123456789"
INTERNAL_TOKEN = "internal-token-for-ingest-tests-0123"


def basic(key: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{key}:".encode()).decode()}


def ingest_settings(bootstrap: str, tmp_path: Path, **overrides: Any) -> IngestSettings:
    values: dict[str, Any] = {
        "kafka_bootstrap_servers": bootstrap,
        "database_url": f"sqlite+aiosqlite:///{tmp_path / 'ingest.db'}",
        "write_key": WRITE_KEY,
        "kafka_request_timeout_ms": 1500,
        "internal_token": INTERNAL_TOKEN,
    }
    values.update(overrides)
    return IngestSettings(**values)


async def producer_ready(app: FastAPI) -> None:
    await eventually(lambda: _ready(app), timeout=20, what="ingest's producer to reach the broker")


async def _ready(app: FastAPI) -> bool:
    return bool(app.state.runtime.producer.ready)


@contextlib.asynccontextmanager
async def running_ingest(settings: IngestSettings) -> AsyncIterator[tuple[FastAPI, httpx.AsyncClient]]:
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        await producer_ready(app)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://ingest", headers=basic(WRITE_KEY)) as client:
            yield app, client


async def events_on_topic(bootstrap: str, expect_at_least: int = 0) -> list[dict[str, Any]]:
    records = await read_topic(bootstrap, EVENTS, expect_at_least=expect_at_least)
    return [{"key": r.key.decode() if r.key else None, **json.loads(r.value)} for r in records]


class ServedIngest:
    """Ingest behind a real socket (uvicorn in a thread with its own event loop)."""

    def __init__(self, settings: IngestSettings) -> None:
        self.port = free_port()
        self.app = create_app(settings)
        config = uvicorn.Config(self.app, host="127.0.0.1", port=self.port, log_level="warning", lifespan="on")
        self.server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self.server.run, name="ingest-uvicorn", daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        self._thread.start()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.server.started:
                with contextlib.suppress(httpx.HTTPError):
                    ready = httpx.get(self.url + "/readyz", timeout=2)
                    # Ready does not wait for the broker (intake then answers 503): the tests do.
                    if ready.status_code == 200 and ready.json()["not_gating"]["broker"] == "ok":
                        return
            if not self._thread.is_alive():
                raise RuntimeError("ingest server thread died during start-up")
            time.sleep(0.05)
        raise TimeoutError("ingest did not become ready within 30 s")

    def stop(self) -> None:
        self.server.should_exit = True
        self._thread.join(15)


@dataclass
class TcpProxy:
    """Forwards a loopback port to another; ``cut`` drops every connection and refuses new ones."""

    target_port: int
    port: int = field(default_factory=free_port)
    _server: asyncio.Server | None = None
    _links: set[asyncio.StreamWriter] = field(default_factory=set)

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", self.port, reuse_address=True)

    async def cut(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
        for writer in list(self._links):
            writer.transport.abort()
        self._links.clear()

    async def _accept(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        try:
            upstream_reader, upstream_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            client_writer.transport.abort()
            return
        self._links.update((client_writer, upstream_writer))
        await asyncio.gather(
            self._pipe(client_reader, upstream_writer),
            self._pipe(upstream_reader, client_writer),
            return_exceptions=True,
        )
        self._links.difference_update((client_writer, upstream_writer))

    @staticmethod
    async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            writer.transport.abort()


@dataclass
class ProxiedBroker:
    """A Tansu broker that advertises the proxy's address, so every client goes through it."""

    log_path: Path
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None
    proxy: TcpProxy | None = None

    @property
    def bootstrap(self) -> str:
        assert self.proxy is not None
        return f"127.0.0.1:{self.proxy.port}"

    async def start(self) -> None:
        self.proxy = TcpProxy(self.port)
        await self.proxy.start()
        self._spawn(self.proxy.port)
        await asyncio.to_thread(wait_for_port, self.port)

    def _spawn(self, advertised_port: int) -> None:
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                [
                    str(tansu_binary()),
                    "broker",
                    "--listener-url",
                    f"tcp://127.0.0.1:{self.port}",
                    "--advertised-listener-url",
                    f"tcp://127.0.0.1:{advertised_port}",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    def pause(self) -> None:
        """The broker hangs (SIGSTOP): connections stay open, nothing is acknowledged."""
        assert self.process is not None
        self.process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGCONT)

    async def stop(self) -> None:
        if self.proxy is not None:
            await self.proxy.cut()
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGCONT)
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
