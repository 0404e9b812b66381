"""The clock scores are computed "as of".

* live: wall-clock time. A historical (backfilled) event in live mode is also scored as of now —
  the file describes the customer today, which is where live traffic plus the lapse sweep would
  have brought it by now.
* replay: event time. A file is scored as of the latest event it has seen (never earlier than
  its previous as-of); the sweep runs as of the replay clock, the latest event time any file has
  seen, persisted in the ``clock`` table. A backfill therefore ends in the state the same events
  would have produced arriving live, whatever the wall clock says and however often it restarts.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Literal

from sqlalchemy.ext.asyncio import AsyncSession

from services.scoring import repository
from services.scoring.customer_file import CustomerFile

ClockMode = Literal["live", "replay"]


def wall_clock() -> datetime:
    return datetime.now(UTC)


class Clock:
    def __init__(self, mode: ClockMode = "live", now: Callable[[], datetime] = wall_clock) -> None:
        self.mode = mode
        self._now = now

    def now(self) -> datetime:
        return self._now()

    def for_file(self, file: CustomerFile) -> datetime:
        """As-of time for scoring ``file`` after an event or operator change."""
        candidates = [t for t in (file.last_event_at, file.scores.as_of if file.scores else None) if t is not None]
        if self.mode == "live":
            candidates.append(self._now())
        if not candidates:
            return self._now()
        return max(candidates)

    async def sweep_time(self, session: AsyncSession) -> datetime | None:
        """As-of time of the lapse sweep and of a refit without an explicit as-of (None: no events yet)."""
        if self.mode == "live":
            return self._now()
        at = await repository.replay_clock(session)
        if at is not None:
            await repository.advance_replay_clock(session, at)
        return at
