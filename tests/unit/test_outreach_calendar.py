"""Calendar moments: birthdays at the right local hour across time zones and DST, lunar
birthdays and festivals through lunardate, anniversaries, periodic care, and idempotent keys."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from pathlib import Path

from services.outreach.calendar import load_holidays
from services.outreach.care import ActivePlan, PlanBook, plan_calendar
from services.outreach.plans import load_plan_file
from shared.contracts import CustomerSnapshot

HERE = Path(__file__).parents[2] / "services/outreach"
PLANS = load_plan_file(HERE / "care_plans.yaml")
HOLIDAYS = load_holidays(HERE / "holidays.yaml")


def book(*names: str) -> PlanBook:
    return PlanBook(plans=tuple(ActivePlan(p, 1) for p in PLANS.plans if p.name in names), holidays=HOLIDAYS)


def due(snapshot: CustomerSnapshot, plan: str, now: datetime, horizon=timedelta(days=2)) -> list:
    return [t for t in plan_calendar("c-1", snapshot, book(plan), now=now, horizon=horizon) if t.plan == plan]


def test_birthday_is_due_at_ten_in_the_customers_own_zone():
    now = datetime(2026, 11, 23, 0, 0, tzinfo=UTC)
    shanghai = due(CustomerSnapshot(birthday=date(1990, 11, 24), timezone="Asia/Shanghai"), "birthday", now)
    assert [t.due_at for t in shanghai] == [datetime(2026, 11, 24, 2, 0, tzinfo=UTC)]
    berlin = due(CustomerSnapshot(birthday=date(1990, 11, 24), timezone="Europe/Berlin"), "birthday", now)
    assert [t.due_at for t in berlin] == [datetime(2026, 11, 24, 9, 0, tzinfo=UTC)]
    assert shanghai[0].idempotency_key == berlin[0].idempotency_key == "birthday:c-1:2026"
    # Expires at 21:00 local, so a deferral never makes it a day late.
    assert shanghai[0].expires_at == datetime(2026, 11, 24, 13, 0, tzinfo=UTC)


def test_birthday_on_a_dst_change_day_keeps_the_wall_clock_hour():
    customer = CustomerSnapshot(birthday=date(1985, 3, 8), timezone="America/New_York")
    [spring] = due(customer, "birthday", datetime(2026, 3, 7, 0, 0, tzinfo=UTC))
    assert spring.due_at == datetime(2026, 3, 8, 14, 0, tzinfo=UTC)  # 10:00 EDT (UTC-4)
    day_before = CustomerSnapshot(birthday=date(1985, 3, 7), timezone="America/New_York")
    [winter] = due(day_before, "birthday", datetime(2026, 3, 6, 0, 0, tzinfo=UTC))
    assert winter.due_at == datetime(2026, 3, 7, 15, 0, tzinfo=UTC)  # 10:00 EST (UTC-5)


def test_birthday_the_customer_already_reached_is_not_planned_again_next_day():
    customer = CustomerSnapshot(birthday=date(1990, 11, 24), timezone="Asia/Shanghai")
    after = datetime(2026, 11, 24, 14, 0, tzinfo=UTC)  # 22:00 in Shanghai: the greeting would have expired
    assert due(customer, "birthday", after) == []


def test_birthday_later_today_after_ten_is_due_now():
    customer = CustomerSnapshot(birthday=date(1990, 11, 24), timezone="Asia/Shanghai")
    afternoon = datetime(2026, 11, 24, 7, 0, tzinfo=UTC)  # 15:00 in Shanghai
    [touch] = due(customer, "birthday", afternoon)
    assert touch.due_at == afternoon


def test_leap_day_birthdays_fall_on_28_february_in_common_years():
    customer = CustomerSnapshot(birthday=date(2000, 2, 29), timezone="UTC")
    [touch] = due(customer, "birthday", datetime(2027, 2, 27, 0, 0, tzinfo=UTC))
    assert touch.due_at == datetime(2027, 2, 28, 10, 0, tzinfo=UTC)


def test_lunar_birthday_is_preferred_and_converted_for_the_year():
    # 八月十五 in 2026 is 25 September (Mid-Autumn).
    customer = CustomerSnapshot(birthday=date(1990, 1, 1), lunar_birthday="08-15", timezone="Asia/Shanghai")
    [touch] = due(customer, "birthday", datetime(2026, 9, 24, 0, 0, tzinfo=UTC))
    assert touch.due_at == datetime(2026, 9, 25, 2, 0, tzinfo=UTC)
    assert touch.context["lunar"] is True and touch.idempotency_key == "birthday:c-1:2026"


def test_festivals_from_the_lunar_calendar_for_the_locales_that_celebrate_them():
    assert HOLIDAYS["spring_festival"].on(2027) == date(2027, 2, 6)
    assert HOLIDAYS["mid_autumn"].on(2026) == date(2026, 9, 25)
    assert HOLIDAYS["lunar_new_year_eve"].on(2027) == date(2027, 2, 5)
    zh = CustomerSnapshot(locale="zh-CN", timezone="Asia/Shanghai")
    [spring] = due(zh, "holiday_greetings", datetime(2027, 2, 5, 0, 0, tzinfo=UTC))
    assert spring.idempotency_key == "holiday_greetings:c-1:spring_festival:2027"
    assert spring.context["holiday_title"] == "春节"
    en = CustomerSnapshot(locale="en", timezone="Europe/London")
    assert due(en, "holiday_greetings", datetime(2027, 2, 5, 0, 0, tzinfo=UTC)) == []
    [christmas] = due(en, "holiday_greetings", datetime(2026, 12, 24, 0, 0, tzinfo=UTC))
    assert christmas.context["holiday_title"] == "Christmas"


def test_periodic_care_once_per_period_on_a_stable_spread_day():
    top = CustomerSnapshot(value_tier="A", timezone="Asia/Shanghai")
    month = [
        t
        for day in range(0, 31)
        for t in due(top, "regular_care_monthly", datetime(2026, 11, 1, tzinfo=UTC) + timedelta(days=day))
    ]
    keys = {t.idempotency_key for t in month}
    assert keys == {"regular_care:c-1:2026-11"} or keys <= {"regular_care:c-1:2026-11", "regular_care:c-1:2026-12"}
    assert len({t.due_at for t in month if t.idempotency_key.endswith("2026-11")}) == 1
    assert (
        due(
            CustomerSnapshot(value_tier="C"),
            "regular_care_monthly",
            datetime(2026, 11, 1, tzinfo=UTC),
            horizon=timedelta(days=40),
        )
        == []
    )


def test_signup_anniversary_and_replenishment_moments():
    signed = CustomerSnapshot(signup_at=datetime(2024, 11, 24, 3, 0, tzinfo=UTC), timezone="Asia/Shanghai")
    [anniversary] = due(signed, "signup_anniversary", datetime(2026, 11, 23, 0, 0, tzinfo=UTC))
    assert anniversary.context["years"] == 2
    repeat = CustomerSnapshot(
        order_count=3, expected_next_order_at=datetime(2026, 11, 26, 5, 0, tzinfo=UTC), timezone="Asia/Shanghai"
    )
    [reminder] = due(repeat, "replenishment", datetime(2026, 11, 23, 0, 0, tzinfo=UTC))
    assert reminder.due_at == datetime(2026, 11, 24, 3, 0, tzinfo=UTC)  # two days before, 11:00 local
    assert reminder.idempotency_key == "replenishment:c-1:2026-11-26"
    one_order = repeat.model_copy(update={"order_count": 1})
    assert due(one_order, "replenishment", datetime(2026, 11, 23, 0, 0, tzinfo=UTC)) == []
