"""The order cache's own rules: an entry answers only the file it was kept with, hands out copies,
and stays within its bound of order lines, least recently used out first. And the occasion book
it keeps beside the lines: always what regrouping the lines gives, Decimal for Decimal."""

from __future__ import annotations

import random
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo

import pytest

from services.scoring.customer_file import CustomerFile, PurchaseTotals, add_purchase, add_refund, evolve
from services.scoring.order_cache import OrderCache
from services.scoring.purchases import Occasion, OccasionBook, OrderLine, TierBasis, occasions

T0 = datetime(2026, 3, 1, tzinfo=UTC)


def file_with(customer_id: str, count: int, version: int = 1) -> tuple[CustomerFile, list[OrderLine], list[Occasion]]:
    lines = [OrderLine(f"o-{i}", T0 + timedelta(days=i), Decimal("10.00")) for i in range(count)]
    totals = PurchaseTotals()
    for line in lines:
        totals = add_purchase(totals, line.amount, line.occurred_at)
    return CustomerFile(customer_id, version=version, totals=totals), lines, occasions(lines, UTC)


def lines_of(cache: OrderCache, file: CustomerFile) -> list[OrderLine] | None:
    held = cache.held_for(file)
    return None if held is None else held[0]


def test_an_entry_answers_only_the_file_it_was_kept_with() -> None:
    cache = OrderCache(100)
    file, lines, history = file_with("c-1", 3)
    assert lines_of(cache, file) is None
    cache.keep([(file, lines, history)])
    assert cache.held_for(file) == (lines, history)
    # Another replica's order, an operator's change, a refund: each moves the stamp.
    more, _, _ = file_with("c-1", 4)
    assert lines_of(cache, more) is None
    assert lines_of(cache, evolve(file, version=2)) is None
    assert lines_of(cache, evolve(file, totals=add_refund(file.totals, Decimal("1.00")))) is None
    assert lines_of(cache, evolve(file, totals=evolve(file.totals, margin=Decimal("2.00")))) is None
    assert (cache.hits, cache.misses) == (1, 5)


def test_a_batch_changing_its_list_leaves_the_entry_alone() -> None:
    cache = OrderCache(100)
    file, lines, history = file_with("c-1", 2)
    cache.keep([(file, lines, history)])
    lines.append(OrderLine("o-late", T0, Decimal("1.00")))  # the caller's lists, after keeping them
    history.clear()
    handed = cache.held_for(file)
    assert handed is not None and (len(handed[0]), len(handed[1])) == (2, 2)
    handed[0].clear()
    handed[1].clear()
    again = cache.held_for(file)
    assert again is not None and (len(again[0]), len(again[1])) == (2, 2)


def test_it_stays_within_its_lines_least_recently_used_out_first() -> None:
    cache = OrderCache(10)
    a, b, c = file_with("a", 4), file_with("b", 4), file_with("c", 4)
    cache.keep([a, b])
    assert lines_of(cache, a[0]) is not None  # a is now the most recently used
    cache.keep([c])
    assert cache.lines == 8 and len(cache) == 2
    assert lines_of(cache, b[0]) is None and lines_of(cache, a[0]) is not None
    # Keeping a customer again replaces their entry and its count.
    grown = file_with("a", 6, version=2)
    cache.keep([grown])
    assert cache.lines <= 10 and cache.held_for(grown[0]) == (grown[1], grown[2])


def test_a_customer_larger_than_the_bound_and_a_disabled_cache_keep_nothing() -> None:
    small = OrderCache(3)
    big = file_with("big", 5)
    small.keep([big])
    assert len(small) == 0 and small.lines == 0
    off = OrderCache(0)
    off.keep([file_with("c-1", 1)])
    assert len(off) == 0


def test_forget_and_clear() -> None:
    cache = OrderCache(100)
    a, b = file_with("a", 2), file_with("b", 3)
    cache.keep([a, b])
    cache.forget("a")
    cache.forget("nobody")
    assert cache.lines == 3 and lines_of(cache, a[0]) is None
    cache.clear()
    assert cache.lines == 0 and len(cache) == 0


# --- the occasion book ------------------------------------------------------------------------


def exact(history: list[Occasion]) -> list[tuple[int, str, str, int]]:
    """Occasions with their Decimals as written: equal values of another exponent differ here."""
    return [(o.day, str(o.net), str(o.value), o.orders) for o in history]


@pytest.mark.parametrize("zone", ["UTC", "Asia/Shanghai", "America/New_York"])
@pytest.mark.parametrize("basis", ["revenue", "margin"])
def test_the_occasion_book_stays_what_regrouping_gives(zone: str, basis: TierBasis) -> None:
    # Orders out of time order, several a day, amounts and margins of different exponents, and
    # refunds (some beyond the amount): after every change the book equals occasions() of the
    # lines, exponent for exponent.
    rng = random.Random(f"{zone}-{basis}")
    tz = ZoneInfo(zone)
    lines: list[OrderLine] = []
    book = OccasionBook.of(lines, tz, basis)
    amounts = ["10", "10.5", "9.99", "0.0001", "120.00", "7.2500", "0"]
    for n in range(400):
        if lines and rng.random() < 0.3:
            index = rng.randrange(len(lines))
            line = lines[index]
            refund = Decimal(rng.choice(["1", "0.50", "2.2500", "1000"]))
            lines[index] = replace(line, refunded=line.refunded + refund)
            book.changed(lines[index], lines)
        else:
            at = T0 + timedelta(hours=rng.randrange(-24 * 60, 24 * 60), minutes=rng.randrange(60))
            margin = Decimal(rng.choice(["1.5", "3", "0.25"])) if rng.random() < 0.6 else None
            line = OrderLine(f"o-{n}", at, Decimal(rng.choice(amounts)), margin=margin)
            lines.append(line)
            book.add(line)
        assert exact(book.history) == exact(occasions(lines, tz, basis)), n


def test_an_occasion_book_from_held_occasions_goes_on_from_them() -> None:
    lines = [OrderLine(f"o-{i}", T0 + timedelta(days=i % 3), Decimal("5.50")) for i in range(6)]
    book = OccasionBook(occasions(lines, UTC), UTC, "revenue")
    later = OrderLine("o-late", T0 + timedelta(days=1, hours=3), Decimal("1.25"))
    book.add(later)
    assert exact(book.history) == exact(occasions([*lines, later], UTC))
