"""Scoring's consumer handler: intake events in, customer-file changes out, a run of events per
transaction.

For each event, the event claim, the file change, its scores, the history of what changed and the
``customer.updated`` outbox row are written in the batch's transaction; they commit together, and
the consumer loop commits the Kafka offsets only afterwards. A crash anywhere replays the events,
and the claims make the replay a no-op.

A transaction reads what its events need up front, in a few queries for all of them (claims,
files, orders, referrals, refund ids), applies the events one by one to that state in memory, and
writes the outcome at its end, a few multi-row statements in all: a round trip per event and
table cost more than the scoring itself.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Collection, Sequence
from contextlib import asynccontextmanager
from dataclasses import asdict, replace
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from aiokafka import ConsumerRecord
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.scoring import repository
from services.scoring.clock import Clock
from services.scoring.customer_file import (
    CustomerFile,
    add_purchase,
    add_refund,
    count_interaction,
    evolve,
    merge_consent,
    merge_traits,
    note_complaint,
    note_engagement,
    note_order,
    note_share_of_wallet,
    note_touch,
)
from services.scoring.engine import Announcement, FileChanges, ModelStore, derived_event_id, rescored
from services.scoring.order_cache import OrderCache
from services.scoring.purchases import Occasion, OccasionBook, OrderLine
from services.scoring.repository import RefundBooking, RefundKey
from services.scoring.scorecard import Rules
from services.scoring.settings import ScoringSettings
from services.scoring.tables import processed_events
from shared.contracts import (
    AnyEvent,
    ConsentEvent,
    CustomerCause,
    FieldChange,
    IdentifyEvent,
    InteractionEvent,
    InteractionKind,
    PurchaseEvent,
    PurchasePayload,
    RefundEvent,
    RefundPayload,
    TouchEvent,
)
from shared.db import transaction
from shared.ledger import OutboxRelay, claim_many, claimed_among
from shared.observability import ServiceMetrics

log = logging.getLogger("huitou.scoring")

IntakeEvent = IdentifyEvent | PurchaseEvent | RefundEvent | InteractionEvent | ConsentEvent
Apply = Callable[[AnyEvent, ConsumerRecord[bytes, bytes] | None], Awaitable[None]]

__all__ = ["ScoringHandler", "cause_of", "derived_event_id", "fold"]

ZERO = Decimal(0)


def fold(books: Books, file: CustomerFile, event: IntakeEvent, orders: list[OrderLine]) -> CustomerFile | None:
    """The file after ``event``, or None when the event changes nothing (e.g. a resent order).

    ``orders`` holds the customer's stored orders and is kept up to date with the event; ``books``
    records the orders, refunds and referrals the event brings.
    """
    at = event.occurred_at
    match event:
        case PurchaseEvent(payload=order):
            index = next((i for i, line in enumerate(orders) if line.order_id == order.order_id), None)
            if index is not None:  # the same order resent under a new event id: nothing to count
                known = orders[index]
                if event.event_id < known.event_id:
                    books.keep_first_event_id(file.customer_id, order.order_id, event.event_id)
                    orders[index] = replace(known, event_id=event.event_id)
                return None
            unmatched = dict(file.unmatched_refunds)
            early_refunds = Decimal(unmatched.pop(order.order_id, "0"))
            orders.append(books.record_order(file.customer_id, event.event_id, order, at, early_refunds))
            categories, last_order = note_order(file.categories, file.last_order, order, at)
            return evolve(
                file,
                totals=add_purchase(file.totals, order.amount, at, order.margin),
                categories=categories,
                last_order=last_order,
                share_of_wallet=note_share_of_wallet(file.share_of_wallet, order, at),
                unmatched_refunds=unmatched,
            )
        case RefundEvent(payload=refund):
            unmatched = dict(file.unmatched_refunds)
            booking = books.record_refund(file.customer_id, event.event_id, refund, at, orders)
            if booking == "duplicate":  # the same refund resent under a new event id: nothing to count
                return None
            if booking == "unmatched":  # its order has not arrived yet; it is booked on it when it does
                unmatched[refund.order_id] = str(Decimal(unmatched.get(refund.order_id, "0")) + refund.amount)
            return evolve(file, totals=add_refund(file.totals, refund.amount), unmatched_refunds=unmatched)
        case IdentifyEvent(payload=identify):
            return evolve(file, profile=merge_traits(file.profile, identify.traits, at))
        case ConsentEvent(payload=consent):
            return evolve(file, consents=merge_consent(file.consents, consent, at))
        case InteractionEvent(payload=interaction):
            referrals = file.referral_count
            if interaction.kind is InteractionKind.REFERRAL and interaction.referred_customer_id:
                referrals = books.record_referral(file.customer_id, interaction.referred_customer_id, at)
            return evolve(
                file,
                interactions=count_interaction(file.interactions, interaction),
                engagement=note_engagement(file.engagement, interaction, at),
                complaints=note_complaint(file.complaints, interaction, at, event.event_id),
                referral_count=referrals,
            )
    return None


def cause_of(event: IntakeEvent) -> CustomerCause:
    return CustomerCause(
        event_id=event.event_id,
        type=event.type,
        occurred_at=event.occurred_at,
        historical=event.historical,
        order_id=getattr(event.payload, "order_id", None),
        amount=getattr(event.payload, "amount", None),
        interaction_kind=event.payload.kind if isinstance(event, InteractionEvent) else None,
    )


class ScoringHandler:
    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        relay: OutboxRelay,
        metrics: ServiceMetrics,
        *,
        settings: ScoringSettings | None = None,
        models: ModelStore | None = None,
        clock: Clock | None = None,
        order_cache: OrderCache | None = None,
    ) -> None:
        settings = settings or ScoringSettings()
        self._sessions = sessions
        self._relay = relay
        self._metrics = metrics
        self._rules: Rules = settings.rules()
        self._models = models or ModelStore(sessions)
        self._clock = clock or Clock(settings.clock)
        self.order_cache = order_cache if order_cache is not None else OrderCache(settings.order_cache_lines)

    async def __call__(self, event: AnyEvent, record: ConsumerRecord[bytes, bytes] | None = None) -> None:
        """Apply one event in a transaction of its own."""
        async with self.transaction() as apply:
            await apply(event, record)

    @asynccontextmanager
    async def transaction(self, upcoming: Sequence[AnyEvent] = ()) -> AsyncIterator[Apply]:
        """One transaction for a run of events; see :class:`shared.kafka.BatchHandler`."""
        batch = _Batch(self.order_cache, self._rules)
        async with transaction(self._sessions) as session:
            await batch.load(session, upcoming)

            async def apply(event: AnyEvent, _record: ConsumerRecord[bytes, bytes] | None = None) -> None:
                await self._apply(session, event, batch)

            yield apply
            await batch.write(session)
        # Only now is the work durable: a rolled-back batch is retried, and counts nothing twice,
        # and its customers' order lines are what the next batch would read back.
        if self.order_cache.max_lines > 0:
            self.order_cache.keep(batch.committed_orders())
        if batch.duplicates:
            self._metrics.duplicates_skipped.labels("scoring").inc(batch.duplicates)
        if batch.changes.queued:
            self._relay.notify()

    async def _apply(self, session: AsyncSession, event: AnyEvent, batch: _Batch) -> None:
        if not isinstance(event, IntakeEvent | TouchEvent):
            return  # not ours to fold (alias: not merged yet)
        if not await batch.claim(session, event):
            batch.duplicates += 1
            return
        await batch.load(session, [event], claims=False)  # read up front already, unless it was not announced
        if isinstance(event, TouchEvent):
            batch.note_touch(event)
            return
        current = batch.file(event.customer_id)
        before = current or CustomerFile(event.customer_id, referred_by=batch.books.first_referrer(event.customer_id))
        orders = batch.books.orders(event.customer_id)
        folded = fold(batch.books, before, event, orders)
        if folded is None:
            return
        folded = folded.seen(event.occurred_at)
        model = await self._models.current(session)
        history = batch.books.history(event.customer_id)
        after, found = rescored(folded, orders, model, self._clock.for_file(folded), self._rules, history)
        if current is None and _is_referral(event):
            # A new file's referrer is read again after a referral: it could name the customer themself.
            after = evolve(after, referred_by=batch.books.first_referrer(event.customer_id))
        announcement = Announcement(cause_of(event), event.historical, event.trace_id)
        batch.store(current, after, found, announcement)


def _is_referral(event: AnyEvent) -> bool:
    return isinstance(event, InteractionEvent) and event.payload.kind is InteractionKind.REFERRAL


class _Batch:
    """One transaction's state: what its events read, loaded for all of them in a few queries and
    kept up to date as each applies (a customer's second event sees the first one's change); and
    what they write, held until the end of the block."""

    def __init__(self, order_cache: OrderCache | None, rules: Rules) -> None:
        self.duplicates = 0
        self.books = Books(order_cache, rules)
        self.changes = FileChanges()
        self._checked: set[str] = set()
        """Event ids whose claim is known: looked up, or claimed in this transaction."""
        self._claimed: set[str] = set()
        """Of those, the ones applied before or in this transaction."""
        self._claims: list[str] = []
        """Claimed in this transaction, still to be written."""
        self._files: dict[str, CustomerFile | None] = {}
        """Every customer read so far, as this transaction has left their file (None: none yet)."""
        self._unsettled: set[str] = set()
        """Customers whose file in ``_files`` is still as computed, not as it would be read back."""

    async def load(self, session: AsyncSession, events: Sequence[AnyEvent], *, claims: bool = True) -> None:
        """Read what ``events`` need that is not held yet: their claims, files, orders, referrals
        and refund ids, a query each."""
        ours = [e for e in events if isinstance(e, IntakeEvent | TouchEvent)]
        customers = sorted({e.customer_id for e in ours} - self._files.keys())
        if customers:
            # Locked, in id order, for the transaction (PostgreSQL): the lapse sweep and operators
            # write files too.
            files = {f.customer_id: f for f in await repository.load_files(session, customers, for_update=True)}
            self._files.update({cid: files.get(cid) for cid in customers})
        if claims:
            # After the locks: a replica that applied these customers' events meanwhile (a
            # rebalance) has committed by now, and its claims read as duplicates, not as a
            # unique violation that fails the batch.
            ids = {e.event_id for e in ours} - self._checked
            if ids:
                self._claimed |= await claimed_among(session, processed_events, ids)
                self._checked |= ids
        await self.books.load(session, ours, customers, self._files)

    async def claim(self, session: AsyncSession, event: IntakeEvent | TouchEvent) -> bool:
        """Claim the event for this transaction; False if it was applied before (or earlier in it)."""
        event_id = event.event_id
        if event_id not in self._checked:
            # Not announced up front: claimed on its own, like in a transaction of one.
            self._checked.add(event_id)
            claimed = await repository.claim(session, event_id)
            self._claimed.add(event_id)
            return claimed
        if event_id in self._claimed:
            return False
        self._claimed.add(event_id)
        self._claims.append(event_id)
        return True

    def _held(self, customer_id: str) -> CustomerFile | None:
        """The file as this transaction has left it, as a re-read would give it."""
        file = self._files[customer_id]
        if customer_id in self._unsettled and file is not None:
            # Settled only when read again: most customers have one event in a batch.
            file = self._files[customer_id] = repository.as_stored(file)
            self._unsettled.discard(customer_id)
        return file

    def file(self, customer_id: str) -> CustomerFile | None:
        """The file as this transaction has left it, with its current referrer."""
        file = self._held(customer_id)
        if file is None:
            return None
        referrer = self.books.first_referrer(customer_id)
        # A referral earlier in the transaction may have named this customer.
        return file if file.referred_by == referrer else evolve(file, referred_by=referrer)

    def store(
        self,
        before: CustomerFile | None,
        after: CustomerFile,
        found: list[FieldChange],
        announcement: Announcement | None,
    ) -> None:
        self._files[after.customer_id] = self.changes.record(before, after, found, announcement, datetime.now(UTC))
        self._unsettled.add(after.customer_id)

    def note_touch(self, event: TouchEvent) -> None:
        """Keep the care a customer received in their file (touches by outcome, the latest sent).

        Nothing is announced: care changes no score, and a customer.updated per touch would only
        send outreach its own news back."""
        current = self._held(event.customer_id)
        if current is None:
            return  # no file (erased, or a touch for a customer scoring never saw): nothing to keep
        engagement = note_touch(current.engagement, event.payload, event.occurred_at)
        if engagement != current.engagement:
            # Written alone (one narrow UPDATE) unless the file changes otherwise in this batch.
            stored = self.changes.record_engagement(current, engagement, datetime.now(UTC))
            self._files[event.customer_id] = stored
            self._unsettled.add(event.customer_id)

    def committed_orders(self) -> list[tuple[CustomerFile, list[OrderLine], list[Occasion]]]:
        """Each customer's file, order lines and occasions as this transaction left them (once
        committed: as the database holds them)."""
        return [
            (file, self.books.orders(cid), self.books.history(cid))
            for cid, file in self._files.items()
            if file is not None and self.books.has_orders(cid)
        ]

    async def write(self, session: AsyncSession) -> None:
        """Everything the applied events changed, a multi-row statement per table. Claims first:
        one another replica took meanwhile fails the batch before the rest is sent."""
        await claim_many(session, processed_events, self._claims, datetime.now(UTC))
        await self.books.write(session)
        await self.changes.write(session)


class Books:
    """The orders, refunds and referrals of the customers a transaction reads, as it has left
    them; what it adds is written at its end."""

    def __init__(self, order_cache: OrderCache | None, rules: Rules) -> None:
        self._cache = order_cache
        self._tz = rules.timezone
        self._basis = rules.tiers.basis
        self._orders: dict[str, list[OrderLine]] = {}
        self._occasions: dict[str, OccasionBook] = {}
        """Built on first use from the lines (or taken from the cache), then kept up to date."""
        self._new_orders: dict[tuple[str, str], dict[str, Any]] = {}
        self._refunded: dict[tuple[str, str], Decimal] = {}
        """Refunds booked on orders stored before this transaction, by (customer, order)."""
        self._first_event_ids: dict[tuple[str, str], str] = {}
        self._refund_keys: set[RefundKey] = set()
        self._refund_keys_read: set[str] = set()
        self._new_refunds: list[dict[str, Any]] = []
        self._by_referrer: dict[str, dict[str, datetime]] = {}
        self._by_referred: dict[str, dict[str, datetime]] = {}
        self._referrers_read: set[str] = set()
        """Customers all of whose referrals are in ``_by_referrer``."""
        self._referred_read: set[str] = set()
        """Customers all of whose referrers are in ``_by_referred``."""
        self._new_referrals: dict[tuple[str, str], datetime] = {}
        self._earlier_referrals: dict[tuple[str, str], datetime] = {}

    async def load(
        self,
        session: AsyncSession,
        events: Sequence[AnyEvent],
        customers: Collection[str],
        files: dict[str, CustomerFile | None],
    ) -> None:
        """Read for ``events`` of newly read ``customers``: their orders, the referrals that name
        them or that referrers among them made, and the refund ids booked for them."""
        with_orders = [cid for cid in customers if (file := files[cid]) is not None and file.totals.order_count]
        cache = self._cache
        if cache is not None:
            # Files just read, so their stamps are the database's: a held entry matching one is
            # exactly what the read would return.
            unread = []
            for cid in with_orders:
                held = cache.held_for(files[cid])  # type: ignore[arg-type]  # not None: filtered above
                if held is None:
                    unread.append(cid)
                else:
                    self._orders[cid] = held[0]
                    self._occasions[cid] = OccasionBook(held[1], self._tz, self._basis)
            with_orders = unread
        if with_orders:
            self._orders.update(await repository.order_lines_for(session, with_orders))
        for cid in customers:
            self._orders.setdefault(cid, [])
        referrers = {e.customer_id for e in events if _is_referral(e)} - self._referrers_read
        referred = set(customers) - self._referred_read
        if referrers or referred:
            for referrer, named, at in await repository.referrals_among(session, referrers, referred):
                # What this transaction holds is newer than the database: it wins.
                self._by_referrer.setdefault(referrer, {}).setdefault(named, at)
                self._by_referred.setdefault(named, {}).setdefault(referrer, at)
            self._referrers_read |= referrers
            self._referred_read |= referred
        with_refund_ids = {
            e.customer_id for e in events if isinstance(e, RefundEvent) and e.payload.refund_id is not None
        } - self._refund_keys_read
        if with_refund_ids:
            self._refund_keys |= await repository.refund_keys(session, with_refund_ids)
            self._refund_keys_read |= with_refund_ids

    def orders(self, customer_id: str) -> list[OrderLine]:
        return self._orders[customer_id]

    def has_orders(self, customer_id: str) -> bool:
        return bool(self._orders.get(customer_id))

    def history(self, customer_id: str) -> list[Occasion]:
        """The customer's purchase occasions, of :meth:`orders` as they are now."""
        book = self._occasions.get(customer_id)
        if book is None:
            book = self._occasions[customer_id] = OccasionBook.of(self._orders[customer_id], self._tz, self._basis)
        return book.history

    def record_order(
        self, customer_id: str, event_id: str, order: PurchasePayload, at: datetime, refunded: Decimal
    ) -> OrderLine:
        """A new order (the caller has checked its id against the customer's orders); ``refunded``
        carries refunds that arrived before it."""
        row = repository.order_row(customer_id, event_id, order, at, refunded)
        self._new_orders[customer_id, order.order_id] = row
        line = repository.order_line(row)
        book = self._occasions.get(customer_id)
        if book is not None:
            book.add(line)
        return line

    def keep_first_event_id(self, customer_id: str, order_id: str, event_id: str) -> None:
        """A resent order keeps the lowest of its event ids, so its provenance does not depend on arrival."""
        new = self._new_orders.get((customer_id, order_id))
        if new is not None:
            new["event_id"] = min(new["event_id"], event_id)
        else:
            kept = self._first_event_ids.get((customer_id, order_id), event_id)
            self._first_event_ids[customer_id, order_id] = min(kept, event_id)

    def record_refund(
        self, customer_id: str, event_id: str, refund: RefundPayload, at: datetime, orders: list[OrderLine]
    ) -> RefundBooking:
        """Keep the refund as its own record and book it on its order, one of the customer's ``orders``."""
        if refund.refund_id is not None:
            key = (customer_id, refund.order_id, refund.refund_id)
            if key in self._refund_keys:
                return "duplicate"
            self._refund_keys.add(key)
        self._new_refunds.append(repository.refund_row(customer_id, event_id, refund, at))
        index = next((i for i, line in enumerate(orders) if line.order_id == refund.order_id), None)
        if index is None:
            return "unmatched"
        line = orders[index]
        orders[index] = repository.order_line({**asdict(line), "refunded": line.refunded + refund.amount})
        book = self._occasions.get(customer_id)
        if book is not None:
            book.changed(orders[index], orders)
        new = self._new_orders.get((customer_id, refund.order_id))
        if new is not None:
            new["refunded"] += refund.amount
        else:
            booked = self._refunded.get((customer_id, refund.order_id), ZERO)
            self._refunded[customer_id, refund.order_id] = booked + refund.amount
        return "booked"

    def record_referral(self, referrer: str, referred: str, at: datetime) -> int:
        """Remember who referred whom (earliest time wins); returns the referrer's distinct referrals."""
        made = self._by_referrer.setdefault(referrer, {})
        known = made.get(referred)
        if known is None or at < known:
            if known is None or (referrer, referred) in self._new_referrals:
                self._new_referrals[referrer, referred] = at
            else:
                self._earlier_referrals[referrer, referred] = at
            made[referred] = at
            self._by_referred.setdefault(referred, {})[referrer] = at
        return len(made)

    def first_referrer(self, customer_id: str) -> str | None:
        """The first referrer of a customer (by event time, then id, so arrival order does not matter)."""
        referrers = self._by_referred.get(customer_id)
        if not referrers:
            return None
        return min(referrers.items(), key=lambda item: (item[1], item[0]))[0]

    async def write(self, session: AsyncSession) -> None:
        await repository.insert_orders(session, list(self._new_orders.values()))
        await repository.add_refunded(session, self._refunded)
        await repository.keep_first_event_ids(session, self._first_event_ids)
        await repository.insert_refunds(session, self._new_refunds)
        await repository.save_referrals(
            session,
            [(r, d, at) for (r, d), at in self._new_referrals.items()],
            [(r, d, at) for (r, d), at in self._earlier_referrals.items()],
        )
