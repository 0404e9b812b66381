"""Pure intake rules: turn decoded JSON into validated, stamped events with per-item verdicts."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from shared.contracts import ContractError, IntakeEvent, parse_intake


@dataclass(frozen=True)
class Rejection:
    index: int
    event_id: str | None
    problems: list[str]

    def as_json(self) -> dict[str, Any]:
        return {"index": self.index, "event_id": self.event_id, "problems": self.problems}


@dataclass
class Verdicts:
    valid: list[IntakeEvent] = field(default_factory=list)
    rejected: list[Rejection] = field(default_factory=list)


def stamp_and_validate(
    items: list[Any], *, source: str, received_at: datetime, max_event_bytes: int, sizes: list[int]
) -> Verdicts:
    """Validate each item on its own: one bad event never sinks its neighbours.

    ``source`` and ``received_at`` are ours to set (from the write key and the clock), so any
    value the client sent for them is replaced rather than trusted.
    """
    verdicts = Verdicts()
    for index, (item, size) in enumerate(zip(items, sizes, strict=True)):
        event_id = item.get("event_id") if isinstance(item, dict) else None
        event_id = event_id if isinstance(event_id, str) else None
        if size > max_event_bytes:
            verdicts.rejected.append(
                Rejection(index, event_id, [f"event is {size} bytes; the limit is {max_event_bytes} bytes"])
            )
            continue
        if not isinstance(item, dict):
            verdicts.rejected.append(Rejection(index, None, ["each event must be a JSON object"]))
            continue
        try:
            event = parse_intake({**item, "source": source, "received_at": received_at.isoformat()})
        except ContractError as error:
            verdicts.rejected.append(Rejection(index, event_id, error.problems))
            continue
        verdicts.valid.append(event)
    return verdicts
