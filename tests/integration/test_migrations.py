"""Every service's migrations apply cleanly (twice) on SQLite and PostgreSQL and match its tables."""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect

from shared.db import create_engine, migrate

SERVICES = ("ingest", "scoring", "outreach", "gateway")


@pytest.mark.parametrize("service", SERVICES)
async def test_migrations_reach_head_and_match_the_tables(service: str, database_url: str) -> None:
    tables = importlib.import_module(f"services.{service}.tables")
    migrations = Path(importlib.import_module(f"services.{service}").__file__).parent / "migrations"
    engine = create_engine(database_url, service)
    try:
        await migrate(engine, migrations, service)
        await migrate(engine, migrations, service)  # idempotent: start-up runs it every time

        def check(connection):
            names = set(inspect(connection).get_table_names())
            assert set(tables.metadata.tables) <= names
            context = MigrationContext.configure(connection, opts={"compare_type": False})
            return compare_metadata(context, tables.metadata)

        async with engine.connect() as connection:
            diff = await connection.run_sync(check)
        assert diff == [], f"{service}: tables and migrations disagree: {diff}"
    finally:
        await engine.dispose()


@pytest.mark.postgres
async def test_on_postgres_each_service_keeps_its_tables_in_its_own_schema(pg_base_url: str) -> None:
    from tests.conftest import _fresh_pg_database

    url = await _fresh_pg_database(pg_base_url)
    for service in ("scoring", "outreach"):  # both have processed_events and outbox tables
        migrations = Path(importlib.import_module(f"services.{service}").__file__).parent / "migrations"
        engine = create_engine(url, service)
        await migrate(engine, migrations, service)
        await engine.dispose()
    engine = create_engine(url, "scoring")
    try:
        async with engine.connect() as connection:
            schemas = await connection.run_sync(lambda c: inspect(c).get_schema_names())
            scoring_tables = await connection.run_sync(lambda c: set(inspect(c).get_table_names(schema="scoring")))
            outreach_tables = await connection.run_sync(lambda c: set(inspect(c).get_table_names(schema="outreach")))
        assert {"scoring", "outreach"} <= set(schemas)
        assert {"customer_files", "outbox", "processed_events"} <= scoring_tables
        assert {"touches", "outbox", "processed_events"} <= outreach_tables
    finally:
        await engine.dispose()


@pytest.mark.postgres
async def test_replicas_starting_together_migrate_once_without_errors(pg_base_url: str) -> None:
    """Init containers of several replicas run `huitou migrate` at the same moment."""
    import asyncio

    from tests.conftest import _fresh_pg_database

    url = await _fresh_pg_database(pg_base_url)
    migrations = Path(importlib.import_module("services.scoring").__file__).parent / "migrations"
    engines = [create_engine(url, "scoring") for _ in range(4)]
    try:
        await asyncio.gather(*(migrate(engine, migrations, "scoring") for engine in engines))
        async with engines[0].connect() as connection:
            tables = await connection.run_sync(lambda c: set(inspect(c).get_table_names(schema="scoring")))
        assert {"customer_files", "alembic_version"} <= tables
    finally:
        for engine in engines:
            await engine.dispose()
