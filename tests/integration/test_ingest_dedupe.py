"""Ingest's dedupe window on SQLite and on PostgreSQL: written behind, read by one query, shared
by replicas, pruned after the window."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.ingest.repository import DedupeWindow, SourceStore
from services.ingest.tables import seen_events, sources
from shared.db import create_engine, migrate, session_factory

MIGRATIONS = Path(__file__).resolve().parents[2] / "services" / "ingest" / "migrations"


@pytest.fixture
async def sessions(database_url: str) -> AsyncIterator[async_sessionmaker[AsyncSession]]:
    engine = create_engine(database_url, "ingest")
    await migrate(engine, MIGRATIONS, "ingest")
    try:
        yield session_factory(engine)
    finally:
        await engine.dispose()


async def stored(sessions: async_sessionmaker[AsyncSession]) -> int:
    async with sessions() as session:
        return int(await session.scalar(select(func.count()).select_from(seen_events)) or 0)


async def test_remembered_ids_are_seen_before_and_after_they_are_written(sessions) -> None:
    window = DedupeWindow(sessions, timedelta(days=7))
    window.remember(["a", "b"])
    assert await window.seen(["a", "x"]) == {"a"} and await stored(sessions) == 0  # not written yet
    await window.write_pending()
    assert window.unwritten == 0 and await stored(sessions) == 2
    other_replica = DedupeWindow(sessions, timedelta(days=7))
    assert await other_replica.seen(["a", "b", "c"]) == {"a", "b"}


async def test_concurrent_lookups_share_queries_and_each_gets_its_own_answer(sessions) -> None:
    window = DedupeWindow(sessions, timedelta(days=7))
    window.remember([f"e-{n}" for n in range(0, 1200, 2)])
    await window.write_pending()
    asks = [[f"e-{n}", f"e-{n + 1}"] for n in range(0, 1200, 2)]
    answers = await asyncio.gather(*(window.seen(ids) for ids in asks))
    assert answers == [{ids[0]} for ids in asks]


async def test_writing_an_id_another_replica_wrote_is_harmless(sessions) -> None:
    first, second = DedupeWindow(sessions, timedelta(days=7)), DedupeWindow(sessions, timedelta(days=7))
    first.remember(["shared", "mine"])
    await first.write_pending()
    second.remember(["shared", "theirs"] + [f"x-{n}" for n in range(700)])  # more than one statement's worth
    await second.write_pending()
    assert second.unwritten == 0 and await stored(sessions) == 703


async def test_writer_flushes_on_stop_and_prune_forgets_expired_ids(sessions) -> None:
    window = DedupeWindow(sessions, timedelta(0))
    stop = asyncio.Event()
    writer = asyncio.create_task(window.run_writer(stop, idle_seconds=0.01))
    window.remember(["old-1", "old-2"])
    stop.set()
    await writer
    assert await stored(sessions) == 2
    assert await window.prune() == 2 and await stored(sessions) == 0


async def test_source_store_keeps_only_digests_and_caches_answers(sessions) -> None:
    clock = [0.0]
    store = SourceStore(sessions, cache_seconds=5, clock=lambda: clock[0])
    source, key = await store.create("pos-1")
    assert (await store.authenticate(key)) == source and source.key_hint == key[:10] + "…"
    async with sessions() as session:
        stored_hash = await session.scalar(select(sources.c.key_hash).where(sources.c.name == "pos-1"))
    assert stored_hash != key and len(stored_hash) == 64
    other = SourceStore(sessions, cache_seconds=5, clock=lambda: clock[0])
    await other.authenticate(key)  # cached on this "replica"
    await store.set_enabled("pos-1", False)
    assert (await other.authenticate(key)).enabled is True  # within its cache time
    clock[0] += 6
    assert (await other.authenticate(key)).enabled is False
    assert await store.authenticate("wk_unknown") is None
