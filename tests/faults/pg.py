"""A throwaway PostgreSQL cluster that a test can stop abruptly and start again.

Unlike tests.support.postgres_cluster it keeps ``synchronous_commit`` on: with it off, an
immediate stop loses commits the server already acknowledged, and that loss would be the test
setup's, not Huitou's. ``fsync`` stays off: the operating system does not crash here, so what was
written to the kernel survives an immediate stop.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import asyncpg

from tests.support import free_port, postgres_bin


@dataclass
class StoppablePostgres:
    bin_dir: Path
    root: Path
    port: int

    @classmethod
    def create(cls) -> StoppablePostgres:
        bin_dir = postgres_bin()
        if bin_dir is None:
            raise FileNotFoundError("PostgreSQL server binaries not found (apt-get install -y postgresql)")
        root = Path(tempfile.mkdtemp(prefix="huitou-faults-pg-"))
        if os.geteuid() == 0:
            shutil.chown(root, "postgres")
            root.chmod(0o755)
        cluster = cls(bin_dir, root, free_port())
        cluster._run("initdb", "-D", str(root / "data"), "-U", "huitou", "--auth=trust", "-E", "UTF8")
        return cluster

    @property
    def base_url(self) -> str:
        return f"postgresql+asyncpg://huitou@127.0.0.1:{self.port}"

    def _run(self, tool: str, *argv: str) -> None:
        prefix = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        subprocess.run([*prefix, str(self.bin_dir / tool), *argv], check=True, capture_output=True, timeout=120)

    def start(self) -> None:
        options = f"-p {self.port} -h 127.0.0.1 -k {self.root} -c fsync=off -c full_page_writes=off"
        self._run("pg_ctl", "-D", str(self.root / "data"), "-l", str(self.root / "log"), "-w", "-o", options, "start")

    def stop(self, mode: str = "immediate") -> None:
        self._run("pg_ctl", "-D", str(self.root / "data"), "-m", mode, "-w", "stop")

    def destroy(self) -> None:
        prefix = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        subprocess.run(
            [*prefix, str(self.bin_dir / "pg_ctl"), "-D", str(self.root / "data"), "-m", "immediate", "stop"],
            capture_output=True,
            timeout=120,
        )
        shutil.rmtree(self.root, ignore_errors=True)

    async def create_database(self, name: str) -> str:
        connection = await asyncpg.connect(f"postgresql://huitou@127.0.0.1:{self.port}/postgres")
        try:
            await connection.execute(f'CREATE DATABASE "{name}"')
        finally:
            await connection.close()
        return f"{self.base_url}/{name}"
