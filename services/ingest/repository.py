"""Ingest's database adapters: the dedupe window and the sources with their hashed write keys."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import String, bindparam, delete, insert, select, text, update
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.engine import Row
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlalchemy.sql.expression import Executable

from services.ingest.tables import seen_events, sources
from shared.db import UTCDateTime
from shared.keys import digest, new_key

log = logging.getLogger("huitou.ingest")
_CHUNK = 500  # ids per statement: far below every backend's bound-parameter limit


@dataclass(frozen=True)
class _DedupeSql:
    """The two dedupe statements, with all ids passed as ONE parameter (a JSON array on SQLite,
    a text[] on PostgreSQL) so the database, not SQLAlchemy, walks the list: binding thousands
    of parameters one by one cost more CPU than validating the events."""

    seen: Executable
    remember: Executable
    ids: Callable[[list[str]], object]


_AT = bindparam("accepted_at", type_=UTCDateTime())
_SQL = {
    "sqlite": _DedupeSql(
        text("SELECT event_id FROM seen_events WHERE event_id IN (SELECT value FROM json_each(:ids))"),
        # "WHERE true" keeps SQLite from reading ON CONFLICT as part of the SELECT.
        text(
            "INSERT INTO seen_events (event_id, accepted_at) SELECT value, :accepted_at FROM json_each(:ids) "
            "WHERE true ON CONFLICT (event_id) DO NOTHING"
        ).bindparams(_AT),
        json.dumps,
    ),
    "postgresql": _DedupeSql(
        text("SELECT event_id FROM seen_events WHERE event_id = ANY(:ids)").bindparams(
            bindparam("ids", type_=ARRAY(String))
        ),
        text(
            "INSERT INTO seen_events (event_id, accepted_at) SELECT id, :accepted_at FROM unnest(:ids) AS t(id) "
            "ON CONFLICT (event_id) DO NOTHING"
        ).bindparams(_AT, bindparam("ids", type_=ARRAY(String))),
        list,
    ),
}


def _dialect(session: AsyncSession) -> str:
    name = session.bind.dialect.name
    if name not in _SQL:
        raise RuntimeError(f"ingest's dedupe window supports SQLite and PostgreSQL, not {name}")
    return name


class DedupeWindow:
    """The event ids accepted during the last ``window`` (pruned periodically, so an id is
    remembered for at least the window and at most one prune interval longer).

    Accepted ids are written behind, by one writer task in batches: concurrent requests never
    contend for the database's write lock, and an id waiting to be written is already "seen".
    Losing unwritten ids in a crash costs at most a re-publish, which consumers dedupe.
    """

    def __init__(
        self, sessions: async_sessionmaker[AsyncSession], window: timedelta, *, max_unwritten: int = 1_000_000
    ) -> None:
        self._sessions = sessions
        self._window = window
        self._unwritten: dict[str, datetime] = {}  # insertion-ordered: oldest first
        self._latest = datetime.min.replace(tzinfo=UTC)  # the latest time in _unwritten
        self._max_unwritten = max_unwritten
        self._wake = asyncio.Event()
        self._lookups: list[tuple[list[str], asyncio.Future[set[str]]]] = []
        self._looker: asyncio.Task[None] | None = None

    async def seen(self, ids: Sequence[str]) -> set[str]:
        """Which of ``ids`` were accepted before. Lookups of concurrent requests are answered by
        one query per event-loop turn, so a busy ingest asks the database far less often."""
        found = {i for i in ids if i in self._unwritten}
        rest = [i for i in dict.fromkeys(ids) if i not in found]
        if not rest:
            return found
        answer: asyncio.Future[set[str]] = asyncio.get_running_loop().create_future()
        self._lookups.append((rest, answer))
        if self._looker is None:
            self._looker = asyncio.create_task(self._look_up(), name="dedupe-lookup")
        return found | await answer

    async def _look_up(self) -> None:
        try:
            while self._lookups:
                await asyncio.sleep(0)  # requests arriving in this turn join the query
                group, self._lookups = self._lookups, []
                wanted = list(dict.fromkeys(i for ids, _ in group for i in ids))
                try:
                    known = await self._select(wanted)
                except Exception as error:
                    for _, answer in group:
                        if not answer.done():
                            answer.set_exception(error)
                    continue
                for ids, answer in group:
                    if not answer.done():
                        answer.set_result({i for i in ids if i in known})
        finally:
            self._looker = None

    async def _select(self, ids: list[str]) -> set[str]:
        found: set[str] = set()
        async with self._sessions() as session:
            sql = _SQL[_dialect(session)]
            for start in range(0, len(ids), _CHUNK):
                rows = await session.scalars(sql.seen, {"ids": sql.ids(ids[start : start + _CHUNK])})
                found.update(rows.all())
        return found

    def remember(self, ids: Sequence[str]) -> None:
        """Record accepted ids (written shortly by ``run_writer``)."""
        now = datetime.now(UTC)
        self._latest = max(self._latest, now)
        unwritten = self._unwritten
        for event_id in ids:
            unwritten.setdefault(event_id, now)
        while len(self._unwritten) > self._max_unwritten:
            # The database is unreachable for long: forget the oldest rather than grow forever.
            self._unwritten.pop(next(iter(self._unwritten)))
        self._wake.set()

    @property
    def unwritten(self) -> int:
        return len(self._unwritten)

    async def run_writer(self, stop: asyncio.Event, idle_seconds: float = 0.05) -> None:
        """Write remembered ids in batches until ``stop``; then write what is left."""
        failures = 0
        while not stop.is_set():
            if not self._unwritten:
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), 1.0)
                continue
            try:
                await self.write_pending()
                failures = 0
            except Exception as error:
                failures += 1
                log.warning("dedupe window: cannot write accepted ids yet (%d waiting): %r", self.unwritten, error)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), min(0.2 * 2**failures, 10))
                continue
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), idle_seconds)  # let the next batch gather
        with contextlib.suppress(Exception):
            await self.write_pending()

    async def write_pending(self) -> None:
        batch = list(itertools.islice(self._unwritten.items(), 5000))
        if not batch:
            return
        # One time for the batch, no earlier than any of its ids': each is then remembered at
        # least the whole window (and at most the moments between batches longer).
        accepted_at = self._latest
        ids = [event_id for event_id, _ in batch]
        async with self._sessions() as session, session.begin():
            sql = _SQL[_dialect(session)]
            for start in range(0, len(ids), _CHUNK):
                # ON CONFLICT DO NOTHING: another replica may have written some of them first.
                await session.execute(
                    sql.remember, {"ids": sql.ids(ids[start : start + _CHUNK]), "accepted_at": accepted_at}
                )
        unwritten = self._unwritten
        for event_id, at in batch:
            # Identity: remember() stores one time object per call, and a written id that was
            # forgotten and accepted again since carries a new one — that entry stays.
            if unwritten.get(event_id) is at:
                del unwritten[event_id]

    async def prune(self) -> int:
        async with self._sessions() as session, session.begin():
            result = await session.execute(
                delete(seen_events).where(seen_events.c.accepted_at < datetime.now(UTC) - self._window)
            )
        return int(getattr(result, "rowcount", 0) or 0)


@dataclass(frozen=True)
class Source:
    """A sender of events (a shop, a POS fleet, an app) and the state of its write key."""

    name: str
    enabled: bool
    key_hint: str | None
    created_at: datetime
    updated_at: datetime | None


class SourceExists(ValueError):
    pass


class UnknownSource(LookupError):
    pass


def key_hint(key: str) -> str:
    """Enough of a key to recognise it in a list, far too little to use it."""
    return key[:10] + "…"


def _source(row: Row[tuple[str, bool, str | None, datetime, datetime | None]]) -> Source:
    return Source(row.name, bool(row.enabled), row.key_hint, row.created_at, row.updated_at)


_COLUMNS = (sources.c.name, sources.c.enabled, sources.c.key_hint, sources.c.created_at, sources.c.updated_at)


class SourceStore:
    """Write keys by source, stored as SHA-256 digests only; a key is shown once, when made.

    Authentication results are cached for ``cache_seconds`` (also "unknown key"), so intake
    does not ask the database on every request; a change made through this store clears the
    cache at once, other replicas see it within ``cache_seconds``.
    """

    _MAX_CACHED = 10_000

    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        cache_seconds: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._sessions = sessions
        self._ttl = cache_seconds
        self._clock = clock
        self._cache: dict[str, tuple[float, Source | None]] = {}

    async def authenticate(self, key: str) -> Source | None:
        hashed = digest(key)
        cached = self._cache.get(hashed)
        now = self._clock()
        if cached is not None and cached[0] > now:
            return cached[1]
        async with self._sessions() as session:
            row = (await session.execute(select(*_COLUMNS).where(sources.c.key_hash == hashed))).first()
        found = _source(row) if row is not None else None
        if self._ttl > 0:
            if len(self._cache) >= self._MAX_CACHED:
                self._cache.clear()
            self._cache[hashed] = (now + self._ttl, found)
        return found

    async def list(self) -> list[Source]:
        async with self._sessions() as session:
            rows = (await session.execute(select(*_COLUMNS).order_by(sources.c.name))).all()
        return [_source(row) for row in rows]

    async def get(self, name: str) -> Source:
        async with self._sessions() as session:
            row = (await session.execute(select(*_COLUMNS).where(sources.c.name == name))).first()
        if row is None:
            raise UnknownSource(name)
        return _source(row)

    async def create(self, name: str) -> tuple[Source, str]:
        key = new_key("wk")
        now = datetime.now(UTC)
        try:
            async with self._sessions() as session, session.begin():
                await session.execute(
                    insert(sources).values(
                        name=name, key_hash=digest(key), enabled=True, created_at=now, key_hint=key_hint(key)
                    )
                )
        except IntegrityError:
            raise SourceExists(name) from None
        self._cache.clear()
        return await self.get(name), key

    async def rotate(self, name: str) -> tuple[Source, str]:
        """A new key for ``name``; the old one stops working at once."""
        key = new_key("wk")
        async with self._sessions() as session, session.begin():
            result = await session.execute(
                update(sources)
                .where(sources.c.name == name)
                .values(key_hash=digest(key), key_hint=key_hint(key), updated_at=datetime.now(UTC))
            )
        if not getattr(result, "rowcount", 0):
            raise UnknownSource(name)
        self._cache.clear()
        return await self.get(name), key

    async def set_enabled(self, name: str, enabled: bool) -> Source:
        async with self._sessions() as session, session.begin():
            result = await session.execute(
                update(sources).where(sources.c.name == name).values(enabled=enabled, updated_at=datetime.now(UTC))
            )
        if not getattr(result, "rowcount", 0):
            raise UnknownSource(name)
        self._cache.clear()
        return await self.get(name)

    async def register(self, name: str, key: str) -> None:
        """Make ``key`` the write key of ``name`` (created enabled if new) — the start-up dev key."""
        now = datetime.now(UTC)
        async with self._sessions() as session, session.begin():
            await session.execute(delete(sources).where(sources.c.key_hash == digest(key), sources.c.name != name))
            exists = await session.scalar(select(sources.c.name).where(sources.c.name == name))
            values = {"key_hash": digest(key), "key_hint": key_hint(key)}
            if exists:
                await session.execute(update(sources).where(sources.c.name == name).values(**values))
            else:
                await session.execute(insert(sources).values(name=name, enabled=True, created_at=now, **values))
        self._cache.clear()
