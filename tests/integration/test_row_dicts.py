"""``shared.db.row_dicts`` — the fast way hot reads turn rows into dicts — must give exactly what
``dict(row)`` over ``.mappings()`` gives, with every column type's result processing applied."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import JSON, Boolean, Column, Integer, MetaData, String, Table, insert, select

from shared.db import Money, UTCDateTime, create_engine, row_dicts

metadata = MetaData()
things = Table(
    "things",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("name", String(20)),
    Column("at", UTCDateTime()),
    Column("amount", Money),
    Column("flag", Boolean),
    Column("data", JSON),
)

ROWS = [
    {
        "id": 1,
        "name": "a",
        "at": datetime(2026, 11, 24, 9, 30, 1, 5, tzinfo=UTC),
        "amount": Decimal("12.3456"),
        "flag": True,
        "data": {"k": [1, 2]},
    },
    {"id": 2, "name": None, "at": None, "amount": None, "flag": None, "data": None},
    {
        "id": 3,
        "name": "c",
        "at": datetime(1997, 1, 1, tzinfo=UTC),
        "amount": Decimal("-0.5"),
        "flag": False,
        "data": [None, "x"],
    },
]


async def test_row_dicts_equal_dicts_of_row_mappings(tmp_path: Any) -> None:
    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path}/things.db")
    try:
        async with engine.begin() as connection:
            await connection.run_sync(metadata.create_all)
            await connection.execute(insert(things), ROWS)
        async with engine.connect() as connection:
            query = select(things).order_by(things.c.id)
            expected = [dict(row) for row in (await connection.execute(query)).mappings().all()]
            got = row_dicts(await connection.execute(query))
            narrow = row_dicts(await connection.execute(select(things.c.amount, things.c.id).order_by(things.c.id)))
            empty = row_dicts(await connection.execute(query.where(things.c.id > 99)))
    finally:
        await engine.dispose()
    assert got == expected
    assert got[0]["at"] == ROWS[0]["at"] and got[0]["at"].tzinfo is UTC
    assert got[0]["amount"] == Decimal("12.3456") and got[0]["data"] == {"k": [1, 2]}
    assert [list(row) for row in got] == [[c.name for c in things.columns]] * 3  # column order kept
    assert narrow == [{"amount": r["amount"], "id": r["id"]} for r in ROWS]
    assert empty == []
