"""Customers' stored order lines kept between transactions, so a batch need not read them again,
with their purchase occasions, so an event need not regroup them either.

Scoring folds every event of a customer over all of their orders (purchase occasions, the tier's
path through its windows, the rhythm of the gaps). Read from the database for each batch, a heavy
buyer's history cost more with every order: in a 45-minute soak the order read grew to a quarter
of scoring's CPU (docs/benchmarks.md, "Soak, 45 minutes"). The consumer owns its partitions, so
the lines it committed are, nearly always, still what the table holds at its next batch.

"Nearly always" is checked, never assumed: an entry is used only while the file read at the start
of the batch carries the same *stamp* — version and purchase totals — as the file the entry was
committed with. Whatever else can change a customer's orders changes one of these first: another
replica's order or refund (after a rebalance) adds to the count or the refunds, and bumps the
version; an operator's change bumps the version; an erasure deletes the file (and, in this
process, drops the entry). One detail may lag: an order resent under a lower event id elsewhere
lowers its first event id without changing the file, so an entry can hold the higher one. Scoring
uses it only to decide whether a resend writes the lower id, and that UPDATE is guarded
(``event_id > :first``), so the table keeps the lowest either way.

A batch that rolls back leaves the cache as it was, for entries are stored only after the
commit. Lines are held as tuples and handed out as fresh lists, so a batch that mutates its list
never touches the cache.

Bounded by a count of order lines (about 800 bytes each in CPython with their share of the
occasions, measured with tracemalloc), least recently used first out. The occasions are in the
process's zone and tier basis, which do not change while it runs.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable, Sequence
from decimal import Decimal

from services.scoring.customer_file import CustomerFile
from services.scoring.purchases import Occasion, OrderLine

Stamp = tuple[int, int, Decimal, Decimal, Decimal]
"""(version, order count, revenue, refunded, margin) of the file the lines belong to."""

Held = tuple[list[OrderLine], list[Occasion]]
"""A customer's order lines and their purchase occasions (``occasions`` of those lines)."""


def stamp_of(file: CustomerFile) -> Stamp:
    totals = file.totals
    return (file.version, totals.order_count, totals.revenue, totals.refunded, totals.margin)


class OrderCache:
    def __init__(self, max_lines: int) -> None:
        self.max_lines = max_lines
        self._entries: OrderedDict[str, tuple[Stamp, tuple[OrderLine, ...], tuple[Occasion, ...]]] = OrderedDict()
        self._lines = 0
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def lines(self) -> int:
        return self._lines

    def held_for(self, file: CustomerFile) -> Held | None:
        """The customer's order lines and occasions if held for this very file (its stamp), else None."""
        entry = self._entries.get(file.customer_id)
        if entry is None or entry[0] != stamp_of(file):
            self.misses += 1
            return None
        self._entries.move_to_end(file.customer_id)
        self.hits += 1
        return list(entry[1]), list(entry[2])

    def keep(self, held: Iterable[tuple[CustomerFile, list[OrderLine], Sequence[Occasion]]]) -> None:
        """Hold each file's lines and occasions, as committed with it; the least recently used go
        beyond the bound."""
        if self.max_lines <= 0:
            return
        for file, lines, history in held:
            self.forget(file.customer_id)
            if len(lines) > self.max_lines:
                continue  # one customer larger than the whole cache: read each time
            self._entries[file.customer_id] = (stamp_of(file), tuple(lines), tuple(history))
            self._lines += len(lines)
        while self._lines > self.max_lines:
            _, (_, evicted, _) = self._entries.popitem(last=False)
            self._lines -= len(evicted)

    def forget(self, customer_id: str) -> None:
        entry = self._entries.pop(customer_id, None)
        if entry is not None:
            self._lines -= len(entry[1])

    def clear(self) -> None:
        self._entries.clear()
        self._lines = 0
