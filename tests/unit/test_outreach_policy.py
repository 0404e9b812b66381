"""The contact policy: holdout, consent, windows and quiet hours (across DST), caps in the
customer's own calendar, priority arbitration, retry backoff; and the HMAC signatures."""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest

from services.outreach.policy import (
    Contacts,
    Defer,
    PolicyConfig,
    Send,
    Suppress,
    TouchFacts,
    consent_for,
    decide,
    explicitly_refused,
    in_holdout,
    local_day_bounds,
    local_week_bounds,
    next_allowed,
    retry_delay,
)
from services.outreach.signing import (
    BadToken,
    UnsubscribeClaim,
    read_unsubscribe_token,
    unsubscribe_token,
    verify_webhook_signature,
    webhook_signature,
)
from shared.contracts import Channel, CustomerSnapshot, Purpose

SHANGHAI = ZoneInfo("Asia/Shanghai")
NEW_YORK = ZoneInfo("America/New_York")
QUIET = (time(21, 0), time(8, 0))
CONFIG = PolicyConfig(
    quiet_hours=QUIET,
    cap_per_day=1,
    cap_per_week=3,
    marketing_default_consent=False,
    transactional_default_consent=True,
    configured_channels=frozenset({Channel.EMAIL, Channel.SMS}),
)
CONSENTED = CustomerSnapshot(email="a@b.cn", phone="+86", consents={"email:marketing": True, "sms:marketing": True})


def facts(purpose=Purpose.MARKETING, channels=(Channel.EMAIL,), window=None, expires=None) -> TouchFacts:
    return TouchFacts(purpose=purpose, channels=list(channels), send_window=window, expires_at=expires)


def contacts(snapshot=CONSENTED, explicit=None, zone=SHANGHAI, today=0, week=0, ahead=0) -> Contacts:
    return Contacts(
        snapshot=snapshot,
        explicit=explicit or {},
        zone=zone,
        sent_today=today,
        sent_this_week=week,
        ahead_in_line=ahead,
    )


def at(zone, *args) -> datetime:
    return datetime(*args, tzinfo=zone).astimezone(UTC)


# --- holdout ----------------------------------------------------------------------------------


def test_holdout_is_stable_and_close_to_its_share():
    ids = [f"customer-{i}" for i in range(20_000)]
    first = [in_holdout(c, salt="s", share=0.1) for c in ids]
    assert first == [in_holdout(c, salt="s", share=0.1) for c in ids]  # same answer on every call / replica
    assert 0.09 < sum(first) / len(ids) < 0.11
    assert not any(in_holdout(c, salt="s", share=0.0) for c in ids[:1000])
    # Growing the share keeps everyone already held out (a monotone threshold on one hash).
    assert all(in_holdout(c, salt="s", share=0.2) for c, held in zip(ids, first, strict=True) if held)
    reshuffled = [in_holdout(c, salt="other", share=0.1) for c in ids]
    assert reshuffled != first


def test_the_e2e_customer_is_not_in_the_default_holdout():
    # tests/e2e expects its follow-up to be scheduled under the default salt and share.
    from services.outreach.settings import OutreachSettings

    settings = OutreachSettings()
    assert not in_holdout("e2e-customer", salt=settings.holdout_salt, share=settings.holdout_share)


# --- consent ----------------------------------------------------------------------------------


def test_explicit_decisions_beat_the_customer_file_which_beats_the_default():
    file = CustomerSnapshot(consents={"email:marketing": True})
    kwargs = {"marketing_default": False, "transactional_default": True}
    assert consent_for(Channel.EMAIL, Purpose.MARKETING, {}, file, **kwargs) == (True, "customer_file")
    assert consent_for(Channel.EMAIL, Purpose.MARKETING, {("email", "marketing"): False}, file, **kwargs) == (
        False,
        "explicit",
    )
    assert consent_for(Channel.SMS, Purpose.MARKETING, {}, file, **kwargs) == (False, "default")
    assert consent_for(Channel.SMS, Purpose.TRANSACTIONAL, {}, file, **kwargs) == (True, "default")
    everywhere = CustomerSnapshot(consents={"all:marketing": True})
    assert consent_for(Channel.SMS, Purpose.MARKETING, {}, everywhere, **kwargs)[0]


