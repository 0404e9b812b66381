"""Recompute a customer file's scores, record what changed and announce it — one path for the
event consumer, the lapse sweep, the re-scoring after a refit and operator writes.

Everything here runs inside the caller's database transaction: the file, its history rows and
the ``customer.updated`` outbox row commit together or not at all.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any
from uuid import NAMESPACE_URL, uuid5

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.scoring import repository
from services.scoring.customer_file import CustomerFile, evolve
from services.scoring.population import PopulationModel
from services.scoring.purchases import Occasion, OrderLine, occasions
from services.scoring.scorecard import Rules, changes, score
from services.scoring.tables import outbox
from shared.contracts import (
    CustomerCause,
    CustomerUpdatedEvent,
    CustomerUpdatedPayload,
    FieldChange,
    to_wire,
)
from shared.kafka import Outgoing
from shared.ledger import enqueue_many
from shared.topics import CUSTOMERS
from shared.tracing import kafka_headers


def derived_event_id(kind: str, cause_event_id: str) -> str:
    """Deterministic ids for derived events, so a re-derivation is recognisably the same event."""
    return str(uuid5(NAMESPACE_URL, f"huitou:{kind}/{cause_event_id}"))


class ModelStore:
    """The population model in force, cached; other replicas' refits are picked up within ``poll_seconds``."""

    def __init__(self, sessions: async_sessionmaker[AsyncSession], poll_seconds: float = 5.0) -> None:
        self._sessions = sessions
        self._poll = poll_seconds
        self._model: PopulationModel | None = None
        self._checked = float("-inf")

    def set(self, model: PopulationModel) -> None:
        if self._model is None or (model.id or 0) >= (self._model.id or 0):
            self._model = model
        self._checked = time.monotonic()

    async def current(self, session: AsyncSession | None = None) -> PopulationModel | None:
        if time.monotonic() - self._checked >= self._poll:
            await self.refresh(session)
        return self._model

    async def refresh(self, session: AsyncSession | None = None) -> None:
        if session is None:
            async with self._sessions() as own:
                await self._refresh(own)
        else:
            await self._refresh(session)

    async def _refresh(self, session: AsyncSession) -> None:
        latest_id = await repository.latest_model_id(session)
        if latest_id is not None and (self._model is None or self._model.id != latest_id):
            model = await repository.latest_model(session)
            if model is not None:
                self._model = model
        self._checked = time.monotonic()


def rescored(
    file: CustomerFile,
    orders: Sequence[OrderLine],
    model: PopulationModel | None,
    as_of: datetime,
    rules: Rules,
    history: Sequence[Occasion] | None = None,
) -> tuple[CustomerFile, list[FieldChange]]:
    """The file with fresh scores as of ``as_of``, and the tracked fields that changed.
    ``history``: the occasions of ``orders`` where the caller keeps them (else regrouped here)."""
    if history is None:
        history = occasions(orders, rules.timezone, rules.tiers.basis)
    card = score(file.facts(history), model, as_of, rules)
    before = file.scores.tracked() if file.scores else {}
    return evolve(file, scores=card), changes(before, card)


@dataclass(frozen=True)
class Announcement:
    cause: CustomerCause
    historical: bool = False
    trace_id: str | None = None


class FileChanges:
    """File changes of one transaction, written together at its end: each file's final state in
    one row write, the history rows and the outbox rows in the order the changes were made.

    Several changes of one file chain: each builds on the one before (its version included)."""

    def __init__(self) -> None:
        self._files: dict[str, repository.FileWrite] = {}
        self._history: list[dict[str, Any]] = []
        self._messages: list[Outgoing] = []

    def record(
        self,
        before: CustomerFile | None,
        after: CustomerFile,
        found: list[FieldChange],
        announcement: Announcement | None,
        now: datetime,
    ) -> CustomerFile:
        """Keep ``after`` for writing; with an announcement, bump the version, record the changes
        and queue the ``customer.updated``. Returns the file as it will be stored.

        ``before`` is the file as this transaction last left it (None: there is none yet), and
        ``after.referred_by`` must be current: the announcement carries it."""
        if announcement is not None:
            after = evolve(after, version=(before.version if before else 0) + 1)
        earlier = self._files.get(after.customer_id)
        is_new = earlier.is_new if earlier is not None else before is None
        self._files[after.customer_id] = repository.FileWrite(after, is_new, now)  # the whole row
        if announcement is not None:
            as_of = after.scores.as_of if after.scores else now
            self._history += repository.history_rows(after.customer_id, found, announcement.cause, as_of, now)
            self._messages.append(announce(after, announcement, found, now))
        return after

    def record_engagement(self, before: CustomerFile, engagement: dict[str, Any], now: datetime) -> CustomerFile:
        """Keep a change of the engagement alone (care received: no version, no announcement).
        Unless the file has other changes in this transaction, only that column is written.
        Returns the file as it will be stored."""
        after = evolve(before, engagement=engagement)
        earlier = self._files.get(after.customer_id)
        if earlier is None:
            self._files[after.customer_id] = repository.FileWrite(after, False, now, engagement_only=True)
        else:
            self._files[after.customer_id] = replace(earlier, file=after, at=now)
        return after

    @property
    def queued(self) -> bool:
        """Whether something was queued for the relay."""
        return bool(self._messages)

    async def write(self, session: AsyncSession) -> None:
        await repository.save_files(session, list(self._files.values()))
        await repository.insert_history(session, self._history)
        await enqueue_many(session, outbox, self._messages)


async def commit(
    session: AsyncSession,
    before: CustomerFile,
    after: CustomerFile,
    found: list[FieldChange],
    announcement: Announcement | None,
    now: datetime | None = None,
) -> bool:
    """Store ``after``, a change of the existing file ``before``, now; with an announcement, bump
    the version, record the changes and queue the ``customer.updated``. Returns whether something
    was queued for the relay. (The event consumer, the one that makes new files, keeps its
    transaction's changes in :class:`FileChanges` and writes them at its end.)"""
    changes = FileChanges()
    changes.record(before, after, found, announcement, now or datetime.now(UTC))
    await changes.write(session)
    return changes.queued


def announce(file: CustomerFile, announcement: Announcement, found: list[FieldChange], now: datetime) -> Outgoing:
    cause = announcement.cause
    update = CustomerUpdatedEvent(
        event_id=derived_event_id("customer.updated", cause.event_id),
        customer_id=file.customer_id,
        occurred_at=cause.occurred_at,
        received_at=now,
        source="scoring",
        historical=announcement.historical,
        trace_id=announcement.trace_id,
        payload=CustomerUpdatedPayload(version=file.version, cause=cause, snapshot=file.snapshot(), changes=found),
    )
    # The header carries the cause's trace onward, so outreach's touches join the same trace.
    return Outgoing(CUSTOMERS, file.customer_id, to_wire(update), kafka_headers(announcement.trace_id))
