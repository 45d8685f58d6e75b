"""The processor's commands: ``scolaflux process``, ``scolaflux conventions …``, ``scolaflux audit pupil [INE]``."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from ..infra.settings import Settings
from ..schemas.errors import ConfigError

conventions_cli = typer.Typer(no_args_is_help=True, help="Data-sharing conventions: check, publish, backfill, ACLs.")
audit_cli = typer.Typer(no_args_is_help=True, help="The audit trail: who received what, under which convention.")

Directory = Annotated[
    Path | None, typer.Argument(help="Directory of convention files (default: the conventions_dir setting).")
]


def _connected() -> Settings:
    """Settings with a broker address (these commands do not start a broker of their own)."""
    settings = Settings()
    if settings.kafka_bootstrap is None:
        raise typer.BadParameter("set SCOLAFLUX_KAFKA_BOOTSTRAP (this command does not start a broker)")
    return settings


def _keyed() -> Settings:
    """Connected settings whose pseudonym key may be used (see ``Settings.master_key``)."""
    settings = _connected()
    try:
        settings.master_key()
    except ConfigError as error:
        raise typer.BadParameter(str(error)) from None
    return settings


def process() -> None:
    """Run the processor: raw events in, per-convention deliveries, audit records and dead letters out."""
    import faust

    from ..infra.health import Probes, serve
    from ..infra.kafka import ensure_topics, pipeline_topics
    from ..infra.kafka_auth import aiokafka_security
    from ..infra.metrics import Metrics
    from ..infra.runtime import collect_less_often
    from ..schemas.geography import load_geography
    from .app import create_app
    from .live import LiveConventions, delivery_topic_creator
    from .wiring import build_pipeline, master_key, processor_topics

    settings = _keyed()
    assert settings.kafka_bootstrap is not None
    collect_less_often()
    ensure_topics(settings, [*pipeline_topics(settings), *processor_topics(settings)])
    geography = load_geography()
    conventions = LiveConventions(
        settings.kafka_bootstrap,
        settings.conventions_topic,
        master_key(settings),
        delivery_topic_creator(settings),
        aiokafka_security(settings),
    )
    metrics, probes = Metrics(), Probes()
    serve(metrics, probes.health(), settings.metrics_port, settings.metrics_host)  # /metrics, /livez, /readyz
    app = create_app(settings, build_pipeline(settings, geography, conventions), conventions, metrics, probes)
    faust.Worker(app, loglevel="INFO", quiet=True).execute_from_commandline()


@conventions_cli.command("check")
def check(
    directory: Directory = None,
) -> None:
    """Check every convention file of a directory; report every problem at once (exit 1 if any)."""
    from ..schemas.geography import load_geography
    from .conventions import check_directory

    checked = check_directory(directory or Settings().conventions_dir, load_geography())
    for error in checked.errors:
        typer.echo(str(error), err=True)
    typer.echo(f"{len(checked.conventions)} valid convention(s), {len(checked.errors)} problem(s)")
    if checked.errors:
        raise typer.Exit(1)


@conventions_cli.command("publish")
def publish_command(
    directory: Directory = None,
) -> None:
    """Publish a directory's conventions (each file a version); the processor applies them live."""
    from ..schemas.errors import ConfigError
    from ..schemas.geography import load_geography
    from .conventions import ConventionFileError, check_directory
    from .publish import publish

    settings = _connected()
    checked = check_directory(directory or settings.conventions_dir, load_geography())
    try:
        if checked.errors:
            raise ConventionFileError(list(checked.errors))
        changed = publish(settings, [(str(path), c) for path, c in checked.conventions])
    except (ConfigError, ConventionFileError) as error:
        typer.echo(str(error), err=True)
        raise typer.Exit(1) from None
    for history in changed:
        latest = history.latest
        typer.echo(f"published {latest.id} version {latest.version} ({latest.status})")
    typer.echo(f"{len(changed)} changed, {len(checked.conventions) - len(changed)} unchanged")


