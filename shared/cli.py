"""The ``huitou`` command: run the dev stack and operate a deployment."""

from __future__ import annotations

import asyncio
import importlib
from pathlib import Path

import typer

from shared.db import create_engine, migrate
from shared.dlq import DlqError, Filters, cli_list, cli_replay, parse_moment
from shared.settings import ServiceSettings

app = typer.Typer(help="Huitou: an event-driven customer-care engine.", no_args_is_help=True)
SERVICES = ("ingest", "scoring", "outreach", "gateway")
BOOTSTRAP_DEFAULT: str = ServiceSettings.model_fields["kafka_bootstrap_servers"].default
TIMEOUT_DEFAULT: int = ServiceSettings.model_fields["kafka_request_timeout_ms"].default

dlq_app = typer.Typer(
    help=(
        "Inspect huitou.dlq and replay dead letters to the topics they came from. Replaying is safe: "
        "every consumer dedupes by event_id, so a replayed event that was in fact applied changes nothing."
    ),
    no_args_is_help=True,
)
app.add_typer(dlq_app, name="dlq")


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


TopicOption = typer.Option([], "--topic", help="only dead letters from this topic (repeatable)")
ServiceOption = typer.Option([], "--service", help="only dead letters of this service, e.g. scoring (repeatable)")
SinceOption = typer.Option(None, help="only those that failed at or after this time (ISO 8601; no offset = UTC)")
UntilOption = typer.Option(None, help="only those that failed before this time (ISO 8601; no offset = UTC)")
BootstrapOption = typer.Option(BOOTSTRAP_DEFAULT, envvar="HUITOU_KAFKA_BOOTSTRAP_SERVERS", help="broker address")
TimeoutOption = typer.Option(
    TIMEOUT_DEFAULT, envvar="HUITOU_KAFKA_REQUEST_TIMEOUT_MS", help="how long to wait for the broker, in ms"
)


def _filters(topics: list[str], services: list[str], since: str | None, until: str | None) -> Filters:
    try:
        return Filters(
            frozenset(topics), frozenset(services), parse_moment(since, "--since"), parse_moment(until, "--until")
        )
    except DlqError as error:
        raise typer.BadParameter(str(error)) from None


@dlq_app.command(
    "list",
    help=(
        "What is in huitou.dlq: where each dead letter came from, why it failed, and whether it is "
        "pending or handled (replayed, or passed over by a replay with --since)."
    ),
)
def dlq_list(
    topics: list[str] = TopicOption,
    services: list[str] = ServiceOption,
    since: str | None = SinceOption,
    until: str | None = UntilOption,
    pending: bool = typer.Option(False, "--pending", help="only those not replayed yet"),
    as_json: bool = typer.Option(False, "--json", help="one JSON object per line, with the original value"),
    bootstrap_servers: str = BootstrapOption,
    request_timeout_ms: int = TimeoutOption,
) -> None:
    filters = _filters(topics, services, since, until)
    raise typer.Exit(
        cli_list(
            bootstrap_servers, filters, pending_only=pending, as_json=as_json, request_timeout_ms=request_timeout_ms
        )
    )


@dlq_app.command(
    "replay",
    help=(
        "Republish pending dead letters to their original topic with their original key and headers (plus "
        "huitou-replayed-from), once what made them fail is fixed.\n\n"
        "Progress is committed per origin, to consumer group huitou-dlq-replay.<service>.<topic>, only after "
        "the broker acknowledged the republished batch, so running it again resends nothing already replayed. "
        "Run one replay at a time: two at once may resend the same dead letters (harmless: consumers dedupe "
        "by event_id)."
    ),
)
def dlq_replay(
    topics: list[str] = TopicOption,
    services: list[str] = ServiceOption,
    since: str | None = typer.Option(
        None,
        help="pass over, for good, pending dead letters that failed before this time (ISO 8601; no offset = UTC)",
    ),
    until: str | None = typer.Option(
        None, help="stop at the first dead letter that failed at or after this time; it and later ones stay pending"
    ),
    dry_run: bool = typer.Option(False, "--dry-run", help="show what would be replayed; publish and commit nothing"),
    batch_size: int = typer.Option(100, min=1, help="dead letters republished per acknowledged batch"),
    bootstrap_servers: str = BootstrapOption,
    request_timeout_ms: int = TimeoutOption,
) -> None:
    filters = _filters(topics, services, since, until)
    raise typer.Exit(
        cli_replay(
            bootstrap_servers, filters, dry_run=dry_run, batch_size=batch_size, request_timeout_ms=request_timeout_ms
        )
    )


if __name__ == "__main__":
    app()
