"""Operator writes (notes, tags, tier overrides, B2B contacts) and privacy requests (export, erasure).

Operator writes go straight to the database, but whatever changes the customer snapshot (tags,
the tier override, contacts) is re-scored and announced as ``customer.updated`` through the outbox
in the same transaction, exactly like an event, so outreach sees it. Notes are staff-only and do
not change the snapshot, so they announce nothing.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.scoring import repository
from services.scoring.clock import Clock
from services.scoring.customer_file import CustomerFile
from services.scoring.engine import Announcement, ModelStore, commit, rescored
from services.scoring.maintenance import Maintenance
from services.scoring.order_cache import OrderCache
from services.scoring.scorecard import Rules
from services.scoring.tables import outbox
from shared.contracts import (
    CustomerCause,
    CustomerErasedEvent,
    CustomerErasedPayload,
    FieldChange,
    ValueTier,
    to_wire,
)
from shared.db import transaction
from shared.kafka import Outgoing
from shared.ledger import OutboxRelay, enqueue
from shared.topics import CUSTOMERS


class CustomerNotFound(LookupError):
    def __init__(self, customer_id: str) -> None:
        super().__init__(f"no customer file for {customer_id!r}")


class ItemNotFound(LookupError):
    """A note or contact that is not in this customer's file."""


class Conflict(ValueError):
    """The write contradicts what the file holds (e.g. a contact id in use)."""


Mutation = Callable[[AsyncSession, CustomerFile], Awaitable[tuple[CustomerFile, list[FieldChange]]]]