@conventions_cli.command("list")
def list_command() -> None:
    """The conventions on the conventions topic: id, latest version, status, authority."""
    from .publish import read_histories

    for history in sorted(read_histories(_connected()).values(), key=lambda h: h.id):
        c = history.latest
        typer.echo(
            f"{c.id}  v{c.version}  {c.status}  {c.identity}  {c.authority.level} {c.authority.code}  "
            f"{c.valid_from} → {c.valid_until}  ({len(history.versions)} version(s))"
        )


@conventions_cli.command("withdraw")
def withdraw_command(convention_id: str) -> None:
    """Remove a convention at once (tombstone): nothing more is delivered under it."""
    from .publish import withdraw

    withdraw(_connected(), convention_id)
    typer.echo(f"withdrew {convention_id}")


@conventions_cli.command("backfill")
def backfill_command(
    convention_id: str,
    wait: Annotated[bool, typer.Option(help="Wait for the live processor to pass the backfill's end first.")] = True,
    wait_seconds: Annotated[float, typer.Option(help="How long to wait for the live processor.")] = 120.0,
    restart: Annotated[bool, typer.Option(help="Forget earlier progress and start again.")] = False,
) -> None:
    """Replay retained raw history through one convention alone (resumable: run it again to resume)."""
    from ..schemas.geography import load_geography
    from .backfill import BackfillError, backfill

    settings = _keyed()
    try:
        report = backfill(
            settings,
            convention_id,
            load_geography(),
            wait_for_live=wait_seconds if wait else None,
            restart=restart,
            progress=lambda r: typer.echo(f"read {r.read}, delivered {r.delivered}, already delivered {r.skipped}"),
        )
    except BackfillError as error:
        typer.echo(str(error), err=True)
        raise typer.Exit(1) from None
    state = "complete" if report.complete else "stopped (run again to resume)"
    typer.echo(
        f"backfill of {convention_id} {state}: read {report.read}, delivered {report.delivered}, "
        f"already delivered {report.skipped}, rejected {report.rejected}"
    )


@conventions_cli.command("acl")
def acl_command(
    directory: Directory = None,
    bootstrap: Annotated[str, typer.Option(help="Bootstrap address written into the commands.")] = "$BOOTSTRAP",
) -> None:
    """Print the kafka-acls commands that give each authority access to its own delivery topics only."""
    from .acl import acl_commands
    from .conventions import ConventionFileError, load_directory

    settings = Settings()
    try:
        conventions = load_directory(directory or settings.conventions_dir)
    except ConventionFileError as error:
        typer.echo(str(error), err=True)
        raise typer.Exit(1) from None
    for line in acl_commands(settings, conventions, bootstrap):
        typer.echo(line)


@audit_cli.command("pupil")
def audit_pupil(
    ine: Annotated[
        str | None,
        typer.Argument(
            metavar="INE",
            help="The pupil's INE (hashed; never stored or printed). Omitted: read from standard input "
            "(a hidden prompt on a terminal), which keeps it out of `ps` and the shell history.",
        ),
    ] = None,
) -> None:
    """Who received what about one pupil, under which convention (for the académie or a family's request)."""
    from .audit import pupil_audit

    settings = _keyed()
    if ine is None:
        ine = typer.prompt("INE", hide_input=True) if sys.stdin.isatty() else sys.stdin.readline().strip()
    try:
        records = pupil_audit(settings, ine)
    except ValueError as error:
        raise typer.BadParameter(str(error)) from None
    if not records:
        typer.echo("no delivery about this pupil")
    for r in records:
        typer.echo(
            f"{r['delivered_at']:%Y-%m-%d %H:%M:%S}  {r['authority_level']} {r['authority_code']}  "
            f"{r['convention_id']} v{r['convention_version']}  {r['identity_treatment']}  {r['event_type']} "
            f"of {r['event_time']:%Y-%m-%d}  fields: {', '.join(r['fields'])}  ({r['mode']})"
        )
    typer.echo(f"{len(records)} deliveries")


def register(cli: typer.Typer) -> None:
    """Add the processor's commands to the root CLI."""
    cli.command()(process)
    cli.add_typer(conventions_cli, name="conventions")
    cli.add_typer(audit_cli, name="audit")
