"""Backpressure: a bounded budget of events and bytes in flight (received, not yet acknowledged).

Pure bookkeeping with no awaits inside, so on one event loop it needs no lock. A request that
does not fit is refused at once (429 at the edge) rather than queued: queueing would only move
the unbounded memory from the process into a waiting line.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import TracebackType


class OverBudget(RuntimeError):
    """More is in flight than the budget allows; the caller should retry shortly."""


@dataclass
class InFlightBudget:
    max_events: int
    max_bytes: int
    events: int = 0
    bytes: int = 0

    def fits(self, events: int, nbytes: int) -> bool:
        # With nothing in flight anything that passed the request-size limit fits, so a single
        # large batch can never be refused forever.
        if self.events == 0 and self.bytes == 0:
            return True
        return self.events + events <= self.max_events and self.bytes + nbytes <= self.max_bytes

    def hold(self, nbytes: int = 0) -> Hold:
        """Reserve ``nbytes`` now (raises OverBudget); grow the reservation as more is known."""
        hold = Hold(self)
        hold.grow(0, nbytes)
        return hold


class Hold:
    """One request's share of the budget, released exactly once when the request is done."""

    def __init__(self, budget: InFlightBudget) -> None:
        self._budget = budget
        self.events = 0
        self.bytes = 0

    def grow(self, events: int, nbytes: int) -> None:
        budget = self._budget
        # What this request already holds is judged together with what it adds, so a request
        # that is alone in flight can always complete.
        if not (budget.events == self.events and budget.bytes == self.bytes) and not budget.fits(events, nbytes):
            raise OverBudget(
                f"{budget.events} events / {budget.bytes} bytes already in flight "
                f"(limits {budget.max_events} / {budget.max_bytes})"
            )
        budget.events += events
        budget.bytes += nbytes
        self.events += events
        self.bytes += nbytes

    def release(self) -> None:
        self._budget.events -= self.events
        self._budget.bytes -= self.bytes
        self.events = self.bytes = 0

    def __enter__(self) -> Hold:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.release()
