"""Real local components for tests: a Tansu broker, a throwaway PostgreSQL cluster, polling."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from aiokafka import AIOKafkaConsumer, TopicPartition

from shared.devstack import tansu_binary

T = TypeVar("T")
ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def wait_for_port(port: int, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return
        time.sleep(0.05)
    raise TimeoutError(f"nothing listening on 127.0.0.1:{port}")


@dataclass
class Broker:
    """A Tansu broker process on loopback (memory storage: a restart starts empty)."""

    port: int
    log_path: Path
    process: subprocess.Popen[bytes] | None = None

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> None:
        listener = f"tcp://127.0.0.1:{self.port}"
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                [str(tansu_binary()), "broker", "--listener-url", listener, "--advertised-listener-url", listener],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        wait_for_port(self.port)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None


async def eventually(check: Callable[[], Awaitable[T | None]], timeout: float = 30, what: str = "condition") -> T:
    """Poll ``check`` until it returns something truthy; fail with ``what`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = await check()
        if last:
            return last
        await asyncio.sleep(0.2)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}; last value {last!r}")


async def read_topic(bootstrap: str, topic: str, *, expect_at_least: int = 0, timeout: float = 15) -> list[Any]:
    """Every record currently on ``topic`` (all partitions), read without a consumer group."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, auto_offset_reset="earliest")
    await consumer.start()
    try:
        partitions = consumer.partitions_for_topic(topic)
        if not partitions:
            await consumer._client.force_metadata_update()  # a fresh client may lack metadata
            partitions = consumer.partitions_for_topic(topic) or set()
        tps = [TopicPartition(topic, p) for p in sorted(partitions)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        records: list[Any] = []
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            ends = await consumer.end_offsets(tps)
            positions = {tp: await consumer.position(tp) for tp in tps}
            if all(positions[tp] >= ends[tp] for tp in tps) and len(records) >= expect_at_least:
                break
            batch = await consumer.getmany(timeout_ms=200)
            for items in batch.values():
                records.extend(items)
        return records
    finally:
        await consumer.stop()


def postgres_bin() -> Path | None:
    for candidate in sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True):
        if (candidate / "initdb").exists():
            return candidate
    found = shutil.which("initdb")
    return Path(found).parent if found else None


@contextlib.contextmanager
def postgres_cluster() -> Iterator[str]:
    """A throwaway PostgreSQL cluster on a loopback port; yields an asyncpg base URL (no db name)."""
    bin_dir = postgres_bin()
    if bin_dir is None:
        raise FileNotFoundError("PostgreSQL server binaries not found (apt-get install -y postgresql)")
    root = Path(tempfile.mkdtemp(prefix="huitou-pg-"))
    data = root / "data"
    port = free_port()
    as_root = os.geteuid() == 0
    prefix = ["runuser", "-u", "postgres", "--"] if as_root else []
    if as_root:
        shutil.chown(root, "postgres")
        root.chmod(0o755)

    def run(*argv: str) -> None:
        subprocess.run([*prefix, *argv], check=True, capture_output=True)

    run(str(bin_dir / "initdb"), "-D", str(data), "-U", "huitou", "--auth=trust", "-E", "UTF8")
    run(
        str(bin_dir / "pg_ctl"),
        "-D",
        str(data),
        "-l",
        str(root / "log"),
        "-w",
        "-o",
        f"-p {port} -h 127.0.0.1 -k {root} -c fsync=off -c synchronous_commit=off -c full_page_writes=off",
        "start",
    )
    try:
        yield f"postgresql+asyncpg://huitou@127.0.0.1:{port}"
    finally:
        subprocess.run([*prefix, str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "fast", "stop"], capture_output=True)
        shutil.rmtree(root, ignore_errors=True)


@dataclass
class RunningStack:
    """The dev launcher (`python -m shared.devstack`) running as a subprocess, as a newcomer runs it."""

    ports: dict[str, int]
    output: list[str]
    process: subprocess.Popen[str]

    def url(self, service: str) -> str:
        return f"http://127.0.0.1:{self.ports[service]}"


@contextlib.contextmanager
def dev_stack(var_dir: Path, env: dict[str, str], ready_timeout: float = 120) -> Iterator[RunningStack]:
    """Start the whole stack on free ports; stop it with Ctrl-C (SIGINT) and insist on a clean exit."""
    from shared.devstack import DEFAULT_PORTS

    ports = {name: free_port() for name in DEFAULT_PORTS}
    full_env = {
        **os.environ,
        **{f"HUITOU_{name.upper()}_PORT": str(port) for name, port in ports.items()},
        "HUITOU_VAR_DIR": str(var_dir),
        **env,
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "shared.devstack"], cwd=ROOT, env=full_env, text=True,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )  # fmt: skip
    output: list[str] = []
    ready = threading.Event()

    def pump() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            output.append(line)
            if "Huitou dev stack is ready" in line:
                ready.set()

    threading.Thread(target=pump, daemon=True).start()
    running = RunningStack(ports, output, process)
    try:
        if not ready.wait(ready_timeout):
            raise AssertionError("dev stack did not become ready:\n" + "".join(output[-60:]))
        yield running
    finally:
        process.send_signal(signal.SIGINT)
        try:
            code = process.wait(60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
            raise
        assert code == 0, "dev stack did not stop cleanly:\n" + "".join(output[-40:])
