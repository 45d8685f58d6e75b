"""``scolaflux view``: run, rebuild, read, export and serve an authority's view.

AUTHORITY is ``level:code`` (``commune:69123``, ``departement:69``, ``region:84``). Its delivery
topics are those of the conventions given with ``--convention`` (repeatable); by default those of
its published conventions that have not ended, each with that convention's retention.
"""

from __future__ import annotations

import datetime as dt
import signal
import sys
import threading
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table
from sqlalchemy import Engine

from ..infra.settings import Settings
from .authority import Authority, UnknownAuthority
from .reports import SECTIONS, ReadOptions, section, summary
from .store import open_view_engine
from .views import AuthorityView

app = typer.Typer(no_args_is_help=True, add_completion=False, help=__doc__)
console = Console()

AuthorityArg = Annotated[str, typer.Argument(help="level:code, e.g. commune:69123")]
Conventions = Annotated[list[str] | None, typer.Option("--convention", "-c", help="A convention id (repeatable).")]
AsOf = Annotated[str | None, typer.Option(help="Read the view as of this date (YYYY-MM-DD); default today.")]


def _authority(text: str) -> Authority:
    try:
        return Authority.parse(text)
    except UnknownAuthority as exc:
        raise typer.BadParameter(str(exc)) from exc


def open_engine(settings: Settings, authority: Authority) -> Engine:
    """The engine of ``authority``'s view under ``settings`` (its SQLite file or PostgreSQL schema)."""
    engine = open_view_engine(settings.database_url, settings.data_dir / "views", authority, settings.topic_prefix)
    AuthorityView(authority).create(engine)
    return engine


def conventions_for(settings: Settings, authority: Authority, given: list[str] | None) -> dict[str, int | None]:
    """The conventions an authority's view reads (those given, else its published ones that have not
    ended), each with its retention in days (None where it is not published)."""
    from ..processors.publish import read_histories

    histories = read_histories(settings)
    ids = given or sorted(
        h.id
        for h in histories.values()
        if (h.latest.authority.level, h.latest.authority.code) == (authority.level, authority.code)
        and h.latest.status != "ended"
    )
    if not ids:
        raise typer.BadParameter(
            f"no published convention for {authority}: publish one (scolaflux conventions publish)"
        )
    return {i: histories[i].latest.retention_days if i in histories else None for i in ids}


def topics_of(settings: Settings, conventions: dict[str, int | None]) -> list[str]:
    """The delivery topics of those conventions."""
    return [settings.delivery_topic(c) for c in conventions]


def read_options(settings: Settings, as_of: str | None, school_names: bool = True) -> ReadOptions:
    """How the CLI and the server read views."""
    names = None
    if school_names:
        from ..schemas.geography import load_geography

        schools = load_geography().schools

        def names(uai: str) -> str | None:
            school = schools.get(uai)
            return school.name if school else None

    day = dt.date.fromisoformat(as_of) if as_of else dt.date.today()
    return ReadOptions(as_of=day, lost_pupil_days=settings.lost_pupil_days, school_names=names)


def credentials_path(settings: Settings) -> Path:
    """Where the views' hashed tokens live."""
    return settings.view_credentials or settings.data_dir / "view-credentials.json"


@app.command()
def run(
    authority: AuthorityArg,
    convention: Conventions = None,
    retention_days: Annotated[int | None, typer.Option(help="Delete rows older than this many days.")] = None,
    batch_size: Annotated[int | None, typer.Option(help="Most deliveries applied per transaction.")] = None,
) -> None:
    """Keep AUTHORITY's view up to date from its delivery topics until stopped (SIGTERM, Ctrl-C).

    Serves /metrics, /livez and /readyz on the metrics port while it runs.
    """
    from ..infra.health import Health, serve
    from ..infra.metrics import Metrics
    from .runner import ViewMaintainer

    settings = Settings()
    who = _authority(authority)
    if settings.kafka_bootstrap is None:
        raise typer.BadParameter("set SCOLAFLUX_KAFKA_BOOTSTRAP (a view does not start a broker)")
    conventions = conventions_for(settings, who, convention)
    days = retention_days or settings.view_retention_days
    retention: dict[str | None, int] = {c: d for c, d in conventions.items() if d}
    if days:
        retention[None] = days
    maintainer = ViewMaintainer(
        settings,
        topics_of(settings, conventions),
        AuthorityView(who),
        open_engine(settings, who),
        metrics=(metrics := Metrics()),
        retention_days=retention or None,
        batch_size=batch_size,
    )
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    worker = threading.Thread(target=maintainer.run, args=(stop,), name="view-maintainer", daemon=True)
    checks = {"maintainer running": worker.is_alive}
    serve(metrics, Health(liveness=checks, readiness=checks), settings.metrics_port, settings.metrics_host)
    worker.start()
    while worker.is_alive():
        worker.join(1.0)
    if not stop.is_set():
        raise typer.Exit(1)  # the maintainer failed (its traceback is above)


