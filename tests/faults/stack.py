"""A small launcher for the fault suite: the broker and the services as subprocesses, each of
which can be killed (SIGKILL) and restarted alone with the same environment and database.

shared/devstack.py starts everything as one unit; here every service is its own process group so
a test can ``kill -9`` exactly one of them (and whatever it spawned), and never anything else.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from shared.settings import DEV_INTERNAL_TOKEN
from tests.support import free_port

ROOT = Path(__file__).resolve().parents[2]
WRITE_KEY = "wk_faults_write_key_0123456789abcdef"
INTERNAL = {"X-Huitou-Internal-Token": DEV_INTERNAL_TOKEN}
_SAMPLE = re.compile(r"^(huitou_[a-z_]+)\{([^}]*)\} ([0-9.eE+-]+)$", re.M)


@dataclass
class ServiceProcess:
    """One service (``python -m services.<name>``) in its own process group."""

    name: str
    env: dict[str, str]
    log_path: Path
    port: int
    process: subprocess.Popen[bytes] | None = None
    starts: int = 0
    kills: int = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        assert self.process is None or self.process.poll() is not None, f"{self.name} is already running"
        with open(self.log_path, "ab") as log:
            log.write(f"\n===== start #{self.starts + 1} of {self.name} =====\n".encode())
            self.process = subprocess.Popen(
                [sys.executable, "-m", f"services.{self.name}"],
                cwd=ROOT,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group: a kill reaches it and its children only
            )
        self.starts += 1

    def kill(self) -> None:
        """kill -9 of the service's process group (the process this launcher started)."""
        assert self.process is not None
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(10)
        self.kills += 1

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(20)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(10)

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def log_tail(self, chars: int = 4000) -> str:
        return self.log_path.read_text(errors="replace")[-chars:]


@dataclass
class FaultStack:
    """Services (subprocesses) around a broker and an SMTP server the test started."""

    var_dir: Path
    bootstrap: str
    smtp_port: int
    extra_env: dict[str, str] = field(default_factory=dict)
    names: tuple[str, ...] = ("ingest", "scoring", "outreach")
    services: dict[str, ServiceProcess] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.var_dir.mkdir(parents=True, exist_ok=True)
        for name in self.names:
            port = free_port()
            env = {
                **os.environ,
                "HUITOU_ENV": "dev",
                "HUITOU_KAFKA_BOOTSTRAP_SERVERS": self.bootstrap,
                "HUITOU_VAR_DIR": str(self.var_dir),
                "HUITOU_INTERNAL_TOKEN": DEV_INTERNAL_TOKEN,
                "HUITOU_DEV_WRITE_KEY": WRITE_KEY,
                "HUITOU_OUTREACH_SMTP_HOST": "127.0.0.1",
                "HUITOU_OUTREACH_SMTP_PORT": str(self.smtp_port),
                "HUITOU_LOG_LEVEL": "WARNING",
                "PYTHONUNBUFFERED": "1",
                f"HUITOU_{name.upper()}_HOST": "127.0.0.1",
                f"HUITOU_{name.upper()}_PORT": str(port),
                **self.extra_env,
            }
            self.services[name] = ServiceProcess(name, env, self.var_dir / f"{name}.log", port)

    def __getitem__(self, name: str) -> ServiceProcess:
        return self.services[name]

    def url(self, name: str) -> str:
        return self.services[name].url

    async def start(self, timeout: float = 180) -> None:
        for service in self.services.values():
            service.start()
        for name in self.services:
            await self.wait_ready(name, timeout)

    def stop(self) -> None:
        for service in self.services.values():
            service.stop()

    async def wait_ready(self, name: str, timeout: float = 180) -> None:
        service = self.services[name]
        deadline = time.monotonic() + timeout
        async with httpx.AsyncClient(timeout=5) as client:
            while True:
                if not service.alive():
                    raise AssertionError(f"{name} exited during start-up:\n{service.log_tail()}")
                with contextlib.suppress(httpx.HTTPError):
                    if (await client.get(service.url + "/readyz")).status_code == 200:
                        return
                if time.monotonic() > deadline:
                    raise AssertionError(f"{name} not ready within {timeout:.0f}s:\n{service.log_tail()}")
                await asyncio.sleep(0.3)

    async def restart(self, name: str, timeout: float = 180) -> None:
        self.services[name].start()
        await self.wait_ready(name, timeout)

    def assert_alive(self) -> None:
        for service in self.services.values():
            assert service.alive(), f"{service.name} died:\n{service.log_tail()}"

    async def metrics(self, name: str) -> dict[tuple[str, str], float]:
        """``/metrics`` samples of one service: {(metric, labels): value}."""
        async with httpx.AsyncClient(timeout=10) as client:
            text = (await client.get(self.url(name) + "/metrics")).text
        return {(m.group(1), m.group(2)): float(m.group(3)) for m in _SAMPLE.finditer(text)}

    async def backlog(self) -> dict[str, Any]:
        """Consumer lag and outbox backlog of the consuming services (None while unknown)."""
        out: dict[str, Any] = {}
        for name in ("scoring", "outreach"):
            if name not in self.services:
                continue
            try:
                samples = await self.metrics(name)
            except httpx.HTTPError:
                out[name] = None
                continue
            lag = sum(v for (metric, _), v in samples.items() if metric == "huitou_consumer_lag")
            has_lag = any(metric == "huitou_consumer_lag" for metric, _ in samples)
            outbox = sum(v for (metric, _), v in samples.items() if metric == "huitou_outbox_backlog")
            out[name] = {"lag": lag if has_lag else None, "outbox": outbox}
        return out

    async def consumed(self, name: str) -> float:
        """Messages this process (since its start) consumed and processed."""
        samples = await self.metrics(name)
        return sum(
            v for (metric, labels), v in samples.items()
            if metric == "huitou_events_consumed_total" and 'outcome="processed"' in labels
        )  # fmt: skip


@contextlib.contextmanager
def running(stack: FaultStack) -> Iterator[FaultStack]:
    try:
        yield stack
    finally:
        stack.stop()
