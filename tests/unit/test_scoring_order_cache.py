"""The order cache's own rules: an entry answers only the file it was kept with, hands out copies,
and stays within its bound of order lines, least recently used out first."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

from services.scoring.customer_file import CustomerFile, PurchaseTotals, add_purchase, add_refund, evolve
from services.scoring.order_cache import OrderCache
from services.scoring.purchases import OrderLine

T0 = datetime(2026, 3, 1, tzinfo=UTC)


def file_with(customer_id: str, count: int, version: int = 1) -> tuple[CustomerFile, list[OrderLine]]:
    lines = [OrderLine(f"o-{i}", T0 + timedelta(days=i), Decimal("10.00")) for i in range(count)]
    totals = PurchaseTotals()
    for line in lines:
        totals = add_purchase(totals, line.amount, line.occurred_at)
    return CustomerFile(customer_id, version=version, totals=totals), lines


def test_an_entry_answers_only_the_file_it_was_kept_with() -> None:
    cache = OrderCache(100)
    file, lines = file_with("c-1", 3)
    assert cache.lines_of(file) is None
    cache.keep([(file, lines)])
    assert cache.lines_of(file) == lines
    # Another replica's order, an operator's change, a refund: each moves the stamp.
    more, _ = file_with("c-1", 4)
    assert cache.lines_of(more) is None
    assert cache.lines_of(evolve(file, version=2)) is None
    assert cache.lines_of(evolve(file, totals=add_refund(file.totals, Decimal("1.00")))) is None
    assert cache.lines_of(evolve(file, totals=evolve(file.totals, margin=Decimal("2.00")))) is None
    assert (cache.hits, cache.misses) == (1, 5)


def test_a_batch_changing_its_list_leaves_the_entry_alone() -> None:
    cache = OrderCache(100)
    file, lines = file_with("c-1", 2)
    cache.keep([(file, lines)])
    lines.append(OrderLine("o-late", T0, Decimal("1.00")))  # the caller's list, after keeping it
    handed = cache.lines_of(file)
    assert handed is not None and len(handed) == 2
    handed.clear()
    assert cache.lines_of(file) is not None and len(cache.lines_of(file) or []) == 2


def test_it_stays_within_its_lines_least_recently_used_out_first() -> None:
    cache = OrderCache(10)
    a, b, c = file_with("a", 4), file_with("b", 4), file_with("c", 4)
    cache.keep([a, b])
    assert cache.lines_of(a[0]) is not None  # a is now the most recently used
    cache.keep([c])
    assert cache.lines == 8 and len(cache) == 2
    assert cache.lines_of(b[0]) is None and cache.lines_of(a[0]) is not None
    # Keeping a customer again replaces their entry and its count.
    grown = file_with("a", 6, version=2)
    cache.keep([grown])
    assert cache.lines <= 10 and cache.lines_of(grown[0]) == grown[1]


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
    assert cache.lines == 3 and cache.lines_of(a[0]) is None
    cache.clear()
    assert cache.lines == 0 and len(cache) == 0
