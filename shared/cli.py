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


@app.command("import")
def import_command(
    path: Path = typer.Argument(..., help="order history: a CSV, NDJSON or CDNOW file"),
    format_name: str | None = typer.Option(
        None, "--format", "-f", help="csv, ndjson or cdnow (default: from the file name)"
    ),
    maps: list[str] = typer.Option([], "--map", "-m", help="field=column, e.g. --map order_id=OrderNo (repeatable)"),
    sets: list[str] = typer.Option([], "--set", help="field=value for every row, e.g. --set currency=USD"),
    date_format: str | None = typer.Option(None, help="strptime format of the date column, e.g. %Y%m%d"),
    timezone: str = typer.Option("UTC", help="time zone of dates and times written without an offset"),
    source: str = typer.Option("import", help="source name stamped on the events"),
    delimiter: str = typer.Option(",", help="CSV field delimiter"),
    batch_size: int = typer.Option(500, help="events per acknowledged batch (and checkpoint)"),
    rejects: Path | None = typer.Option(None, help="where rejected rows go (default: <file>.rejects.ndjson)"),
    checkpoint: Path | None = typer.Option(None, help="resume file (default: next to the rejects file)"),
    restart: bool = typer.Option(False, "--restart", help="ignore the checkpoint and start from the first row"),
    limit: int | None = typer.Option(None, help="stop (resumably) after this many rows"),
    dry_run: bool = typer.Option(False, "--dry-run", help="validate and report rejects; publish nothing"),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="show a progress bar with rate and ETA"),
    bootstrap_servers: str = typer.Option("127.0.0.1:9092", envvar="HUITOU_KAFKA_BOOTSTRAP_SERVERS"),
) -> None:
    """Backfill order history into huitou.events, marked historical; resumable (see docs/ingest.md)."""
    from services.ingest.backfill import cli_import

    raise typer.Exit(
        cli_import(
            path,
            format_name=format_name,
            maps=maps,
            sets=sets,
            date_format=date_format,
            timezone=timezone,
            source=source,
            delimiter=delimiter,
            batch_size=batch_size,
            rejects=rejects,
            checkpoint=checkpoint,
            restart=restart,
            limit=limit,
            dry_run=dry_run,
            show_progress=progress,
            bootstrap_servers=bootstrap_servers,
        )
    )


if __name__ == "__main__":
    app()
