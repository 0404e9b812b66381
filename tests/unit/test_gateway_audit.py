"""What the audit log keeps: never a secret, never an unbounded body, and a lost row never fails
a change that has already happened."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from services.gateway import audit
from shared.db import create_engine, session_factory


def test_secrets_are_replaced_wherever_they_sit() -> None:
    state = {"name": "pos-1", "write_key": "wk_abc", "nested": [{"key": "hk_x", "role": "viewer"}], "token": None}
    assert audit.scrub(state) == {
        "name": "pos-1",
        "write_key": "[secret]",
        "nested": [{"key": "[secret]", "role": "viewer"}],
        "token": None,
    }


def test_a_huge_state_is_summarised() -> None:
    small = {"notes": ["x" * 100]}
    assert audit.bounded(small) == small
    huge = {"notes": ["x" * (audit.MAX_STATE_BYTES + 1)]}
    summary = audit.bounded(huge)
    assert summary["truncated"] is True and summary["bytes"] > audit.MAX_STATE_BYTES


async def test_a_row_that_cannot_be_written_is_logged_not_raised(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'empty.db'}")  # no migrations: no audit_log table
    try:
        with caplog.at_level(logging.ERROR, logger="huitou.gateway.audit"):
            await audit.record(
                session_factory(engine), actor="ops", action="POST /api/v1/x", target="/api/v1/x", status=201
            )
    finally:
        await engine.dispose()
    assert "could not record audit entry" in caplog.text and "ops" in caplog.text