def test_refusal_at_planning_needs_an_explicit_no_on_every_channel():
    channels = [Channel.EMAIL, Channel.SMS]
    assert not explicitly_refused(channels, Purpose.MARKETING, {}, None)  # unknown may still be granted
    assert not explicitly_refused(channels, Purpose.MARKETING, {("email", "marketing"): False}, None)
    both = {("email", "marketing"): False, ("sms", "marketing"): False}
    assert explicitly_refused(channels, Purpose.MARKETING, both, None)


def test_consent_revoked_suppresses_and_fallback_channel_is_used():
    noon = at(SHANGHAI, 2026, 11, 23, 12, 0)
    revoked = {("email", "marketing"): False}
    decision = decide(facts(channels=(Channel.EMAIL, Channel.SMS)), contacts(explicit=revoked), CONFIG, noon)
    assert decision == Send(Channel.SMS, "+86", "customer_file")
    only_email = decide(facts(), contacts(explicit=revoked), CONFIG, noon)
    assert only_email == Suppress("no_consent: email (marketing)")
    nobody = decide(facts(), contacts(snapshot=CustomerSnapshot()), CONFIG, noon)
    assert nobody == Suppress("no_contact: email")


# --- windows, quiet hours, DST ----------------------------------------------------------------


def test_quiet_hours_defer_to_the_morning_in_the_customers_zone():
    late = at(SHANGHAI, 2026, 11, 23, 22, 30)
    decision = decide(facts(), contacts(), CONFIG, late)
    assert decision == Defer(at(SHANGHAI, 2026, 11, 24, 8, 0), "quiet_hours")
    # The same instant is mid-morning in New York: no deferral there.
    ny = CustomerSnapshot(email="a@b.com", consents={"email:marketing": True})
    assert isinstance(decide(facts(), contacts(snapshot=ny, zone=NEW_YORK), CONFIG, late), Send)


def test_plan_send_window_opens_later_than_quiet_hours_end():
    early = at(SHANGHAI, 2026, 11, 23, 8, 30)
    decision = decide(facts(window=(time(10, 0), time(20, 0))), contacts(), CONFIG, early)
    assert decision == Defer(at(SHANGHAI, 2026, 11, 23, 10, 0), "send_window")


def test_next_opening_is_on_the_wall_clock_across_a_dst_change():
    # New York springs forward on 2026-03-08: 08:00 that morning is 12:00 UTC, the day before 13:00 UTC.
    saturday_night = at(NEW_YORK, 2026, 3, 7, 23, 0)
    opening = next_allowed(saturday_night, NEW_YORK, None, QUIET)
    assert opening == datetime(2026, 3, 8, 12, 0, tzinfo=UTC)
    assert opening.astimezone(NEW_YORK).hour == 8
    autumn = at(NEW_YORK, 2026, 10, 31, 23, 0)  # falls back on 2026-11-01
    assert next_allowed(autumn, NEW_YORK, None, QUIET) == datetime(2026, 11, 1, 13, 0, tzinfo=UTC)


def test_deferral_past_expiry_suppresses_with_the_reason():
    late = at(SHANGHAI, 2026, 11, 23, 22, 30)
    decision = decide(facts(expires=at(SHANGHAI, 2026, 11, 23, 23, 0)), contacts(), CONFIG, late)
    assert decision == Suppress("expired: quiet_hours")
    assert decide(facts(expires=late), contacts(), CONFIG, late) == Suppress("expired")


# --- caps and arbitration ---------------------------------------------------------------------