@dataclass
class Operations:
    sessions: async_sessionmaker[AsyncSession]
    rules: Rules
    models: ModelStore
    clock: Clock
    relay: OutboxRelay | None
    maintenance: Maintenance | None
    order_cache: OrderCache | None = None
    """The event consumer's, when it runs in this process: an erasure drops the customer's entry."""

    async def _change(self, customer_id: str, mutate: Mutation) -> CustomerFile:
        """Apply an operator change, re-score, record and announce it in one transaction."""
        now = datetime.now(UTC)
        async with transaction(self.sessions) as session:
            before = await repository.load_file(session, customer_id, for_update=True)
            if before is None:
                raise CustomerNotFound(customer_id)
            changed, recorded = await mutate(session, before)
            orders = await repository.order_lines(session, customer_id) if changed.totals.order_count else []
            model = await self.models.current(session)
            after, found = rescored(changed, orders, model, self.clock.for_file(changed), self.rules)
            cause = CustomerCause(event_id=f"operator:{uuid.uuid4()}", type="operator", occurred_at=now)
            announced = [c for c in recorded if c.field == "tags"] + found
            # A repeated write (tags already there) changes nothing and announces nothing.
            announcement = Announcement(cause) if recorded or found else None
            await commit(session, before, after, announced, announcement, now)
            staff_only = [c for c in recorded if c.field != "tags"]
            as_of = after.scores.as_of if after.scores else now
            await repository.append_history(session, customer_id, staff_only, cause, as_of, now)
        if self.relay is not None:
            self.relay.notify()
        return after

    # --- tags -------------------------------------------------------------------------------------

    async def add_tags(self, customer_id: str, tags: list[str], reason: str | None) -> CustomerFile:
        async def mutate(session: AsyncSession, file: CustomerFile) -> tuple[CustomerFile, list[FieldChange]]:
            merged = tuple(sorted(set(file.tags) | set(tags)))
            if merged == file.tags:
                return file, []
            await repository.set_tags(session, file.customer_id, file.tags, merged, datetime.now(UTC))
            added = ", ".join(sorted(set(merged) - set(file.tags)))
            why = f"operator added tag(s) {added}" + (f": {reason}" if reason else "")
            return replace(file, tags=merged), [
                FieldChange(field="tags", before=list(file.tags), after=list(merged), reason=why)
            ]

        return await self._change(customer_id, mutate)

    async def remove_tag(self, customer_id: str, tag: str, reason: str | None) -> CustomerFile:
        async def mutate(session: AsyncSession, file: CustomerFile) -> tuple[CustomerFile, list[FieldChange]]:
            if tag not in file.tags:
                raise ItemNotFound(f"customer {customer_id!r} has no tag {tag!r}; its tags are {list(file.tags)}")
            kept = tuple(t for t in file.tags if t != tag)
            await repository.set_tags(session, file.customer_id, file.tags, kept, datetime.now(UTC))
            why = f"operator removed tag {tag}" + (f": {reason}" if reason else "")
            return replace(file, tags=kept), [
                FieldChange(field="tags", before=list(file.tags), after=list(kept), reason=why)
            ]

        return await self._change(customer_id, mutate)

    # --- tier override ----------------------------------------------------------------------------------

    async def set_tier_override(self, customer_id: str, tier: ValueTier, reason: str) -> CustomerFile:
        """A non-monetary promotion (or demotion) that sticks until cleared [002 L629-631]."""

        async def mutate(_session: AsyncSession, file: CustomerFile) -> tuple[CustomerFile, list[FieldChange]]:
            record = FieldChange(
                field="tier_override", before=_tier(file.tier_override), after=tier.value, reason=reason
            )
            return replace(file, tier_override=tier, tier_override_reason=reason), [record]

        return await self._change(customer_id, mutate)

    async def clear_tier_override(self, customer_id: str, reason: str) -> CustomerFile:
        async def mutate(_session: AsyncSession, file: CustomerFile) -> tuple[CustomerFile, list[FieldChange]]:
            if file.tier_override is None:
                raise ItemNotFound(f"customer {customer_id!r} has no tier override to clear")
            record = FieldChange(field="tier_override", before=file.tier_override.value, after=None, reason=reason)
            return replace(file, tier_override=None, tier_override_reason=None), [record]

        return await self._change(customer_id, mutate)

    # --- B2B contacts -------------------------------------------------------------------------------------

    async def add_contact(self, customer_id: str, contact: dict[str, Any]) -> dict[str, Any]:
        contact = dict(contact)
        contact["contact_id"] = contact.get("contact_id") or uuid.uuid4().hex[:12]

        async def mutate(session: AsyncSession, file: CustomerFile) -> tuple[CustomerFile, list[FieldChange]]:
            if await repository.contact_exists(session, customer_id, contact["contact_id"]):
                raise Conflict(f"contact {contact['contact_id']!r} already exists for {customer_id!r}")
            await repository.add_contact(session, customer_id, contact, datetime.now(UTC))
            count = await repository.count_contacts(session, customer_id)
            why = f"operator added contact {contact['name']}"
            return replace(file, contact_count=count), [
                FieldChange(field="contacts", before=file.contact_count, after=count, reason=why)
            ]

        await self._change(customer_id, mutate)
        return contact

    async def remove_contact(self, customer_id: str, contact_id: str) -> None:
        async def mutate(session: AsyncSession, file: CustomerFile) -> tuple[CustomerFile, list[FieldChange]]:
            if not await repository.delete_contact(session, customer_id, contact_id):
                raise ItemNotFound(f"customer {customer_id!r} has no contact {contact_id!r}")
            count = await repository.count_contacts(session, customer_id)
            why = f"operator removed contact {contact_id}"
            return replace(file, contact_count=count), [
                FieldChange(field="contacts", before=file.contact_count, after=count, reason=why)
            ]

        await self._change(customer_id, mutate)

    # --- notes (staff only) ---------------------------------------------------------------------------

    async def add_note(self, customer_id: str, text: str, author: str | None) -> dict[str, Any]:
        now = datetime.now(UTC)
        async with transaction(self.sessions) as session:
            if await repository.load_file(session, customer_id) is None:
                raise CustomerNotFound(customer_id)
            note_id = await repository.add_note(session, customer_id, text, author, now)
        return {"id": note_id, "text": text, "author": author, "created_at": now}

    async def remove_note(self, customer_id: str, note_id: int) -> None:
        async with transaction(self.sessions) as session:
            if await repository.load_file(session, customer_id) is None:
                raise CustomerNotFound(customer_id)
            if not await repository.delete_note(session, customer_id, note_id):
                raise ItemNotFound(f"customer {customer_id!r} has no note {note_id}")

    # --- erasure --------------------------------------------------------------------------------------

    async def erase(self, customer_id: str, reason: str) -> datetime:
        """Erase everything held about a customer and announce ``customer.erased``; population
        statistics are refitted on the remaining data soon after."""
        now = datetime.now(UTC)
        async with transaction(self.sessions) as session:
            if await repository.load_file(session, customer_id, for_update=True) is None:
                raise CustomerNotFound(customer_id)
            pseudonym = "erased:" + hashlib.sha256(customer_id.encode()).hexdigest()[:16]
            await repository.erase(session, customer_id, pseudonym)
            erased = CustomerErasedEvent(
                event_id=f"customer.erased:{uuid.uuid4()}",
                customer_id=customer_id,
                occurred_at=now,
                received_at=now,
                source="scoring",
                payload=CustomerErasedPayload(reason=reason),
            )
            await enqueue(session, outbox, Outgoing(CUSTOMERS, customer_id, to_wire(erased)))
        if self.order_cache is not None:
            self.order_cache.forget(customer_id)
        if self.relay is not None:
            self.relay.notify()
        if self.maintenance is not None:
            self.maintenance.request_refit("erasure")
        return now


def _tier(tier: ValueTier | None) -> str | None:
    return None if tier is None else tier.value
