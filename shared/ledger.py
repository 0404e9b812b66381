"""Effectively-once plumbing kept in the consuming service's own database.

* ``processed_events``: the event ids a service has applied, written in the same transaction as
  the change the event caused, so a replay after a crash is recognised and skipped.
* ``outbox``: downstream messages written in that same transaction and relayed to Kafka after
  it commits, so a crash never loses or half-publishes what a change announced. A row keeps the
  message's Kafka headers too (the ``traceparent`` that carries the cause's trace onward).
"""

from __future__ import annotations

import asyncio
import base64
import logging
from collections.abc import Collection, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Column,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    bindparam,
    delete,
    func,
    insert,
    select,
)
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from shared.db import UTCDateTime
from shared.kafka import BrokerUnavailable, EventProducer, Outgoing
from shared.observability import ServiceMetrics

log = logging.getLogger("huitou.outbox")


def processed_events_table(metadata: MetaData) -> Table:
    return Table(
        "processed_events",
        metadata,
        Column("event_id", String(200), primary_key=True),
        Column("processed_at", UTCDateTime(), nullable=False, index=True),
    )


def outbox_table(metadata: MetaData) -> Table:
    return Table(
        "outbox",
        metadata,
        Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True),
        Column("topic", String(200), nullable=False),
        Column("key", String(200), nullable=True),
        Column("value", LargeBinary, nullable=False),
        Column("created_at", UTCDateTime(), nullable=False),
        # [[name, base64 value], ...]; header values are bytes, and a JSON list keeps their order.
        Column("headers", JSON(none_as_null=True), nullable=True),
    )


async def claim_event(session: AsyncSession, table: Table, event_id: str) -> bool:
    """Record that ``event_id`` is being applied; False if it was applied before.

    Runs inside the caller's transaction: if that rolls back, so does the claim. One statement
    (an insert that ignores the conflict with an earlier claim) rather than a look-up and an
    insert: every consumed event pays for it.
    """
    values = {"event_id": event_id, "processed_at": datetime.now(UTC)}
    connection = await session.connection()
    dialect = connection.dialect.name
    if dialect == "postgresql":
        statement: Any = pg_insert(table).values(values).on_conflict_do_nothing()
    elif dialect == "sqlite":
        statement = sqlite_insert(table).values(values).on_conflict_do_nothing()
    else:
        raise NotImplementedError(f"only SQLite and PostgreSQL are supported, not {dialect}")
    result = await connection.execute(statement)
    return bool(getattr(result, "rowcount", 0))


async def claimed_among(session: AsyncSession, table: Table, event_ids: Collection[str]) -> set[str]:
    """Which of ``event_ids`` were applied before (one query; a batch looks its events up front)."""
    if not event_ids:
        return set()
    connection = await session.connection()
    rows = await connection.execute(
        select(table.c.event_id).where(table.c.event_id.in_(bindparam("ids", expanding=True))),
        {"ids": sorted(set(event_ids))},
    )
    return set(rows.scalars().all())


async def claim_many(
    session: AsyncSession, table: Table, event_ids: Sequence[str], now: datetime | None = None
) -> None:
    """Claim ids the caller found unclaimed (``claimed_among``), in one statement.

    A plain INSERT on purpose: if another replica claimed one meanwhile, the unique violation
    (not transient) fails the transaction rather than letting an event be applied twice; the
    batch rolls back and is re-applied one event per transaction, where ``claim_event`` sees the
    earlier claim and skips the event.
    """
    if not event_ids:
        return
    at = now or datetime.now(UTC)
    connection = await session.connection()
    await connection.execute(insert(table), [{"event_id": e, "processed_at": at} for e in event_ids])


async def prune_processed(session: AsyncSession, table: Table, keep: timedelta) -> int:
    """Forget event ids older than ``keep`` (must exceed the topics' retention)."""
    result = await session.execute(delete(table).where(table.c.processed_at < datetime.now(UTC) - keep))
    return int(getattr(result, "rowcount", 0) or 0)


