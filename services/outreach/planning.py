"""Service layer of planning: the plans in force (cached, reloaded when edited anywhere), the
shipped defaults seeded into the database, ``apply_planned`` — turning a planned touch into a
stored one under the contact policy (holdout, refusals, dedupe window, offer budget, approval) —
and ``PlanningState``, what one consumer transaction reads and writes, held in memory."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.outreach import repository
from services.outreach.calendar import Holiday, customer_zone, load_holidays
from services.outreach.care import (
    ActivePlan,
    PlanBook,
    PlannedTouch,
    PlanningDefaults,
    budget_period_start,
    decide_offer,
)
from services.outreach.plans import PlanError, load_plan_file, parse_plan, with_follow_up_delay
from services.outreach.policy import ConsentBook, explicitly_refused, in_holdout
from services.outreach.render import TemplateSpec, load_template_file
from services.outreach.settings import OutreachSettings
from services.outreach.tables import outbox, processed_events
from shared.contracts import CustomerSnapshot, Purpose, TouchStatus
from shared.db import transaction
from shared.kafka import Outgoing
from shared.ledger import claim_event, claim_many, claimed_among, enqueue_many

log = logging.getLogger("huitou.outreach.planning")


def planning_defaults(settings: OutreachSettings) -> PlanningDefaults:
    return PlanningDefaults(
        expires_after=settings.default_expires_after,
        attribution_window=settings.default_attribution_window,
        timezone=settings.default_timezone,
        locale=settings.default_locale,
    )


@dataclass
class Catalog:
    book: PlanBook
    templates: dict[str, TemplateSpec]


class PlanCatalog:
    """Care plans and templates in force, read from the database and kept in memory.

    A replica re-reads them when their fingerprint changes (checked at most every
    ``plan_refresh_seconds``), and at once after an edit through its own API."""

    def __init__(self, sessions: async_sessionmaker[AsyncSession], settings: OutreachSettings) -> None:
        self._sessions = sessions
        self._settings = settings
        self._file = load_plan_file(settings.care_plans_file)
        self._holidays: dict[str, Holiday] = load_holidays(settings.holidays_file)
        self._catalog: Catalog | None = None
        self._stamp: tuple[Any, ...] | None = None
        self._checked = 0.0
        self._lock = asyncio.Lock()

    @property
    def holidays(self) -> dict[str, Holiday]:
        return self._holidays

    def invalidate(self) -> None:
        self._checked = 0.0
        self._stamp = None

    async def current(self) -> Catalog:
        if self._catalog is not None and time.monotonic() - self._checked < self._settings.plan_refresh_seconds:
            return self._catalog
        async with self._lock:
            if self._catalog is not None and time.monotonic() - self._checked < self._settings.plan_refresh_seconds:
                return self._catalog
            async with self._sessions() as session:
                stamp = await repository.plans_stamp(session)
                if self._catalog is None or stamp != self._stamp:
                    self._catalog = await self._load(session)
                    self._stamp = stamp
            self._checked = time.monotonic()
            return self._catalog

    async def _load(self, session: AsyncSession) -> Catalog:
        active: list[ActivePlan] = []
        for row in await repository.stored_plans(session):
            try:
                active.append(ActivePlan(parse_plan(row["definition"]), row["version"]))
            except PlanError as error:
                log.error("stored care plan %s is invalid and ignored: %s", row["name"], error)
        templates: dict[str, TemplateSpec] = {}
        for row in await repository.stored_templates(session):
            try:
                templates[row["name"]] = TemplateSpec.model_validate({"name": row["name"], "locales": row["locales"]})
            except ValueError as error:
                log.error("stored template %s is invalid and ignored: %s", row["name"], error)
        book = PlanBook(
            plans=tuple(active),
            grade_order=tuple(self._file.grade_order),
            tier_benefits={tier.value: dict(texts) for tier, texts in self._file.tier_benefits.items()},
            holidays=self._holidays,
        )
        return Catalog(book, templates)

    async def seed_defaults(self) -> None:
        """Store the shipped plans and templates; refresh the ones no operator has edited."""
        now = datetime.now(UTC)
        plans = with_follow_up_delay(self._file.plans, self._settings.follow_up_delay)
        shipped_templates = load_template_file(self._settings.templates_file)
        try:
            async with transaction(self._sessions) as session:
                for plan in plans:
                    definition = plan.version_payload()
                    stored = await repository.stored_plan(session, plan.name)
                    if stored is None:
                        await repository.save_plan(
                            session, plan.name, definition, origin="default", action="created", by="defaults", now=now
                        )
                    elif stored["origin"] == "default" and not stored["deleted"] and stored["definition"] != definition:
                        await repository.save_plan(
                            session, plan.name, definition, origin="default", action="refreshed", by="defaults", now=now
                        )
                for template in shipped_templates:
                    locales = template.model_dump(mode="json", exclude_defaults=False)["locales"]
                    stored_t = await repository.stored_template(session, template.name)
                    if stored_t is None or (stored_t["origin"] == "default" and stored_t["locales"] != locales):
                        await repository.save_template(
                            session, template.name, locales, origin="default", by="defaults", now=now
                        )
        except IntegrityError:
            log.info("another replica seeded the default care plans first")
        self.invalidate()


async def apply_planned(
    session: AsyncSession,
    planned: PlannedTouch,
    *,
    cause_event_id: str,
    book: PlanBook,
    settings: OutreachSettings,
    now: datetime,
    snapshot: CustomerSnapshot | None,
    trace_id: str | None = None,
    state: PlanningState | None = None,
) -> list[Outgoing]:
    """Store one planned touch unless its key exists; returns the lifecycle messages to enqueue.

    With ``state`` (the transaction's, shared by a run of touches) the touch is held there and
    written when it flushes; without, it is written before this returns."""
    own = state is None
    if state is None:
        state = PlanningState(session)
    messages = await _place(
        state,
        planned,
        cause_event_id=cause_event_id,
        book=book,
        settings=settings,
        now=now,
        snapshot=snapshot,
        trace_id=trace_id,
    )
    if own:
        await state.flush()
    return messages


async def _place(
    state: PlanningState,
    planned: PlannedTouch,
    *,
    cause_event_id: str,
    book: PlanBook,
    settings: OutreachSettings,
    now: datetime,
    snapshot: CustomerSnapshot | None,
    trace_id: str | None,
) -> list[Outgoing]:
    if await state.touch_key_exists(planned):
        return []
    if planned.dedupe_window is not None and await state.recent_touch_of_plan(
        planned.customer_id, planned.plan, planned.due_at, planned.dedupe_window
    ):
        return []  # a touch of this plan went (or goes) out within the window: not a new moment
    active = book.get(planned.plan)
    status = TouchStatus.SCHEDULED.value
    reason: str | None = None
    holdout = False
    if planned.purpose is Purpose.MARKETING and in_holdout(
        planned.customer_id, salt=settings.holdout_salt, share=settings.holdout_share
    ):
        # Recorded, not dropped: the holdout's would-have-been touches are the baseline of lift.
        status, reason, holdout = TouchStatus.SUPPRESSED.value, "holdout", True
        planned = _without_offer(planned)
    elif active is not None:
        explicit = await state.explicit_consents(planned.customer_id)
        if explicitly_refused(active.plan.channels, planned.purpose, explicit, snapshot):
            status, reason = TouchStatus.SUPPRESSED.value, f"no_consent: refused on every channel ({planned.purpose})"
            planned = _without_offer(planned)
    if status == TouchStatus.SCHEDULED.value and planned.offer is not None and active is not None:
        planned, status, reason = await _offer(state, planned, active, settings, now)
    row = repository.touch_row(
        planned,
        cause_event_id=cause_event_id,
        status=status,
        reason=reason,
        holdout=holdout,
        now=now,
        trace_id=trace_id,
    )
    state.add_touch(row)
    touch_id = row["touch_id"]
    messages: list[Outgoing] = []
    common: dict[str, Any] = {
        "customer_id": planned.customer_id,
        "touch_id": touch_id,
        "plan": planned.plan,
        "now": now,
        "channel": planned.channel.value if planned.channel else None,
        "due_at": planned.due_at,
        "trace_id": trace_id,
    }
    if status == TouchStatus.SUPPRESSED.value:
        assert reason is not None
        state.add_suppression(
            {
                "touch_id": touch_id,
                "customer_id": planned.customer_id,
                "plan": planned.plan,
                "reason": reason[:500],
                "at": now,
            }
        )
        messages.append(repository.lifecycle_message(status=TouchStatus.SUPPRESSED, reason=reason, **common))
        return messages
    if status == repository.PENDING_APPROVAL:
        messages.append(
            repository.lifecycle_message(
                status=TouchStatus.SCHEDULED, reason=reason, event_suffix=repository.PENDING_APPROVAL, **common
            )
        )
    else:
        messages.append(repository.lifecycle_message(status=TouchStatus.SCHEDULED, reason=reason, **common))
    if planned.opens_task is not None:
        task = planned.opens_task
        state.add_task(
            {
                "task_id": repository.task_id_for(touch_id),
                "customer_id": planned.customer_id,
                "touch_id": touch_id,
                "kind": task.kind,
                "status": "open",
                "summary": _task_summary(planned),
                "acknowledge_by": now + task.acknowledge_within,
                "resolve_by": now + task.resolve_within,
                "created_at": now,
            }
        )
    return messages


@dataclass
class _Held:
    """The snapshot outreach holds of one customer, as this transaction sees it."""

    version: int | None = None
    stored: Any = None  # the stored JSON, validated only if someone reads it
    snapshot: CustomerSnapshot | None = None
    validated: bool = True
    tombstone: int | None = None
    changed_at: datetime | None = None  # set: the snapshot is to be written


class PlanningState:
    """What one transaction reads and writes for outreach's consumer, held in memory.

    Reads arrive in one query per kind (claimed ids, snapshots and tombstones, consents,
    touches) for all the customers a batch names — ``prefetch`` — or, for a customer nobody
    announced, per customer on first use. Each event then reads and changes this state, so a
    later event sees an earlier one's claim, snapshot, consents and touches. Writes are kept and
    ``flush`` sends them before the commit, one statement per table (an erasure: one per table
    it clears), the outbox last in the order the messages were produced.

    ``exact_keys``: a planned touch's idempotency key is also looked up in the whole table, not
    only among its customer's touches. Keys carry their customer's id, so the prefetched
    touches answer a batch; a transaction of one (the loop's fallback) asks the table, as the
    unique index is the final word.

    ``horizon``: the longest dedupe or attribution window in force. Touches are then read only if
    due or sent within it (of older touches only the idempotency key, a narrow column), and a customer's
    older touches are read when a window reaches further back (a late event), so the answers
    are those of reading them all. ``attribution_reach``: the longest attribution window.

    ``windowed_plans``: the plans with a dedupe window. Whole rows are then read only of the
    touches a rule looks at — those plans' (a window compares them) and the ones a purchase can
    still convert — and of every other touch only its key: answers again those of reading all.

    Customers' rows are locked as they are read (PostgreSQL), and ``flush`` looks for tombstones
    again: nothing is written for a customer an operator erased since the state read them.
    """

    def __init__(
        self,
        session: AsyncSession,
        *,
        exact_keys: bool = True,
        horizon: timedelta | None = None,
        attribution_reach: timedelta | None = None,
        windowed_plans: Collection[str] | None = None,
    ) -> None:
        self.session = session
        self._windowed_plans = None if windowed_plans is None else frozenset(windowed_plans)
        self._exact_keys = exact_keys
        self._horizon = horizon
        self._since = datetime.now(UTC) - horizon if horizon is not None else None
        self._attribution_reach = attribution_reach
        self._touches_since: dict[str, datetime | None] = {}  # customer -> touches read since (None: all)
        self._tombstones_read: dict[str, int | None] = {}  # customer -> tombstone when first read
        self._claims_known: set[str] = set()  # ids whose claim was looked up in advance
        self._claimed: set[str] = set()  # applied before, or in this transaction
        self._new_claims: list[str] = []
        self._held: dict[str, _Held] = {}
        self._consents: dict[str, dict[tuple[str, str], dict[str, Any]]] = {}
        self._changed_consents: set[tuple[str, str, str]] = set()
        self._touches: dict[str, list[dict[str, Any]]] = {}
        self._keys: dict[str, str | None] = {}  # idempotency key -> its customer (None: found by key)
        self._keys_looked_up: set[str] = set()
        self._new_touches: list[dict[str, Any]] = []
        self._touch_changes: dict[str, dict[str, Any]] = {}  # stored touch id -> columns to set
        self._suppressions: list[dict[str, Any]] = []
        self._tasks: dict[str, dict[str, Any]] = {}
        self._erased: dict[str, tuple[int, datetime]] = {}  # customer -> (tombstone version, when)
        self._spent: dict[tuple[str, datetime], Decimal] = {}
        self.messages: list[Outgoing] = []

    # --- reads ----------------------------------------------------------------------------

    async def prefetch(
        self,
        customer_ids: set[str],
        event_ids: list[str],
        touch_customers: set[str] | None = None,
        earliest: datetime | None = None,
    ) -> None:
        """Read what a batch's events will need, one query per kind; touches only of
        ``touch_customers`` (those whose events can plan or convert; default: all). ``earliest``:
        the earliest moment among the batch's events — a backfill's are years old, and their
        windows reach back from then, so touches are read back that far in the same query rather
        than customer by customer when a window asks."""
        self._claimed |= await claimed_among(self.session, processed_events, event_ids)
        self._claims_known |= set(event_ids)
        await self._load_customers(customer_ids)
        await self._load_consents(customer_ids)
        reach = earliest - self._horizon if earliest is not None and self._horizon is not None else None
        await self._load_touches(customer_ids if touch_customers is None else touch_customers, reach)

    async def _load_customers(self, customer_ids: set[str]) -> None:
        missing = sorted(c for c in customer_ids if c not in self._held)
        if not missing:
            return
        stored = await repository.stored_customers(self.session, missing, lock=True)
        tombstones = await repository.tombstones(self.session, missing)
        for customer_id in missing:
            version, data = stored.get(customer_id, (None, None))
            self._held[customer_id] = _Held(
                version=version, stored=data, validated=data is None, tombstone=tombstones.get(customer_id)
            )
            self._tombstones_read[customer_id] = tombstones.get(customer_id)

    async def _load_consents(self, customer_ids: set[str]) -> None:
        missing = [c for c in customer_ids if c not in self._consents]
        if missing:
            await self._load_customers(set(missing))  # locked, and its tombstone known to flush
            found = await repository.consents_of(self.session, missing)
            for customer_id in missing:
                self._consents[customer_id] = found.get(customer_id, {})

    async def _load_touches(self, customer_ids: set[str], reach: datetime | None = None) -> None:
        missing = [c for c in customer_ids if c not in self._touches]
        if not missing:
            return
        await self._load_customers(set(missing))
        since = self._since
        if since is not None and reach is not None and reach < since:
            since = reach
        found = await repository.touches_of(self.session, missing, since=since, windowed_plans=self._windowed_plans)
        if self._windowed_plans is not None:
            keys = await repository.touch_keys_of(self.session, missing)  # rows were read of some touches only
        elif since is not None:
            keys = await repository.touch_keys_of(self.session, missing, before=since)
        else:
            keys = {}
        for customer_id in missing:
            rows = found.get(customer_id, [])
            self._touches[customer_id] = rows
            self._touches_since[customer_id] = since
            self._keys.update((row["idempotency_key"], customer_id) for row in rows)
            self._keys.update((key, customer_id) for key in keys.get(customer_id, []))

    async def _customer(self, customer_id: str) -> _Held:
        await self._load_customers({customer_id})
        return self._held[customer_id]

    async def _touches_of(self, customer_id: str, reach: datetime | None) -> list[dict[str, Any]]:
        """The customer's touches, with every one due or sent since ``reach`` (None: all)."""
        await self._load_touches({customer_id})
        since = self._touches_since[customer_id]
        if since is not None and (reach is None or reach < since):
            # A window reaching back before what was read: read the rest (held rows, perhaps
            # changed here, stay as they are).
            held = self._touches[customer_id]
            known = {row["touch_id"] for row in held}
            older = (await repository.touches_of(self.session, [customer_id], windowed_plans=self._windowed_plans)).get(
                customer_id, []
            )
            held.extend(row for row in older if row["touch_id"] not in known)
            self._touches_since[customer_id] = None
        return self._touches[customer_id]

    async def snapshot(self, customer_id: str) -> CustomerSnapshot | None:
        held = await self._customer(customer_id)
        if not held.validated:
            held.snapshot, held.validated = CustomerSnapshot.model_validate(held.stored), True
        return held.snapshot

    async def explicit_consents(self, customer_id: str) -> ConsentBook:
        await self._load_consents({customer_id})
        return {key: bool(row["granted"]) for key, row in self._consents[customer_id].items()}

    async def look_up_keys(self, planned: Sequence[PlannedTouch]) -> None:
        """Make ``touch_key_exists`` answer these touches from memory (one query for all)."""
        await self._load_touches({touch.customer_id for touch in planned})
        if not self._exact_keys:
            return
        unknown = {t.idempotency_key for t in planned} - self._keys.keys() - self._keys_looked_up
        if unknown:
            for key in await repository.existing_touch_keys(self.session, sorted(unknown)):
                self._keys.setdefault(key, None)
            self._keys_looked_up |= unknown

    async def touch_key_exists(self, planned: PlannedTouch) -> bool:
        await self.look_up_keys([planned])
        return planned.idempotency_key in self._keys

    async def recent_touch_of_plan(self, customer_id: str, plan: str, around: datetime, window: timedelta) -> bool:
        return any(
            row["plan"] == plan
            and row["status"] != TouchStatus.CANCELLED.value
            and around - window < row["due_at"] < around + window
            for row in await self._touches_of(customer_id, around - window)
        )

    async def offer_spent(self, plan: str, since: datetime) -> Decimal:
        """``repository.offer_spent`` as this transaction would see it."""
        if (plan, since) not in self._spent:
            self._spent[plan, since] = await repository.offer_spent(self.session, plan, since, list(self._erased))
        unsaved = sum(
            (
                row["offer_value"]
                for row in self._new_touches
                if row["plan"] == plan
                and row["created_at"] >= since
                and row["offer_value"] is not None
                and row["status"] not in repository.NOT_SPENT
            ),
            Decimal(0),
        )
        return self._spent[plan, since] + unsaved

    # --- changes --------------------------------------------------------------------------

    async def claim(self, event_id: str) -> bool:
        """Claim the event's id; False if it was applied before (or earlier in this transaction)."""
        if event_id in self._claimed:
            return False
        self._claimed.add(event_id)
        if event_id in self._claims_known:
            self._new_claims.append(event_id)
            return True
        # Not announced: claim it now, the way a transaction of one does.
        return await claim_event(self.session, processed_events, event_id)

    async def remember(self, customer_id: str, version: int, snapshot: CustomerSnapshot, now: datetime) -> bool:
        """``repository.remember_customer`` in memory: False when older than what we hold (or
        than an erasure)."""
        held = await self._customer(customer_id)
        if held.tombstone is not None and version <= held.tombstone:
            return False
        if held.version is not None and version <= held.version:
            return False
        held.version, held.snapshot, held.validated, held.changed_at = version, snapshot, True, now
        return True

    async def record_consent(
        self,
        customer_id: str,
        channel: str,
        purpose: str,
        granted: bool,
        occurred_at: datetime,
        source: str,
        event_id: str | None,
    ) -> bool:
        """``repository.record_consent`` in memory."""
        await self._load_consents({customer_id})
        book = self._consents[customer_id]
        changed = False
        for one in repository.consent_channels(channel):
            stored = book.get((one, purpose))
            if repository.decision_stands(occurred_at, stored["occurred_at"] if stored else None):
                book[one, purpose] = {
                    "customer_id": customer_id,
                    "channel": one,
                    "purpose": purpose,
                    "granted": granted,
                    "occurred_at": occurred_at,
                    "source": source,
                    "event_id": event_id,
                }
                self._changed_consents.add((customer_id, one, purpose))
                changed = True
        return changed

    async def attribute_purchase(
        self, customer_id: str, order_id: str | None, amount: Decimal | None, occurred_at: datetime, now: datetime
    ) -> list[dict[str, Any]]:
        """``repository.attribute_purchase`` in memory."""
        converted = []
        reach = occurred_at - self._attribution_reach if self._attribution_reach is not None else None
        for row in await self._touches_of(customer_id, reach):
            if row["converted_at"] is not None:
                continue
            sent = row["status"] == TouchStatus.SENT.value
            if not (sent or (row["status"] == TouchStatus.SUPPRESSED.value and row["holdout"])):
                continue
            start = row["sent_at"] if sent else row["due_at"]
            if start is None or not (start <= occurred_at <= start + timedelta(seconds=row["attribution_seconds"])):
                continue
            values: dict[str, Any] = {"converted_at": occurred_at, "converted_order_id": order_id, "revenue": amount}
            if sent:
                values["status"] = TouchStatus.CONVERTED.value
                converted.append({**row, **values})
            row.update(values, updated_at=now)
            if not row.get("unsaved"):
                self._touch_changes.setdefault(row["touch_id"], {}).update(values, updated_at=now)
        return converted

    async def erase(self, customer_id: str, now: datetime) -> None:
        """``repository.erase_customer`` in memory: what earlier events of this transaction
        planned for the customer goes too; the tombstone keeps the newest version seen."""
        held = await self._customer(customer_id)
        tombstone = held.version or 0
        held.tombstone = tombstone if held.tombstone is None else max(held.tombstone, tombstone)
        held.version, held.stored, held.snapshot, held.validated, held.changed_at = None, None, None, True, None
        self._erased[customer_id] = (held.tombstone, now)
        self._drop(customer_id)
        self._spent.clear()  # the budget no longer counts the customer's offers

    def _drop(self, customer_id: str) -> None:
        """Forget what this transaction read and planned of the customer (touches, consents)."""
        self._consents[customer_id] = {}
        self._touches_since[customer_id] = None  # nothing older to read: its touches are gone
        self._changed_consents = {key for key in self._changed_consents if key[0] != customer_id}
        gone = {row["touch_id"] for row in self._touches.get(customer_id, [])}
        self._touches[customer_id] = []
        self._keys = {key: owner for key, owner in self._keys.items() if owner != customer_id}
        self._new_touches = [row for row in self._new_touches if row["customer_id"] != customer_id]
        self._touch_changes = {t: values for t, values in self._touch_changes.items() if t not in gone}
        self._suppressions = [row for row in self._suppressions if row["customer_id"] != customer_id]
        self._tasks = {t: row for t, row in self._tasks.items() if row["customer_id"] != customer_id}

    def add_touch(self, row: dict[str, Any]) -> None:
        customer_id = row["customer_id"]
        assert customer_id in self._touches, "a touch is stored after its key was looked up"
        row["unsaved"] = True
        self._touches[customer_id].append(row)
        self._new_touches.append(row)
        self._keys[row["idempotency_key"]] = customer_id

    def add_suppression(self, row: dict[str, Any]) -> None:
        self._suppressions.append(row)

    def add_task(self, row: dict[str, Any]) -> None:
        self._tasks.setdefault(row["task_id"], row)

    def enqueue(self, messages: list[Outgoing]) -> None:
        self.messages += messages

    async def _skip_erased_meanwhile(self) -> None:
        """Drop the writes for customers an operator erased after this state read them: their
        tombstone is newer than the one read (PostgreSQL: an erasure that committed while the
        customer had no row to lock; SQLite's writers are serialised, a stale read fails to
        write instead)."""
        touched = (
            {c for c, held in self._held.items() if held.changed_at is not None}
            | {c for c, _, _ in self._changed_consents}
            | {row["customer_id"] for row in self._new_touches}
            | {row["customer_id"] for row in self._suppressions}
            | {row["customer_id"] for row in self._tasks.values()}
            | {c for c, rows in self._touches.items() for row in rows if row["touch_id"] in self._touch_changes}
        )
        if not touched:
            return
        now = await repository.tombstones(self.session, sorted(touched))
        gone = {c for c, version in now.items() if (read := self._tombstones_read.get(c)) is None or version > read}
        for customer_id in sorted(gone):
            log.warning("customer %s was erased during the transaction: nothing is written for them", customer_id)
            held = self._held.get(customer_id)
            if held is not None:
                held.tombstone, held.changed_at = now[customer_id], None
                held.version, held.stored, held.snapshot, held.validated = None, None, None, True
            if customer_id in self._erased:  # erased here too: keep the newer tombstone
                version, at = self._erased[customer_id]
                self._erased[customer_id] = (max(version, now[customer_id]), at)
            self._drop(customer_id)
        if gone:
            self.messages = [m for m in self.messages if m.key not in gone]

    async def flush(self) -> None:
        """Write what the transaction changed: erasures first (what follows them in the
        transaction is written after), the outbox last."""
        session = self.session
        await self._skip_erased_meanwhile()
        await claim_many(session, processed_events, self._new_claims)
        await repository.erase_many(session, self._erased)
        await repository.remember_many(
            session,
            [
                {
                    "customer_id": customer_id,
                    "version": held.version,
                    "snapshot": held.snapshot.model_dump(mode="json") if held.snapshot else None,
                    "updated_at": held.changed_at,
                }
                for customer_id, held in self._held.items()
                if held.changed_at is not None
            ],
        )
        await repository.save_consents(
            session, [self._consents[c][channel, purpose] for c, channel, purpose in sorted(self._changed_consents)]
        )
        await repository.insert_touches(
            session, [{name: value for name, value in row.items() if name != "unsaved"} for row in self._new_touches]
        )
        await repository.update_touches(session, self._touch_changes)
        await repository.insert_suppressions(session, self._suppressions)
        await repository.open_tasks(session, list(self._tasks.values()))
        await enqueue_many(session, outbox, self.messages)
        # Written: a later flush of the same state writes only what changes after this one.
        for row in self._new_touches:
            row.pop("unsaved")
        self._new_claims, self._erased, self._changed_consents, self._new_touches = [], {}, set(), []
        self._touch_changes, self._suppressions, self._tasks, self.messages = {}, [], {}, []
        for held in self._held.values():
            held.changed_at = None


async def _offer(
    state: PlanningState,
    planned: PlannedTouch,
    active: ActivePlan,
    settings: OutreachSettings,
    now: datetime,
) -> tuple[PlannedTouch, str, str | None]:
    plan = active.plan
    assert plan.offer is not None
    spent = Decimal(0)
    if plan.offer.budget is not None:
        local_now = now.astimezone(customer_zone(None, settings.default_timezone))
        since = budget_period_start(plan.offer.budget.per, local_now)
        spent = await state.offer_spent(plan.name, since)
    decision = decide_offer(plan, planned.offer, spent_this_period=spent)
    if decision.terms is None:
        return _without_offer(planned), TouchStatus.SCHEDULED.value, decision.note
    if decision.needs_approval:
        return (
            planned,
            repository.PENDING_APPROVAL,
            f"offer {decision.terms.code} worth {decision.terms.value} needs approval",
        )
    return planned, TouchStatus.SCHEDULED.value, None


def _without_offer(planned: PlannedTouch) -> PlannedTouch:
    from dataclasses import replace

    return replace(planned, offer=None)


def _task_summary(planned: PlannedTouch) -> str:
    facts = planned.context
    cause = facts.get("cause") or {}
    parts = [f"{planned.plan} for {planned.customer_id}"]
    if cause.get("kind") or cause.get("interaction_kind"):
        parts.append(f"after a {cause.get('kind') or cause.get('interaction_kind')}")
    if facts.get("rating") is not None:
        parts.append(f"rated {facts['rating']}/5")
    if facts.get("complaint_id"):
        parts.append(f"complaint {facts['complaint_id']}")
    summary = " ".join(parts)
    if facts.get("complaint_text"):
        summary += f": {facts['complaint_text']}"
    return summary