@app.command()
def rebuild(authority: AuthorityArg, convention: Conventions = None) -> None:
    """Empty AUTHORITY's view and apply its delivery topics again from the beginning."""
    from .runner import ViewMaintainer
    from .store import reset_view

    settings = Settings()
    who = _authority(authority)
    engine = open_engine(settings, who)
    view = AuthorityView(who)
    reset_view(engine, view)
    maintainer = ViewMaintainer(settings, topics_of(settings, conventions_for(settings, who, convention)), view, engine)
    maintainer.catch_up()
    console.print(
        f"rebuilt {who}: {maintainer.applied} deliveries applied, {maintainer.duplicates} duplicates skipped, "
        f"{maintainer.rejected} set aside"
    )


@app.command()
def show(
    authority: AuthorityArg,
    as_of: AsOf = None,
    rows: Annotated[int, typer.Option(help="Rows shown per section.")] = 15,
) -> None:
    """Print AUTHORITY's view: key figures, then each section."""
    settings = Settings()
    who = _authority(authority)
    options = read_options(settings, as_of)
    with open_engine(settings, who).connect() as conn:
        figures = summary(conn, who, options)
        console.print(f"[bold]{who}[/] as of {figures['as_of']}: {figures['figures']}")
        console.print(f"deliveries applied {figures['deliveries_applied']}, counters {figures['counters']}")
        for name in SECTIONS[who.level]:
            _print_section(section(conn, who, name, options), rows)


def _print_section(part: object, limit: int) -> None:
    from .reports import Section

    assert isinstance(part, Section)
    table = Table(title=f"{part.title} ({len(part.rows)} rows)", caption=part.note or None)
    for column in part.columns:
        table.add_column(column)
    for row in part.rows[:limit]:
        table.add_row(*("" if row[c] is None else str(row[c]) for c in part.columns))
    console.print(table)


@app.command()
def export(
    authority: AuthorityArg,
    section_name: Annotated[str | None, typer.Option("--section", help="Which section; default the first.")] = None,
    fmt: Annotated[str, typer.Option("--format", help="csv or json")] = "csv",
    sep: Annotated[str, typer.Option(help="CSV separator: ';' (default, French office locale) or ','.")] = ";",
    output: Annotated[Path | None, typer.Option(help="File to write; default standard output.")] = None,
    as_of: AsOf = None,
) -> None:
    """Export one section of AUTHORITY's view (CSV: UTF-8 with BOM, ';', ISO dates, decimal comma)."""
    from .export import to_csv, to_json

    settings = Settings()
    who = _authority(authority)
    name = section_name or SECTIONS[who.level][0]
    if name not in SECTIONS[who.level]:
        raise typer.BadParameter(f"sections of a {who.level}: {', '.join(SECTIONS[who.level])}")
    if fmt not in ("csv", "json"):
        raise typer.BadParameter("format must be csv or json")
    with open_engine(settings, who).connect() as conn:
        part = section(conn, who, name, read_options(settings, as_of))
    text = to_csv(part, "\t" if sep == "\\t" else sep) if fmt == "csv" else to_json(part)
    data = text.encode("utf-8")
    if output:
        output.write_bytes(data)
    else:
        sys.stdout.buffer.write(data)
        sys.stdout.buffer.flush()


@app.command()
def token(
    authority: AuthorityArg,
    replace: Annotated[bool, typer.Option(help="Revoke the authority's other tokens.")] = False,
) -> None:
    """Issue a token for AUTHORITY's view (printed once; only its hash is stored)."""
    from .credentials import CredentialStore

    settings = Settings()
    store = CredentialStore.load(credentials_path(settings))
    typer.echo(store.issue(_authority(authority), replace=replace))


@app.command()
def revoke(
    authority: AuthorityArg,
    all_tokens: Annotated[bool, typer.Option("--all", help="Revoke every token, the newest too.")] = False,
) -> None:
    """Revoke AUTHORITY's tokens but the newest (the end of a rotation: `view token` first, hand it over)."""
    from .credentials import CredentialStore

    settings = Settings()
    store = CredentialStore.load(credentials_path(settings))
    revoked = store.revoke(_authority(authority), keep_newest=not all_tokens)
    typer.echo(f"{revoked} token(s) revoked; the server applies it without a restart")


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int | None, typer.Option(help="Port; default settings.view_port.")] = None,
) -> None:
    """Serve every authority's view over HTTP (JSON, CSV and a web page), each to its own credential."""
    import uvicorn

    from .api import create_app, engines_by_authority

    settings = Settings()
    options = read_options(settings, None)

    def today() -> ReadOptions:
        return ReadOptions(dt.date.today(), options.lost_pupil_days, school_names=options.school_names)

    app_ = create_app(
        credentials_path(settings),
        engines_by_authority(lambda who: open_engine(settings, who)),
        today,
    )
    uvicorn.run(app_, host=host, port=port if port is not None else settings.view_port, log_level="warning")


def register(cli: typer.Typer) -> None:
    """Add ``scolaflux view`` to the root CLI."""
    cli.add_typer(app, name="view", help="An authority's local view: run, rebuild, show, export, serve.")