async def prune_processed_forever(
    sessions: async_sessionmaker[AsyncSession],
    table: Table,
    keep: timedelta,
    stop: asyncio.Event,
    every: timedelta = timedelta(hours=1),
) -> None:
    """Keep the ledger bounded: hourly, forget ids older than ``keep``.

    ``keep`` must exceed how long a message can still be redelivered (the topics' retention),
    or a very late replay would be applied twice.
    """
    while not stop.is_set():
        try:
            async with sessions() as session, session.begin():
                removed = await prune_processed(session, table, keep)
            if removed:
                log.info("forgot %d processed event ids older than %s", removed, keep)
        except Exception:
            log.exception("pruning processed event ids failed; will retry")
        try:
            await asyncio.wait_for(stop.wait(), every.total_seconds())
        except TimeoutError:
            pass


def stored_headers(headers: tuple[tuple[str, bytes], ...]) -> list[list[str]] | None:
    """Kafka headers in the outbox's JSON form (None when there are none, the common case)."""
    return [[name, base64.b64encode(value).decode()] for name, value in headers] or None


def loaded_headers(stored: list[list[str]] | None) -> tuple[tuple[str, bytes], ...]:
    return tuple((name, base64.b64decode(value)) for name, value in stored or ())


async def enqueue(session: AsyncSession, table: Table, message: Outgoing) -> None:
    await enqueue_many(session, table, [message])


async def enqueue_many(session: AsyncSession, table: Table, messages: Sequence[Outgoing]) -> None:
    """Put ``messages`` in the outbox in one statement; rows keep the given order (the relay
    publishes by row id), so a change's messages reach Kafka in the order they were written."""
    if not messages:
        return
    now = datetime.now(UTC)
    rows = [
        {"topic": m.topic, "key": m.key, "value": m.value, "headers": stored_headers(m.headers), "created_at": now}
        for m in messages
    ]
    await session.execute(insert(table), rows)


class OutboxRelay:
    """Publishes committed outbox rows in insertion order, deleting each batch once acked.

    A crash between the broker's ack and the delete republishes that batch; consumers dedupe
    by event id. On PostgreSQL, ``SKIP LOCKED`` keeps concurrent replicas off the same rows.
    """

    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        table: Table,
        producer: EventProducer,
        metrics: ServiceMetrics,
        service: str,
        *,
        batch_size: int = 500,
        idle_poll_seconds: float = 1.0,
    ) -> None:
        self._sessions = sessions
        self._table = table
        self._producer = producer
        self._metrics = metrics
        self._service = service
        self._batch = batch_size
        self._idle = idle_poll_seconds
        self._wake = asyncio.Event()
        self._stop = asyncio.Event()

    def notify(self) -> None:
        """Called after a transaction that enqueued something has committed."""
        self._wake.set()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()

    async def run(self) -> None:
        failures = 0
        while not self._stop.is_set():
            try:
                sent = await self.relay_once()
                failures = 0
            except BrokerUnavailable as error:
                failures += 1
                log.warning("outbox relay waiting for the broker: %s", error)
                sent = 0
            except Exception:
                failures += 1
                log.exception("outbox relay failed; retrying")
                sent = 0
            if sent and not failures:
                continue
            self._wake.clear()
            try:
                await asyncio.wait_for(self._wake.wait(), self._idle * min(2**failures, 30))
            except TimeoutError:
                pass

    async def relay_once(self) -> int:
        table = self._table
        async with self._sessions() as session, session.begin():
            rows = (
                await session.execute(
                    select(table.c.id, table.c.topic, table.c.key, table.c.value, table.c.headers)
                    .order_by(table.c.id)
                    .limit(self._batch)
                    .with_for_update(skip_locked=True)
                )
            ).all()
            if not rows:
                self._metrics.outbox_backlog.labels(self._service).set(0)
                return 0
            await self._producer.publish_many(
                [Outgoing(r.topic, r.key, r.value, loaded_headers(r.headers)) for r in rows]
            )
            await session.execute(delete(table).where(table.c.id.in_([r.id for r in rows])))
            for row in rows:
                self._metrics.events_published.labels(self._service, row.topic).inc()
        async with self._sessions() as session:
            backlog = await session.scalar(select(func.count()).select_from(table))
        self._metrics.outbox_backlog.labels(self._service).set(backlog or 0)
        return len(rows)
