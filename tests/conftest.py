"""Fixtures that start real components: the Tansu broker, SQLite files, a PostgreSQL cluster.

PostgreSQL: set HUITOU_TEST_POSTGRES_URL (postgresql+asyncpg://user@host:port) to use a running
server; otherwise a throwaway cluster is started from the local server binaries. Without them,
PostgreSQL cases are skipped locally and fail under CI (CI=true), where they must run.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import asyncpg
import pytest

from shared.kafka import ensure_topics
from tests.support import Broker, free_port, postgres_bin, postgres_cluster

IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}


@pytest.fixture
async def broker(tmp_path: Path) -> AsyncIterator[Broker]:
    """A fresh broker per test, with Huitou's topics: no test sees another's messages."""
    running = Broker(free_port(), tmp_path / "broker.log")
    running.start()
    try:
        await ensure_topics(running.bootstrap)
        yield running
    finally:
        running.stop()


@pytest.fixture(scope="session")
def pg_base_url() -> Iterator[str]:
    given = os.environ.get("HUITOU_TEST_POSTGRES_URL")
    if given:
        yield given
        return
    if postgres_bin() is None:
        if IN_CI:
            pytest.fail("PostgreSQL server binaries are required in CI (apt-get install -y postgresql)")
        pytest.skip("PostgreSQL server binaries not installed; PostgreSQL cases skipped locally")
    with postgres_cluster() as url:
        yield url


async def _fresh_pg_database(base_url: str) -> str:
    name = f"t_{uuid.uuid4().hex[:12]}"
    plain = base_url.replace("postgresql+asyncpg://", "postgresql://")
    connection = await asyncpg.connect(plain + "/postgres")
    try:
        await connection.execute(f'CREATE DATABASE "{name}"')
    finally:
        await connection.close()
    return f"{base_url}/{name}"


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
async def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """One fresh database per test, on SQLite and on PostgreSQL."""
    if request.param == "sqlite":
        return f"sqlite+aiosqlite:///{tmp_path / 'service.db'}"
    base: str = request.getfixturevalue("pg_base_url")
    return await _fresh_pg_database(base)
