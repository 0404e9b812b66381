"""The contact policy (pure): holdout, consent, send windows and quiet hours, frequency caps in
the customer's own calendar, and priority arbitration. The dispatcher asks ``decide`` right
before every send; planning asks ``in_holdout`` and ``explicitly_refused``.

Care must never feel like pressure (DOMAIN.md §4): quiet hours and caps *defer* a touch (until
it expires), consent and holdout *suppress* it, and every suppression carries its reason.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from shared.contracts import Channel, CustomerSnapshot, Purpose

ConsentBook = Mapping[tuple[str, str], bool]
"""Explicit decisions this service has seen, by (channel, purpose): consent events and unsubscribes."""


def in_holdout(customer_id: str, *, salt: str, share: float) -> bool:
    """A stable, uniform draw per customer: the same customer is in or out on every replica and
    after every restart, so lift is measured on a fixed group."""
    if share <= 0:
        return False
    digest = hashlib.sha256(f"{salt}:{customer_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < share


def consent_for(
    channel: Channel,
    purpose: Purpose,
    explicit: ConsentBook,
    snapshot: CustomerSnapshot | None,
    *,
    marketing_default: bool,
    transactional_default: bool,
) -> tuple[bool, str]:
    """(allowed, basis). Our own explicit records win (they include unsubscribes that scoring
    never hears of), then the customer file's latest decision, then the configured default."""
    key = (channel.value, purpose.value)
    if key in explicit:
        return explicit[key], "explicit"
    if snapshot is not None:
        decided = snapshot.consents.get(f"{channel.value}:{purpose.value}")
        if decided is None:
            decided = snapshot.consents.get(f"all:{purpose.value}")
        if decided is not None:
            return decided, "customer_file"
    default = marketing_default if purpose is Purpose.MARKETING else transactional_default
    return default, "default"


def explicitly_refused(
    channels: Sequence[Channel], purpose: Purpose, explicit: ConsentBook, snapshot: CustomerSnapshot | None
) -> bool:
    """Every channel of the plan was refused outright — no point scheduling (unknown is not refused:
    consent may still arrive before the touch is due)."""
    for channel in channels:
        allowed, basis = consent_for(
            channel, purpose, explicit, snapshot, marketing_default=True, transactional_default=True
        )
        if allowed or basis == "default":
            return False
    return True


def address_of(channel: Channel, snapshot: CustomerSnapshot | None, configured: frozenset[Channel]) -> str | None:
    """Where this channel reaches the customer, or None (no address, or channel not set up)."""
    if channel not in configured:
        return None
    if channel is Channel.EMAIL:
        return snapshot.email if snapshot else None
    if channel is Channel.SMS:
        return snapshot.phone if snapshot else None
    return "customer"  # push and webhook address the customer id; the provider knows the device


# --- time windows -----------------------------------------------------------------------------


def _inside(clock: time, start: time, end: time) -> bool:
    """``clock`` in [start, end), where a window may wrap past midnight (21:00–08:00)."""
    if start < end:
        return start <= clock < end
    return clock >= start or clock < end


def allowed_at(moment: datetime, zone: ZoneInfo, window: tuple[time, time] | None, quiet: tuple[time, time]) -> bool:
    clock = moment.astimezone(zone).time()
    if window is not None and not _inside(clock, *window):
        return False
    return quiet[0] == quiet[1] or not _inside(clock, *quiet)


def next_allowed(
    moment: datetime, zone: ZoneInfo, window: tuple[time, time] | None, quiet: tuple[time, time]
) -> datetime | None:
    """The earliest instant ≥ ``moment`` inside the plan's window and outside quiet hours, in the
    customer's zone. Candidates are ``moment`` and each local opening time of the next days, so
    the answer is exact and a DST change cannot shift it off the wall clock."""
    if allowed_at(moment, zone, window, quiet):
        return moment
    local_day = moment.astimezone(zone).date()
    openings = {quiet[1]} if quiet[0] != quiet[1] else set()
    if window is not None:
        openings.add(window[0])
    candidates = sorted(
        _wall(local_day + timedelta(days=offset), clock, zone) for offset in range(0, 3) for clock in openings
    )
    return next((c for c in candidates if c >= moment and allowed_at(c, zone, window, quiet)), None)


def _wall(day: date, clock: time, zone: ZoneInfo) -> datetime:
    return datetime.combine(day, clock, tzinfo=zone).astimezone(UTC)


def local_day_bounds(moment: datetime, zone: ZoneInfo) -> tuple[datetime, datetime]:
    """The customer's calendar day around ``moment``, as UTC instants (23 or 25 hours at DST)."""
    day = moment.astimezone(zone).date()
    return _wall(day, time(0), zone), _wall(day + timedelta(days=1), time(0), zone)


