"""The producers' commands: ``scolaflux simulate``, ``scolaflux import snapshot``,
``scolaflux ingest serve`` (and ``ingest token``)."""

from __future__ import annotations

import datetime as dt
import struct
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, BinaryIO

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn, TimeElapsedColumn
from rich.table import Table

from ..infra.settings import Settings
from ..schemas.errors import ConfigError, ScolafluxError
from .simulator import Record

if TYPE_CHECKING:
    from .kafka import EventProducer

console = Console(stderr=True)
import_app = typer.Typer(no_args_is_help=True, help="Import events from files exported by source systems.")
ingest_app = typer.Typer(no_args_is_help=True, help="The HTTP ingest endpoint for sources that can call out.")

FRAME = struct.Struct(">II")
"""A frame of a pre-generated events file: key length and value length, then the two."""


# --------------------------------------------------------------------------- simulate


def simulate(
    commune: Annotated[
        list[str] | None, typer.Option("--commune", "-c", help="INSEE code of a commune to simulate (repeatable).")
    ] = None,
    departement: Annotated[
        list[str] | None, typer.Option("--departement", "-d", help="A whole département (repeatable).")
    ] = None,
    seed: int = typer.Option(2026, help="The same seed gives the same events (ids included)."),
    school_year: int = typer.Option(2026, help="First calendar year of the school year to start with."),
    days: int = typer.Option(30, help="Simulated days from the rentrée (1 September)."),
    scale: float = typer.Option(0.01, help="Share of the real number of pupils (population x 0.18) to simulate."),
    pupils_per_commune: int | None = typer.Option(None, help="A fixed number of pupils per commune instead."),
    rate: float = typer.Option(0.0, help="Events per second to send at (0: as fast as possible)."),
    duration: float = typer.Option(0.0, help="Stop after this many seconds (0: when the simulated days are done)."),
    count: int = typer.Option(0, help="Stop after this many events (0: no limit)."),
    out: Annotated[Path | None, typer.Option(help="Write the encoded events to this file, not the broker.")] = None,
    validate: bool = typer.Option(False, help="Validate every event with the pydantic models (slower)."),
) -> None:
    """Simulate ONDE, SIECLE and attendance software over real geography; send to the raw topic."""
    from ..schemas.geography import load_geography
    from .simulator import Simulator, territory_communes

    commune, departement = commune or [], departement or []
    if not commune and not departement:
        raise typer.BadParameter("give at least one --commune or --departement")
    geography = load_geography()
    try:
        communes = territory_communes(geography, commune, departement)
        simulator = Simulator(
            geography, communes, seed, school_year, pupils_per_commune=pupils_per_commune, scale=scale, days=days
        )
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None
    console.print(f"{len(simulator.pupils)} pupils in {len(communes)} communes, {days} days from the rentrée")
    records = limited(simulator.records(), count, duration)
    started = time.monotonic()
    if out is not None:
        with out.open("wb") as file:
            sent = write_frames(file, records, validate)
    else:
        sent = send_records(Settings(), paced(records, rate), validate)
    elapsed = time.monotonic() - started
    console.print(f"{sent} events in {elapsed:.1f}s ({sent / max(elapsed, 1e-9):,.0f}/s)")


def limited(records: Iterator[Record], count: int, duration: float) -> Iterator[Record]:
    """Records until ``count`` (if not 0) or ``duration`` seconds (if not 0)."""
    deadline = time.monotonic() + duration if duration else None
    for made, record in enumerate(records):
        if (count and made >= count) or (deadline and made % 1000 == 0 and time.monotonic() > deadline):
            return
        yield record


def paced(records: Iterable[Record], rate: float) -> Iterator[Record]:
    """Records at no more than ``rate`` per second (0: unpaced)."""
    if rate <= 0:
        yield from records
        return
    started = time.monotonic()
    for made, record in enumerate(records):
        ahead = made / rate - (time.monotonic() - started)
        if ahead > 0:
            time.sleep(ahead)
        yield record


def send_records(settings: Settings, records: Iterable[Record], validate: bool) -> int:
    """Send records to the raw topic; flush every 10,000 and at the end. Returns how many."""
    from ..infra.kafka import ensure_topics, pipeline_topics
    from .kafka import EventProducer

    if settings.kafka_bootstrap is None:
        raise typer.BadParameter("set SCOLAFLUX_KAFKA_BOOTSTRAP (or write to a file with --out)")
    ensure_topics(settings, pipeline_topics(settings))
    sent = 0
    with EventProducer(settings) as producer:
        for record in records:
            producer.send_record(record, validate)
            sent += 1
            if sent % 10_000 == 0:
                producer.flush()
    return sent


