"""UTCDateTime binds on SQLite in one step (shared.db); the text it stores must be exactly what
SQLAlchemy's two-step path stores, or rows written before and after would sort and compare
differently in ``WHERE due_at <= :now``."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta, timezone
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import Column, Integer, MetaData, Table, insert, select, text
from sqlalchemy.dialects import sqlite
from sqlalchemy.types import TypeDecorator

from shared.db import UTCDateTime, create_engine

metadata = MetaData()
stamps = Table("stamps", metadata, Column("id", Integer, primary_key=True), Column("at", UTCDateTime()))


def _two_step(value: datetime | None) -> Any:
    """SQLAlchemy's own path: process_bind_param, then SQLite DATETIME's formatting."""
    dialect = sqlite.dialect()
    kind = UTCDateTime().dialect_impl(dialect)
    inner = TypeDecorator.bind_processor(kind, dialect)
    assert inner is not None
    return inner(value)


def _values() -> list[datetime]:
    rng = random.Random(7)
    zones = [UTC, timezone(timedelta(hours=8)), timezone(timedelta(hours=-5, minutes=-30)), ZoneInfo("Asia/Shanghai")]
    values = [
        datetime(1, 1, 1, 12, tzinfo=UTC),  # a four-digit year, zero-padded
        datetime(999, 12, 31, 23, 59, 59, 999_999, tzinfo=UTC),
        datetime(2026, 11, 24, 0, 0, 0, 0, tzinfo=UTC),  # no microseconds: still six digits
        datetime(2026, 1, 1, 0, 30, tzinfo=timezone(timedelta(hours=8))),  # the UTC day before
        datetime(2026, 6, 1, 12, tzinfo=timezone(timedelta(0))),  # UTC, but not the singleton
    ]
    for _ in range(500):
        naive = datetime(2000, 1, 1) + timedelta(seconds=rng.uniform(0, 40 * 365 * 86400))
        values.append(naive.replace(tzinfo=rng.choice(zones)))
    return values


def test_sqlite_text_is_the_same_as_sqlalchemys_two_step_path() -> None:
    dialect = sqlite.dialect()
    fused = UTCDateTime().dialect_impl(dialect).bind_processor(dialect)
    assert fused is not None
    for value in _values():
        assert fused(value) == _two_step(value), value
    assert fused(None) is None


def test_a_naive_datetime_is_refused_on_every_path() -> None:
    dialect = sqlite.dialect()
    fused = UTCDateTime().dialect_impl(dialect).bind_processor(dialect)
    assert fused is not None
    with pytest.raises(ValueError, match="naive"):
        fused(datetime(2026, 1, 1))
    with pytest.raises(ValueError, match="naive"):
        _two_step(datetime(2026, 1, 1))


async def test_values_read_back_as_the_same_instants_and_compare_in_sql(tmp_path: Any) -> None:
    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path}/stamps.db")
    values = _values()
    try:
        async with engine.begin() as connection:
            await connection.run_sync(metadata.create_all)
            await connection.execute(insert(stamps), [{"id": i, "at": v} for i, v in enumerate(values)])
            read = dict((await connection.execute(select(stamps.c.id, stamps.c.at))).all())
            cut = values[len(values) // 2]
            before = {
                row[0]
                for row in await connection.execute(
                    select(stamps.c.id).where(stamps.c.at <= cut)  # bound through the same processor
                )
            }
            raw = (await connection.execute(text("SELECT at FROM stamps WHERE id = 2"))).scalar_one()
    finally:
        await engine.dispose()
    assert all(read[i] == v and read[i].tzinfo is UTC for i, v in enumerate(values))
    assert before == {i for i, v in enumerate(values) if v <= cut}
    assert raw == "2026-11-24 00:00:00.000000"
