"""Purchase occasions: a customer's orders grouped per calendar day, as the CLV literature counts
them (several orders on one day are one occasion). Pure; derived from the orders table, so the
result does not depend on the order in which the orders arrived."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta, tzinfo
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


def local_day(at: datetime, tz: tzinfo) -> int:
    return (at.astimezone(tz).date() - _EPOCH).days


def day_start(day: int, tz: tzinfo) -> datetime:
    """Midnight of ``day`` in ``tz``, as an aware UTC datetime."""
    local = datetime.combine(_EPOCH + timedelta(days=day), datetime.min.time(), tzinfo=tz)
    return local.astimezone(UTC)


def day_date(day: int) -> date:
    return _EPOCH + timedelta(days=day)


def occasions(orders: Iterable[OrderLine], tz: tzinfo, basis: TierBasis = "revenue") -> list[Occasion]:
    """Orders grouped per local day, sorted by day."""
    by_day: dict[int, tuple[Decimal, Decimal, int]] = {}
    for order in orders:
        day = local_day(order.occurred_at, tz)
        net, value, count = by_day.get(day, (ZERO, ZERO, 0))
        by_day[day] = (net + order.net, value + order.value(basis), count + 1)
    return [Occasion(day, net, value, count) for day, (net, value, count) in sorted(by_day.items())]


def days_of(history: Sequence[Occasion]) -> list[int]:
    return [o.day for o in history]
