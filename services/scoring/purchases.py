"""Purchase occasions: a customer's orders grouped per calendar day, as the CLV literature counts
them (several orders on one day are one occasion). Pure; derived from the orders table, so the
result does not depend on the order in which the orders arrived."""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta, tzinfo
from decimal import Decimal
from typing import Literal

_EPOCH = date(1970, 1, 1)
ZERO = Decimal(0)
TierBasis = Literal["revenue", "margin"]


@dataclass(frozen=True, slots=True)
class OrderLine:
    """What scoring needs of one stored order."""

    order_id: str
    occurred_at: datetime
    amount: Decimal
    refunded: Decimal = ZERO
    margin: Decimal | None = None
    event_id: str = ""

    @property
    def net(self) -> Decimal:
        """Revenue that stuck: the amount less refunds, never below zero."""
        return max(self.amount - self.refunded, ZERO)

    def value(self, basis: TierBasis) -> Decimal:
        """Contribution for the value ranking: margin where the order gives it (scaled down by refunds),
        net revenue otherwise."""
        if basis == "margin" and self.margin is not None:
            if self.amount <= 0:
                return ZERO
            return max(self.margin * self.net / self.amount, ZERO)
        return self.net


@dataclass(frozen=True, slots=True)
class Occasion:
    """One purchase occasion: all of a customer's orders on one calendar day."""

    day: int
    """Days since 1970-01-01 in the occasion time zone."""
    net: Decimal
    value: Decimal
    orders: int


_EPOCH_ORDINAL = _EPOCH.toordinal()


def local_day(at: datetime, tz: tzinfo) -> int:
    return at.astimezone(tz).toordinal() - _EPOCH_ORDINAL  # no date and timedelta objects on the way


_MIDNIGHT = time()


def day_start(day: int, tz: tzinfo) -> datetime:
    """Midnight of ``day`` in ``tz``, as an aware UTC datetime."""
    local = datetime.combine(date.fromordinal(day + _EPOCH_ORDINAL), _MIDNIGHT, tzinfo=tz)
    return local.astimezone(UTC)


def day_date(day: int) -> date:
    return _EPOCH + timedelta(days=day)


def occasions(orders: Iterable[OrderLine], tz: tzinfo, basis: TierBasis = "revenue") -> list[Occasion]:
    """Orders grouped per local day, sorted by day."""
    by_day: dict[int, list[Decimal]] = {}
    counts: dict[int, int] = {}
    by_margin = basis == "margin"
    for order in orders:
        day = order.occurred_at.astimezone(tz).toordinal() - _EPOCH_ORDINAL  # local_day, inlined: once per order
        net = max(order.amount - order.refunded, ZERO)  # OrderLine.net and .value, without recomputing net
        value = order.value(basis) if by_margin and order.margin is not None else net
        sums = by_day.get(day)
        if sums is None:
            by_day[day] = [ZERO + net, ZERO + value]
            counts[day] = 1
        else:
            sums[0] += net
            sums[1] += value
            counts[day] += 1
    return [Occasion(day, net, value, counts[day]) for day, (net, value) in sorted(by_day.items())]


class OccasionBook:
    """A customer's purchase occasions kept up to date as their orders change: always equal to
    ``occasions(lines, tz, basis)`` of the same lines, Decimal for Decimal (tests hold it so),
    without regrouping every order for each event. A heavy buyer's history made that regrouping
    the largest part of scoring an event (docs/benchmarks.md, "Scoring with long histories").

    Sums are exact (Decimal, no rounding at these magnitudes) and an exact sum's exponent is the
    least of its terms', so adding one order to its day's sums gives what regrouping gives. A
    changed order (a refund) has its day summed again from that day's orders instead: taking the
    old amount back out could leave a smaller exponent than regrouping would."""

    __slots__ = ("_basis", "_days", "_history", "_tz")

    def __init__(self, history: Iterable[Occasion], tz: tzinfo, basis: TierBasis) -> None:
        """From ``history``, ``occasions(…)`` of the customer's lines in this zone and basis (kept)."""
        self._tz = tz
        self._basis = basis
        self._history = list(history)
        self._days = [o.day for o in self._history]

    @classmethod
    def of(cls, lines: Iterable[OrderLine], tz: tzinfo, basis: TierBasis) -> OccasionBook:
        return cls(occasions(lines, tz, basis), tz, basis)

    @property
    def history(self) -> list[Occasion]:
        """Sorted by day. The book's own list: read it, do not change it."""
        return self._history

    def add(self, line: OrderLine) -> None:
        """A new order."""
        day = local_day(line.occurred_at, self._tz)
        net = line.net
        value = line.value(self._basis) if self._basis == "margin" and line.margin is not None else net
        index = bisect_left(self._days, day)
        if index < len(self._days) and self._days[index] == day:
            held = self._history[index]
            self._history[index] = Occasion(day, held.net + net, held.value + value, held.orders + 1)
        else:
            self._days.insert(index, day)
            self._history.insert(index, Occasion(day, ZERO + net, ZERO + value, 1))

    def changed(self, line: OrderLine, lines: Iterable[OrderLine]) -> None:
        """``line`` changed (same order, same time; a refund booked on it): its day is summed again
        from ``lines``, all of the customer's orders as they are now."""
        day = local_day(line.occurred_at, self._tz)
        tz = self._tz
        same_day = [other for other in lines if local_day(other.occurred_at, tz) == day]
        index = bisect_left(self._days, day)
        if same_day:
            self._history[index] = occasions(same_day, tz, self._basis)[0]


def days_of(history: Sequence[Occasion]) -> list[int]:
    return [o.day for o in history]
