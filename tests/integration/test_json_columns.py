"""JSON columns go through orjson (shared.db.json_text / json_value) for speed; what orjson would
get wrong still comes back exactly as the standard library's json gave it: integers beyond 64
bits, integer keys, non-ASCII text, and NaN written by earlier versions."""

from __future__ import annotations

import json
import math

import pytest
from sqlalchemy import JSON, Column, Integer, MetaData, Table, insert, select, text

from shared.db import create_engine, is_sqlite, json_text, json_value

metadata = MetaData()
documents = Table("documents", metadata, Column("id", Integer, primary_key=True), Column("body", JSON))

AWKWARD = {
    "loyalty_card": 123456789012345678901234567890,  # a shop's trait, beyond 64 bits
    "negative": -(2**70),
    "just_fits": 2**63 - 1,
    "name": "王小明 — Ünïcode",
    "nested": {"list": [1, 2.5, None, True, "x"], "empty": {}},
    "ratio": 0.1,
}


def test_values_survive_the_text_exactly() -> None:
    assert json_value(json_text(AWKWARD)) == AWKWARD
    assert json_value(json_text({1: "a", 2: "b"})) == {"1": "a", "2": "b"}  # as json.dumps stores it
    assert json_value(json_text(AWKWARD).encode()) == AWKWARD


def test_a_value_that_is_not_text_is_refused_like_json_loads_refuses_it() -> None:
    # SQLite's JSON type relies on the TypeError to pass a bare stored number through.
    with pytest.raises(TypeError):
        json_value(0)  # type: ignore[arg-type]


def test_text_written_by_the_standard_library_still_reads() -> None:
    old = json.dumps({"score": float("nan"), "big": 10**25, "fine": 1})
    value = json_value(old)
    assert math.isnan(value["score"]) and value["big"] == 10**25 and value["fine"] == 1


async def test_a_json_column_round_trips_on_the_database(database_url: str) -> None:
    engine = create_engine(database_url)
    try:
        async with engine.begin() as connection:
            await connection.run_sync(metadata.create_all)
            await connection.execute(insert(documents), [{"id": 1, "body": AWKWARD}, {"id": 2, "body": {7: "seven"}}])
            await connection.execute(insert(documents), [{"id": 3, "body": 42}, {"id": 4, "body": "text"}])
        async with engine.connect() as connection:
            rows = dict((await connection.execute(select(documents.c.id, documents.c.body))).all())
            assert rows == {1: AWKWARD, 2: {"7": "seven"}, 3: 42, 4: "text"}
            if is_sqlite(database_url):
                # Stored as JSON text any other reader can parse, non-ASCII unescaped.
                stored = (await connection.execute(text("SELECT body FROM documents WHERE id = 1"))).scalar_one()
                assert "王小明" in stored and json.loads(stored) == AWKWARD
    finally:
        await engine.dispose()
