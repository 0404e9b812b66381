"""Pure intake rules shared by every interface: size limits, stamping and contract validation.

Each interface (native, Segment, CloudEvents, the backfill CLI) turns what it received into
*candidates* — dicts in Huitou's native envelope, each remembering its position in the caller's
request — and every candidate then goes through the same ``validate``. Nothing here does I/O.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from pydantic_core import to_json

from shared.contracts import ContractError, IntakeEvent, parse_intake


class MappingError(ValueError):
    """Something sent through a foreign interface (Segment, CloudEvents, a CSV row) that cannot
    become a Huitou event; one readable line per problem."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("; ".join(problems))


@dataclass(frozen=True)
class Rejection:
    """Why the item at ``index`` of the caller's request was not accepted."""

    index: int
    event_id: str | None
    problems: list[str]

    def as_json(self) -> dict[str, Any]:
        return {"index": self.index, "event_id": self.event_id, "problems": self.problems}


@dataclass(slots=True)
class Candidate:
    """One event in the native envelope, not yet validated."""

    index: int
    data: dict[str, Any]
    note: str | None = None  # prefixed to contract problems, e.g. "as Huitou purchase"
    # (our path prefix, the caller's field) pairs, first match wins: a problem with our
    # "payload.amount" is reported against the Segment "properties.total" the caller sent.
    renames: tuple[tuple[str, str], ...] = ()

    def explain(self, problems: list[str]) -> list[str]:
        explained = [_rename(problem, self.renames) for problem in problems]
        return [f"{self.note}: {problem}" for problem in explained] if self.note else explained


def _rename(problem: str, renames: tuple[tuple[str, str], ...]) -> str:
    where, sep, message = problem.partition(": ")
    if not sep:
        return problem
    for ours, theirs in renames:
        if where == ours or where.startswith(ours + "."):
            return f"{theirs}{where[len(ours) :]}: {message}"
    return problem


@dataclass
class Verdicts:
    valid: list[IntakeEvent] = field(default_factory=list)
    indexes: list[int] = field(default_factory=list)  # request position of each valid event
    rejected: list[Rejection] = field(default_factory=list)


def item_sizes(items: Sequence[Any], body_size: int, max_event_bytes: int) -> list[int]:
    """Each item's size as compact UTF-8 JSON (what Segment's 32 KB limit measures).

    Skipped when the whole body fits the per-event limit, since then no item can exceed it:
    the common small request pays nothing for the check.
    """
    if body_size <= max_event_bytes:
        return [0] * len(items)
    return [len(to_json(item)) for item in items]  # pydantic-core's encoder: compact UTF-8, and fast


def oversize(index: int, item: Any, size: int, max_event_bytes: int, id_field: str = "event_id") -> Rejection | None:
    if size <= max_event_bytes:
        return None
    return Rejection(index, caller_id(item, id_field), [f"event is {size} bytes; the limit is {max_event_bytes} bytes"])


def caller_id(item: Any, id_field: str = "event_id") -> str | None:
    """The id the caller gave an item, for reporting (None if absent or not a string)."""
    value = item.get(id_field) if isinstance(item, dict) else None
    return value if isinstance(value, str) else None


def native_candidates(
    items: Sequence[Any], sizes: Sequence[int], max_event_bytes: int
) -> tuple[list[Candidate], list[Rejection]]:
    """Items already in Huitou's envelope (POST /v1/events, NDJSON backfill)."""
    candidates: list[Candidate] = []
    rejected: list[Rejection] = []
    for index, (item, size) in enumerate(zip(items, sizes, strict=True)):
        too_big = oversize(index, item, size, max_event_bytes)
        if too_big is not None:
            rejected.append(too_big)
        elif not isinstance(item, dict):
            rejected.append(Rejection(index, None, ["each event must be a JSON object"]))
        else:
            candidates.append(Candidate(index, item))
    return candidates, rejected


def validate(
    candidates: Iterable[Candidate], *, source: str, received_at: datetime, trace_id: str | None = None
) -> Verdicts:
    """Validate each candidate on its own: one bad event never sinks its neighbours.

    ``source`` and ``received_at`` are ours to set (from the write key and the clock), so any
    value the client sent for them is replaced rather than trusted. ``trace_id`` (the request's
    trace) goes to the events that carry none of their own.
    """
    verdicts = Verdicts()
    valid, indexes, rejected = verdicts.valid, verdicts.indexes, verdicts.rejected
    for candidate in candidates:
        # Stamped in place: a candidate's dict is built for this request alone, and copying
        # every event's dict cost more than the stamps themselves.
        data = candidate.data
        data["source"] = source
        data["received_at"] = received_at
        if trace_id is not None and data.get("trace_id") in (None, ""):
            data["trace_id"] = trace_id
        try:
            event = parse_intake(data)
        except ContractError as error:
            problems = candidate.explain(error.problems)
            rejected.append(Rejection(candidate.index, caller_id(data), problems))
            continue
        valid.append(event)
        indexes.append(candidate.index)
    return verdicts
