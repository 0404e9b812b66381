"""Calendar moments in the customer's own calendar (pure): birthdays (solar or lunar), signup
anniversaries, the expected next order, festivals and periodic care.

Every moment is a *local date* in the customer's time zone plus a token that names it (used in
idempotency keys, so a planner that runs every hour schedules each moment once).
"""

from __future__ import annotations

import calendar as _calendar
import hashlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from functools import lru_cache
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml
from lunardate import LunarDate
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from services.outreach.plans import CalendarMoment, CalendarTrigger, PlanError
from shared.contracts import CustomerSnapshot, explain

MONTH_DAY = r"^\d{2}-\d{2}$"


class Holiday(BaseModel):
    """One festival: on a solar month-day (New Year) or a lunar one (Spring Festival 01-01)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=r"^[a-z][a-z0-9_]{1,63}$")
    solar: str | None = Field(None, pattern=MONTH_DAY, description="MM-DD in the Gregorian calendar")
    lunar: str | None = Field(None, pattern=MONTH_DAY, description="MM-DD in the Chinese lunar calendar")
    lunar_new_year_eve: bool = Field(False, description="the last day of the lunar year (除夕)")
    locales: list[str] = Field(min_length=1, description="customers in these locales celebrate it")
    titles: dict[str, str] = Field(default_factory=dict, description="name per locale, for templates")

    @model_validator(mode="after")
    def _one_rule(self) -> Holiday:
        if (self.solar is not None) + (self.lunar is not None) + self.lunar_new_year_eve != 1:
            raise ValueError(f"holiday {self.name}: give exactly one of solar, lunar or lunar_new_year_eve")
        return self

    def on(self, year: int) -> date | None:
        """The Gregorian date of this festival in Gregorian ``year`` (None if not computable)."""
        if self.solar:
            month, day = (int(x) for x in self.solar.split("-"))
            return _solar(year, month, day)
        if self.lunar_new_year_eve:
            new_year = _lunar_to_solar(year, 1, 1)
            return new_year - timedelta(days=1) if new_year else None
        assert self.lunar is not None
        month, day = (int(x) for x in self.lunar.split("-"))
        # A lunar month-day falls once per lunar year, which straddles two Gregorian years.
        for lunar_year in (year - 1, year):
            found = _lunar_to_solar(lunar_year, month, day)
            if found is not None and found.year == year:
                return found
        return None


class HolidayCalendar(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    holidays: list[Holiday]

    def by_name(self) -> dict[str, Holiday]:
        return {h.name: h for h in self.holidays}


def load_holidays(path: Path) -> dict[str, Holiday]:
    try:
        return HolidayCalendar.model_validate(yaml.safe_load(path.read_text(encoding="utf-8"))).by_name()
    except (OSError, yaml.YAMLError) as error:
        raise PlanError([f"{path}: {error}"]) from None
    except ValidationError as error:
        raise PlanError([f"{path}: {line}" for line in explain(error)]) from None


@dataclass(frozen=True)
class Moment:
    """One occurrence of a calendar trigger for one customer."""

    day: date
    token: str
    facts: dict[str, Any] = field(default_factory=dict)


def customer_zone(snapshot: CustomerSnapshot | None, default: str) -> ZoneInfo:
    name = snapshot.timezone if snapshot and snapshot.timezone else default
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return ZoneInfo(default)


def local_due(day: date, at: Any, zone: ZoneInfo) -> datetime:
    """``at`` o'clock on ``day`` in ``zone``. A wall time skipped by a DST jump resolves forward
    (zoneinfo's fold=0 reading), so the touch is never lost in the gap."""
    return datetime.combine(day, at, tzinfo=zone)


def moments(
    trigger: CalendarTrigger,
    *,
    customer_id: str,
    plan: str,
    snapshot: CustomerSnapshot,
    zone: ZoneInfo,
    first: date,
    last: date,
    locale: str,
    holidays: dict[str, Holiday],
) -> list[Moment]:
    """Every occurrence of ``trigger`` whose local date lies in [first, last]."""
    found: list[Moment] = []
    for moment in _candidates(trigger, customer_id, plan, snapshot, zone, first, last, locale, holidays):
        if first <= moment.day <= last:
            found.append(moment)
    return found


def _candidates(
    trigger: CalendarTrigger,
    customer_id: str,
    plan: str,
    snapshot: CustomerSnapshot,
    zone: ZoneInfo,
    first: date,
    last: date,
    locale: str,
    holidays: dict[str, Holiday],
) -> Iterator[Moment]:
    years = range(first.year, last.year + 1)
    match trigger.moment:
        case CalendarMoment.BIRTHDAY:
            yield from _birthdays(trigger, snapshot, years)
        case CalendarMoment.SIGNUP_ANNIVERSARY:
            if snapshot.signup_at is not None:
                signed = snapshot.signup_at.astimezone(zone).date()
                for year in years:
                    day = _solar(year, signed.month, signed.day)
                    if day is not None and year > signed.year:
                        yield Moment(day, str(year), {"years": year - signed.year})
        case CalendarMoment.EXPECTED_NEXT_ORDER:
            if snapshot.expected_next_order_at is not None:
                expected = snapshot.expected_next_order_at.astimezone(zone).date()
                day = expected + timedelta(days=trigger.offset.days)
                yield Moment(day, expected.isoformat(), {"expected_next_order_on": expected.isoformat()})
        case CalendarMoment.HOLIDAY:
            for name in trigger.holidays:
                holiday = holidays.get(name)
                if holiday is None or not _celebrates(holiday, locale):
                    continue
                for year in years:
                    day = holiday.on(year)
                    if day is not None:
                        title = holiday.titles.get(locale) or holiday.titles.get("en") or name
                        yield Moment(day, f"{name}:{year}", {"holiday": name, "holiday_title": title})
        case CalendarMoment.PERIODIC:
            assert trigger.every is not None
            yield from _periodic(trigger.every, f"{plan}:{customer_id}", first, last)


def _birthdays(trigger: CalendarTrigger, snapshot: CustomerSnapshot, years: range) -> Iterator[Moment]:
    if trigger.prefer_lunar and snapshot.lunar_birthday:
        month, day = (int(x) for x in snapshot.lunar_birthday.split("-"))
        for year in years:
            for lunar_year in (year - 1, year):
                solar = _lunar_to_solar(lunar_year, month, day)
                if solar is not None and solar.year == year:
                    yield Moment(solar, str(year), {"lunar": True})
        return
    if snapshot.birthday is None:
        return
    for year in years:
        solar = _solar(year, snapshot.birthday.month, snapshot.birthday.day)
        if solar is not None:
            yield Moment(solar, str(year), {"lunar": False})


def _periodic(every: str, seed: str, first: date, last: date) -> Iterator[Moment]:
    """One moment per period, on a day spread by a stable hash so a whole tier is not contacted
    on the same morning."""
    spread = int.from_bytes(hashlib.sha256(seed.encode()).digest()[:4], "big")
    months = {"month": 1, "quarter": 3, "half_year": 6, "year": 12}[every]
    start_index = (first.year * 12 + first.month - 1) // months - 1
    end_index = (last.year * 12 + last.month - 1) // months
    for index in range(start_index, end_index + 1):
        year, month0 = divmod(index * months, 12)
        start = date(year, month0 + 1, 1)
        end_year, end_month0 = divmod(index * months + months, 12)
        length = (date(end_year, end_month0 + 1, 1) - start).days
        day = start + timedelta(days=spread % min(length, 28 * months))
        label = {
            "month": f"{year}-{month0 + 1:02d}",
            "quarter": f"{year}-Q{month0 // 3 + 1}",
            "half_year": f"{year}-H{month0 // 6 + 1}",
            "year": str(year),
        }[every]
        yield Moment(day, label, {"period": label})


def _celebrates(holiday: Holiday, locale: str) -> bool:
    language = locale.split("-")[0]
    return any(entry.split("-")[0] == language for entry in holiday.locales)


def _solar(year: int, month: int, day: int) -> date | None:
    """Month-day in ``year``; 29 February becomes 28 February in common years."""
    if month == 2 and day == 29 and not _calendar.isleap(year):
        day = 28
    try:
        return date(year, month, day)
    except ValueError:
        return None


@lru_cache(maxsize=4096)
def _lunar_to_solar(lunar_year: int, month: int, day: int) -> date | None:
    """A lunar month-day in ``lunar_year``; day 30 of a 29-day month becomes day 29. Cached:
    lunardate walks the years from 1900 on every conversion."""
    for candidate in (day, day - 1):
        try:
            solar: date = LunarDate(lunar_year, month, candidate).to_solar_date()
            return solar
        except ValueError:
            continue
    return None