def local_week_bounds(moment: datetime, zone: ZoneInfo) -> tuple[datetime, datetime]:
    """The customer's calendar week (Monday to Sunday) around ``moment``, as UTC instants."""
    day = moment.astimezone(zone).date()
    monday = day - timedelta(days=day.weekday())
    return _wall(monday, time(0), zone), _wall(monday + timedelta(days=7), time(0), zone)


# --- the send-time decision -------------------------------------------------------------------


@dataclass(frozen=True)
class Send:
    channel: Channel
    address: str
    consent_basis: str


@dataclass(frozen=True)
class Defer:
    until: datetime
    reason: str


@dataclass(frozen=True)
class Suppress:
    reason: str


Decision = Send | Defer | Suppress


@dataclass(frozen=True)
class PolicyConfig:
    quiet_hours: tuple[time, time]
    cap_per_day: int
    cap_per_week: int
    marketing_default_consent: bool
    transactional_default_consent: bool
    configured_channels: frozenset[Channel]


@dataclass(frozen=True)
class TouchFacts:
    """What the policy needs to know about the touch being sent."""

    purpose: Purpose
    channels: Sequence[Channel]
    send_window: tuple[time, time] | None
    expires_at: datetime | None


@dataclass(frozen=True)
class Contacts:
    """What the policy needs to know about the customer right now."""

    snapshot: CustomerSnapshot | None
    explicit: ConsentBook
    zone: ZoneInfo
    sent_today: int
    sent_this_week: int
    ahead_in_line: int
    """Marketing touches of this customer due now that outrank this one (priority arbitration)."""


def decide(touch: TouchFacts, contacts: Contacts, config: PolicyConfig, now: datetime) -> Decision:
    """Send now on which channel, defer until when, or suppress why."""
    if touch.expires_at is not None and now >= touch.expires_at:
        return Suppress("expired")
    refused: list[str] = []
    unreachable: list[str] = []
    choice: Send | None = None
    for channel in touch.channels:
        address = address_of(channel, contacts.snapshot, config.configured_channels)
        if address is None:
            unreachable.append(channel.value)
            continue
        allowed, basis = consent_for(
            channel,
            touch.purpose,
            contacts.explicit,
            contacts.snapshot,
            marketing_default=config.marketing_default_consent,
            transactional_default=config.transactional_default_consent,
        )
        if not allowed:
            refused.append(channel.value)
            continue
        choice = Send(channel, address, basis)
        break
    if choice is None:
        if refused:
            return Suppress(f"no_consent: {', '.join(refused)} ({touch.purpose.value})")
        return Suppress(f"no_contact: {', '.join(unreachable)}")
    opening = next_allowed(now, contacts.zone, touch.send_window, config.quiet_hours)
    if opening is None:
        return _defer_or_expire(touch, now + timedelta(days=1), "send_window")
    if opening > now:
        in_quiet_hours = not allowed_at(now, contacts.zone, None, config.quiet_hours)
        return _defer_or_expire(touch, opening, "quiet_hours" if in_quiet_hours else "send_window")
    if touch.purpose is Purpose.MARKETING:
        # Transactional messages (a complaint reply) bypass marketing caps (DOMAIN.md §4).
        if contacts.sent_today + contacts.ahead_in_line >= config.cap_per_day:
            _, tomorrow = local_day_bounds(now, contacts.zone)
            reason = "frequency_cap: day" if contacts.ahead_in_line == 0 else "priority: outranked, then day cap"
            return _defer_or_expire(touch, _reopen(tomorrow, touch, contacts, config), reason)
        if contacts.sent_this_week + contacts.ahead_in_line >= config.cap_per_week:
            _, next_week = local_week_bounds(now, contacts.zone)
            return _defer_or_expire(touch, _reopen(next_week, touch, contacts, config), "frequency_cap: week")
    return choice


def _reopen(moment: datetime, touch: TouchFacts, contacts: Contacts, config: PolicyConfig) -> datetime:
    return next_allowed(moment, contacts.zone, touch.send_window, config.quiet_hours) or moment


def _defer_or_expire(touch: TouchFacts, until: datetime, reason: str) -> Decision:
    """Defer, don't drop — unless the touch would arrive after it stops making sense."""
    if touch.expires_at is not None and until >= touch.expires_at:
        return Suppress(f"expired: {reason}")
    return Defer(until, reason)


def retry_delay(attempt: int, *, base: timedelta, cap: timedelta, jitter: float) -> timedelta:
    """Exponential backoff with jitter: base·2^(attempt-1), capped, scaled by ``jitter`` in
    [0.5, 1.0] so a fleet recovering from an outage does not retry in lockstep."""
    raw = min(cap.total_seconds(), base.total_seconds() * 2 ** max(attempt - 1, 0))
    return timedelta(seconds=raw * (0.5 + 0.5 * min(max(jitter, 0.0), 1.0)))