def write_frames(file: BinaryIO, records: Iterable[Record], validate: bool) -> int:
    """Write records as encoded (key, value) frames, ready to replay at full speed."""
    from ..schemas.codec import event_codec
    from ..schemas.validation import encode_event, validate_event
    from .simulator import avro_datum

    codec = event_codec()
    written = 0
    for record in records:
        value = encode_event(validate_event(record)) if validate else codec.encode(avro_datum(record))
        key = record["pupil"]["ine"].encode()
        file.write(FRAME.pack(len(key), len(value)))
        file.write(key)
        file.write(value)
        written += 1
    return written


def read_frames(file: BinaryIO) -> Iterator[tuple[bytes, bytes]]:
    """The (key, value) frames of a pre-generated events file."""
    while header := file.read(FRAME.size):
        key_size, value_size = FRAME.unpack(header)
        yield file.read(key_size), file.read(value_size)


def replay(
    file: Annotated[Path, typer.Argument(exists=True, dir_okay=False, help="A file written by simulate --out.")],
) -> None:
    """Send a pre-generated events file to the raw topic as fast as the broker takes it."""
    from ..infra.kafka import ensure_topics, pipeline_topics
    from .kafka import EventProducer

    settings = Settings()
    if settings.kafka_bootstrap is None:
        raise typer.BadParameter("set SCOLAFLUX_KAFKA_BOOTSTRAP (replay does not start a broker)")
    ensure_topics(settings, pipeline_topics(settings))
    started = time.monotonic()
    with file.open("rb") as frames, EventProducer(settings) as producer:
        sent = replay_frames(producer, read_frames(frames))
    elapsed = time.monotonic() - started
    console.print(f"{sent} events acknowledged in {elapsed:.1f}s ({sent / max(elapsed, 1e-9):,.0f}/s)")


def replay_frames(producer: EventProducer, frames: Iterable[tuple[bytes, bytes]]) -> int:
    """Send (key, value) frames through an ``EventProducer``; flush; return how many."""
    sent = producer.send_frames(frames)
    producer.flush()
    return sent


# --------------------------------------------------------------------------- import snapshot


@import_app.command("snapshot")
def import_snapshot_command(
    previous: Annotated[Path, typer.Argument(exists=True, dir_okay=False, help="The previous export (CSV).")],
    current: Annotated[Path, typer.Argument(exists=True, dir_okay=False, help="The current export (CSV).")],
    as_of: Annotated[
        dt.datetime | None,
        typer.Option(formats=["%Y-%m-%d"], help="Date of the current export (dates departures); default: today."),
    ] = None,
    academy: str | None = typer.Option(None, help="Académie code of every event (default: from each school)."),
    rejects: Annotated[
        Path | None, typer.Option(help="Where to write rejected rows (default: CURRENT.rejects.csv).")
    ] = None,
    force: bool = typer.Option(False, help="Send the events again even if this pair was imported already."),
    chunk_rows: int = typer.Option(50_000, help="Rows sorted in memory at a time (memory bound)."),
) -> None:
    """Emit the events that explain the difference between two exports (layout: see the docs)."""
    from ..infra.kafka import ensure_topics, pipeline_topics
    from ..schemas.geography import load_geography
    from .kafka import EventProducer
    from .snapshot import Ledger, RowError, check_layout, import_snapshot

    try:
        check_layout(previous)
        check_layout(current)
    except (RowError, UnicodeDecodeError) as exc:
        console.print(f"[red]not an export in the documented layout:[/] {exc}")
        raise typer.Exit(2) from None
    settings = Settings()
    if settings.kafka_bootstrap is None:
        raise typer.BadParameter("set SCOLAFLUX_KAFKA_BOOTSTRAP (the importer does not start a broker)")
    ensure_topics(settings, pipeline_topics(settings))
    rejects = rejects or current.with_name(current.name + ".rejects.csv")
    ledger = None if force else Ledger(settings.data_dir / "snapshot-ledger")
    day = (as_of or dt.datetime.now()).date()
    try:
        with EventProducer(settings) as producer, _progress() as progress:
            report = import_snapshot(
                previous, current, producer, load_geography(), as_of=day, rejects_path=rejects, ledger=ledger,
                academy=academy, chunk_rows=chunk_rows, progress=progress,
            )  # fmt: skip
    except (RowError, ScolafluxError) as exc:
        console.print(f"[red]import failed:[/] {exc}")
        raise typer.Exit(1) from None
    if report.already_imported:
        console.print("this pair of exports was imported already: nothing sent (--force sends it again)")
        return
    _print_report(report)


