"""The body of every service's Alembic ``env.py``: online migrations on a handed-in connection."""

from __future__ import annotations

from alembic import context
from sqlalchemy import MetaData


def run_env(target_metadata: MetaData) -> None:
    config = context.config
    connection = config.attributes.get("connection")
    if connection is None:
        raise RuntimeError(
            "run migrations through `huitou migrate SERVICE` (or service start-up), "
            "which hands Alembic a live connection"
        )
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        # SQLite cannot ALTER most things in place; batch mode rebuilds tables instead.
        render_as_batch=connection.dialect.name == "sqlite",
        version_table_schema=config.attributes.get("schema"),
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()
