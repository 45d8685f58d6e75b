"""``scolaflux status`` (one screen, or ``--json``; exit 1 unless everything is OK) and
``scolaflux monitor`` (the lag exporter Prometheus scrapes)."""

from __future__ import annotations

import json
import logging
import signal
import threading
import time
from typing import Annotated

import typer
from kafka.errors import KafkaError
from rich.console import Console, Group
from rich.table import Table
from rich.text import Text

from .burrow import Status
from .health import Flag, Health, Heartbeat, serve
from .lag import LagReader
from .metrics import Metrics
from .settings import Settings
from .status import Sampler, StatusReport, collect, export

log = logging.getLogger(__name__)
console = Console()

COLOURS = {"OK": "green", "WARNING": "yellow", "REWIND": "magenta", "STALLED": "red", "STOPPED": "red", "ERROR": "red"}


def _seconds(value: float | None) -> str:
    return "?" if value is None else f"{value:.1f}"


def _verdict(status: str) -> Text:
    return Text(status, style=f"bold {COLOURS.get(status, 'white')}")


def render(report: StatusReport) -> Group:
    """The one screen of ``scolaflux status``."""
    groups = Table(title=f"consumer groups (window {report.window_seconds:.0f} s, {report.samples} samples)")
    for column in ("group", "role", "topics", "in/s", "out/s", "lag", "lag s", "verdict"):
        groups.add_column(column, justify="right" if column in ("in/s", "out/s", "lag", "lag s") else "left")
    for g in report.groups:
        groups.add_row(
            g.group,
            g.role,
            str(len(g.topics)),
            f"{g.produced_per_second:.1f}",
            f"{g.consumed_per_second:.1f}",
            str(g.lag),
            _seconds(g.lag_seconds),
            _verdict(g.status),
        )
    views = Table(title="views by authority")
    for column in ("authority", "applied/s", "lag", "freshness s", "verdict"):
        views.add_column(column, justify="left" if column in ("authority", "verdict") else "right")
    for a in report.authorities:
        views.add_row(
            a.authority, f"{a.applied_per_second:.1f}", str(a.lag), _seconds(a.freshness_seconds), _verdict(a.status)
        )
    r = report.rejects
    reasons = ", ".join(f"{reason} {n}" for reason, n in sorted(r.reasons.items()))
    lines = [
        groups,
        views,
        f"rejects: {r.total} dead-letter records in all, {r.in_window} in the window ({r.per_second:.1f}/s)"
        + (f": {reasons}" if reasons else ""),
    ]
    if report.unconsumed_topics:
        lines.append(f"delivery topics no group consumes: {', '.join(report.unconsumed_topics)}")
    if report.missing_groups:
        lines.append(Text(f"missing groups: {', '.join(report.missing_groups)}", style="bold red"))
    bad = [f"{g.group} {g.status}" for g in report.groups if g.status != Status.OK.name]
    lines.append(
        Text("ALL OK", style="bold green") if report.ok else Text(f"NOT OK: {'; '.join(bad)}", style="bold red")
    )
    return Group(*lines)


def _settings() -> Settings:
    settings = Settings()
    if settings.kafka_bootstrap is None:
        raise typer.BadParameter("set SCOLAFLUX_KAFKA_BOOTSTRAP (status reads the running feed's broker)")
    return settings


def status(
    window: Annotated[float, typer.Option(help="Seconds to sample over (the verdicts read the trend).")] = 10.0,
    interval: Annotated[float, typer.Option(help="Seconds between two samples.")] = 1.0,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
) -> None:
    """Throughput, lag, rejects and view freshness per authority, with a Burrow-style verdict per
    consumer group (OK, WARNING, REWIND, STALLED, STOPPED, ERROR). Exits 1 unless everything is OK,
    2 if the broker cannot be read."""
    if interval <= 0 or window < interval:
        raise typer.BadParameter("--interval must be above 0 and --window at least one interval")
    settings = _settings()
    try:
        report = collect(settings, window, interval)
    except KafkaError as error:
        typer.echo(f"cannot read the feed's offsets from {settings.kafka_bootstrap}: {error}", err=True)
        raise typer.Exit(2) from None
    if as_json:
        typer.echo(json.dumps(report.to_json(), indent=2))
    else:
        console.print(render(report))
    raise typer.Exit(0 if report.ok else 1)


def monitor(
    interval: Annotated[float, typer.Option(help="Seconds between two samples.")] = 10.0,
    samples: Annotated[int, typer.Option(help="Samples in the sliding window of each verdict.")] = 10,
) -> None:
    """Sample the feed's lag for ever and serve it on /metrics (with /livez and /readyz) for Prometheus."""
    settings = _settings()
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    run_monitor(settings, interval, samples, stop)


def run_monitor(settings: Settings, interval: float, samples: int, stop: threading.Event) -> None:
    """The monitor's loop: sample, evaluate, export the gauges, until ``stop`` is set."""
    metrics = Metrics()
    heartbeat, sampled = Heartbeat(max_age=max(60.0, 3 * interval)), Flag()
    endpoints = serve(
        metrics,
        Health(liveness={"sampling": heartbeat}, readiness={"first sample": sampled}),
        settings.metrics_port,
        settings.metrics_host,
    )
    log.warning("monitor: /metrics, /livez, /readyz on %s:%d", settings.metrics_host, endpoints.port)
    try:
        with LagReader(settings) as reader:
            sampler = Sampler(settings, reader, max_samples=samples)
            while not stop.is_set():
                began = time.monotonic()
                try:
                    sampler.sample()
                    export(sampler.report(), metrics)
                    sampled.set()
                except KafkaError as error:  # the broker is away: keep the last gauges, try again
                    log.warning("monitor: could not sample the feed's offsets: %s", error)
                heartbeat.beat()
                stop.wait(max(0.0, interval - (time.monotonic() - began)))
    finally:
        endpoints.close()


def register(cli: typer.Typer) -> None:
    """Add ``scolaflux status`` and ``scolaflux monitor`` to the root CLI."""
    cli.command()(status)
    cli.command()(monitor)