class _progress:
    """A rich progress bar fed by the importer's progress calls (bytes per file, then pupils)."""

    def __enter__(self) -> _progress:
        self._bar = Progress(
            TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), console=console
        )
        self._tasks: dict[str, TaskID] = {}
        self._bar.__enter__()
        return self

    def __call__(self, phase: str, done: int, total: int | None) -> None:
        if phase not in self._tasks:
            label = {"previous": "reading previous (bytes)", "current": "reading current (bytes)"}
            self._tasks[phase] = self._bar.add_task(label.get(phase, "pupils compared"), total=total)
        self._bar.update(self._tasks[phase], completed=done)

    def __exit__(self, *exc: object) -> None:
        self._bar.__exit__(None, None, None)


def _print_report(report: object) -> None:
    from .snapshot import ImportReport

    assert isinstance(report, ImportReport)
    table = Table(title="snapshot import")
    table.add_column("what")
    table.add_column("count", justify="right")
    for name in ("previous", "current"):
        table.add_row(f"rows read ({name})", str(report.rows[name]))
        table.add_row(f"rows rejected ({name})", str(report.rejected[name]))
    for event_type, number in sorted(report.events.items()):
        table.add_row(f"events: {event_type}", str(number))
    table.add_row("events sent and acknowledged", str(report.sent))
    console.print(table)
    if sum(report.rejected.values()):
        console.print(f"rejected rows (line numbers and reasons): {report.rejects_file}")


# --------------------------------------------------------------------------- ingest


@ingest_app.command("serve")
def ingest_serve(
    host: str = typer.Option("127.0.0.1", help="Address to listen on."),
    port: int = typer.Option(8787, help="Port to listen on."),
    ack_timeout: float = typer.Option(30.0, help="Seconds to wait for the broker before answering 503."),
) -> None:
    """Serve POST /events: events as JSON from authenticated sources, acknowledged by the broker."""
    import uvicorn

    from ..infra.kafka import ensure_topics, pipeline_topics
    from ..infra.metrics import Metrics
    from .ingest import SourceRegistry, WatchedRegistry, create_app
    from .kafka import EventProducer

    settings = Settings()
    if settings.kafka_bootstrap is None:
        raise typer.BadParameter("set SCOLAFLUX_KAFKA_BOOTSTRAP (the endpoint does not start a broker)")
    try:
        SourceRegistry.load(settings.ingest_sources)  # refuse to start on a wrong file
    except ConfigError as exc:
        console.print(f"[red]{exc}[/]")
        raise typer.Exit(2) from None
    ensure_topics(settings, pipeline_topics(settings))
    metrics = Metrics()
    metrics_port = metrics.serve(settings.metrics_port, settings.metrics_host)
    console.print(f"metrics on http://{settings.metrics_host}:{metrics_port}/metrics")
    with EventProducer(settings) as producer:
        app = create_app(
            WatchedRegistry(settings.ingest_sources), producer, settings.deadletter_topic, ack_timeout, metrics
        )
        uvicorn.run(app, host=host, port=port, log_level="info")


@ingest_app.command("token")
def ingest_token(
    source: str = typer.Option(..., help="Id of the source (e.g. siecle-lyon)."),
    academy: str = typer.Option(..., help="Académie code the source may send events of."),
) -> None:
    """Make a token for a source: prints the token (give it to the source) and its sources-file entry."""
    from .ingest import new_token, token_digest

    token = new_token()
    typer.echo(f"token (give it to the source; it is not stored): {token}")
    entry = f"  - id: {source}\n    academy: '{academy}'\n    token_sha256: '{token_digest(token)}'"
    typer.echo(f"sources-file entry:\n{entry}")


def register(cli: typer.Typer) -> None:
    """Add the producers' commands to the root CLI."""
    cli.command()(simulate)
    cli.command()(replay)
    cli.add_typer(import_app, name="import")
    cli.add_typer(ingest_app, name="ingest")
