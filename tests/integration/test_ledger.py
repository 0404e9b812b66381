"""The processed-events ledger stays bounded: ids older than the retention are forgotten."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

from sqlalchemy import insert, select

from services.scoring.api import MIGRATIONS
from services.scoring.tables import processed_events
from shared.db import create_engine, migrate, session_factory
from shared.ledger import claim_event, prune_processed_forever


async def test_pruner_forgets_only_ids_older_than_the_retention(database_url: str) -> None:
    engine = create_engine(database_url, "scoring")
    await migrate(engine, MIGRATIONS, "scoring")
    sessions = session_factory(engine)
    now = datetime.now(UTC)
    try:
        async with sessions() as session, session.begin():
            await session.execute(
                insert(processed_events),
                [
                    {"event_id": "ancient", "processed_at": now - timedelta(days=45)},
                    {"event_id": "old", "processed_at": now - timedelta(days=31)},
                    {"event_id": "recent", "processed_at": now - timedelta(days=29)},
                ],
            )
        stop = asyncio.Event()
        pruner = asyncio.create_task(
            prune_processed_forever(sessions, processed_events, timedelta(days=30), stop, every=timedelta(hours=1))
        )

        async def remaining() -> set[str]:
            async with sessions() as session:
                return set((await session.scalars(select(processed_events.c.event_id))).all())

        for _ in range(100):
            if await remaining() == {"recent"}:
                break
            await asyncio.sleep(0.05)
        stop.set()
        await asyncio.wait_for(pruner, 5)
        assert await remaining() == {"recent"}
        async with sessions() as session, session.begin():
            assert not await claim_event(session, processed_events, "recent")  # still deduped
            assert await claim_event(session, processed_events, "old")  # forgotten, as configured
    finally:
        await engine.dispose()
