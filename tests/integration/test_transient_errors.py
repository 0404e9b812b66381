"""What the consumers retry: a real PostgreSQL deadlock is transient (the server aborted one side
and the same work retried succeeds); a constraint violation is not."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError, IntegrityError

from shared.db import create_engine
from shared.service import is_transient

pytestmark = pytest.mark.postgres


async def test_a_deadlock_is_transient_and_a_unique_violation_is_not(pg_base_url: str) -> None:
    from tests.conftest import _fresh_pg_database

    engine = create_engine(await _fresh_pg_database(pg_base_url))
    try:
        async with engine.begin() as setup:
            await setup.execute(text("CREATE TABLE t (id int PRIMARY KEY, n int)"))
            await setup.execute(text("INSERT INTO t VALUES (1, 0), (2, 0)"))
        both_hold_one = asyncio.Barrier(2)

        async def lock(first: int, second: int) -> None:
            async with engine.begin() as connection:
                await connection.execute(text("UPDATE t SET n = n + 1 WHERE id = :id"), {"id": first})
                await both_hold_one.wait()
                await connection.execute(text("UPDATE t SET n = n + 1 WHERE id = :id"), {"id": second})

        outcomes = await asyncio.gather(lock(1, 2), lock(2, 1), return_exceptions=True)
        aborted = [o for o in outcomes if isinstance(o, BaseException)]
        assert len(aborted) == 1 and isinstance(aborted[0], DBAPIError), outcomes  # the server broke the deadlock
        assert is_transient(aborted[0])

        with pytest.raises(IntegrityError) as duplicate:
            async with engine.begin() as connection:
                await connection.execute(text("INSERT INTO t VALUES (1, 0)"))
        assert not is_transient(duplicate.value)
    finally:
        await engine.dispose()
