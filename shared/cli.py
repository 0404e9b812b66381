"""The ``huitou`` command: run the dev stack and operate a deployment."""

from __future__ import annotations

import asyncio
import importlib
from pathlib import Path

import typer

from shared.db import create_engine, migrate

app = typer.Typer(help="Huitou: an event-driven customer-care engine.", no_args_is_help=True)
SERVICES = ("ingest", "scoring", "outreach", "gateway")


@app.command()
def run() -> None:
    """Start the embedded dev stack (broker, SMTP sink, four services) until Ctrl-C."""
    from shared.devstack import run as run_stack

    raise typer.Exit(asyncio.run(run_stack()))


@app.command("migrate")
def migrate_command(service: str = typer.Argument(..., help="ingest, scoring, outreach or gateway")) -> None:
    """Apply a service's database migrations (what the Kubernetes init containers run)."""
    if service not in SERVICES:
        raise typer.BadParameter(f"unknown service {service!r}; choose one of {', '.join(SERVICES)}")
    settings_module = importlib.import_module(f"services.{service}.settings")
    settings_class = getattr(settings_module, f"{service.capitalize()}Settings")
    settings = settings_class()
    migrations = Path(importlib.import_module(f"services.{service}").__file__ or "").parent / "migrations"

    async def apply() -> None:
        engine = create_engine(settings.effective_database_url, settings.effective_schema)
        try:
            await migrate(engine, migrations, settings.effective_schema)
        finally:
            await engine.dispose()

    asyncio.run(apply())
    typer.echo(f"{service}: migrations applied")


if __name__ == "__main__":
    app()