def test_caps_count_the_customers_local_day_and_week():
    noon = at(SHANGHAI, 2026, 11, 23, 12, 0)  # a Monday
    over_day = decide(facts(), contacts(today=1, week=1), CONFIG, noon)
    assert over_day == Defer(at(SHANGHAI, 2026, 11, 24, 8, 0), "frequency_cap: day")
    over_week = decide(facts(), contacts(today=0, week=3), CONFIG, noon)
    assert over_week == Defer(at(SHANGHAI, 2026, 11, 30, 8, 0), "frequency_cap: week")
    # Transactional messages bypass marketing caps.
    assert isinstance(decide(facts(purpose=Purpose.TRANSACTIONAL), contacts(today=5, week=9), CONFIG, noon), Send)


def test_a_higher_priority_touch_in_the_same_window_goes_first():
    noon = at(SHANGHAI, 2026, 11, 23, 12, 0)
    decision = decide(facts(), contacts(ahead=1), CONFIG, noon)
    assert isinstance(decision, Defer) and decision.reason.startswith("priority")


def test_local_calendar_bounds_follow_the_zone_and_dst():
    start, end = local_day_bounds(datetime(2026, 11, 23, 17, 0, tzinfo=UTC), SHANGHAI)  # 01:00 on the 24th locally
    assert (start, end) == (at(SHANGHAI, 2026, 11, 24, 0, 0), at(SHANGHAI, 2026, 11, 25, 0, 0))
    spring_start, spring_end = local_day_bounds(at(NEW_YORK, 2026, 3, 8, 12, 0), NEW_YORK)
    assert spring_end - spring_start == timedelta(hours=23)
    monday, next_monday = local_week_bounds(at(SHANGHAI, 2026, 11, 26, 9, 0), SHANGHAI)
    assert monday == at(SHANGHAI, 2026, 11, 23, 0, 0) and next_monday - monday == timedelta(days=7)


def test_retry_delay_doubles_with_jitter_and_a_cap():
    base, cap = timedelta(seconds=30), timedelta(minutes=10)
    assert retry_delay(1, base=base, cap=cap, jitter=1.0) == timedelta(seconds=30)
    assert retry_delay(3, base=base, cap=cap, jitter=1.0) == timedelta(seconds=120)
    assert retry_delay(3, base=base, cap=cap, jitter=0.0) == timedelta(seconds=60)
    assert retry_delay(20, base=base, cap=cap, jitter=1.0) == cap


# --- signatures -------------------------------------------------------------------------------


def test_webhook_signature_verifies_and_refuses_tampering_and_replays():
    body = b'{"touch_id":"t"}'
    header = webhook_signature("s3cret-s3cret-s3cret", body, 1_700_000_000)
    assert header.startswith("t=1700000000,v1=")
    assert verify_webhook_signature("s3cret-s3cret-s3cret", body, header, now=1_700_000_010)
    assert not verify_webhook_signature("s3cret-s3cret-s3cret", body + b" ", header, now=1_700_000_010)
    assert not verify_webhook_signature("other-secret-other", body, header, now=1_700_000_010)
    assert not verify_webhook_signature("s3cret-s3cret-s3cret", body, header, now=1_700_009_999)


def test_unsubscribe_tokens_round_trip_and_cannot_be_forged():
    claim = UnsubscribeClaim("客户-1", "email", "marketing")
    token = unsubscribe_token("key-key-key-key-key", claim)
    assert read_unsubscribe_token("key-key-key-key-key", token) == claim
    payload, mac = token.split(".")
    forged = unsubscribe_token("key-key-key-key-key", UnsubscribeClaim("someone-else", "email", "marketing"))
    for bad in (f"{forged.split('.')[0]}.{mac}", token[:-2], "garbage", f"{payload}."):
        with pytest.raises(BadToken):
            read_unsubscribe_token("key-key-key-key-key", bad)
    with pytest.raises(BadToken):
        read_unsubscribe_token("another-key-entirely", token)
