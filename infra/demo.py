"""``scolaflux demo``: the whole feed on one machine, with real geography, and its views live.

Starts the embedded broker (unless ``SCOLAFLUX_KAFKA_BOOTSTRAP`` is set), publishes the example
conventions, starts the processor, one view maintainer per authority that holds a convention, the
views' HTTP server (a web page per authority) and a simulator over the communes of those
conventions; shows the views changing in the terminal; stops cleanly on Ctrl-C or after
``--duration`` seconds, leaving the views on disk (``scolaflux view show AUTHORITY`` reads them).
"""

from __future__ import annotations

import datetime as dt
import shutil
import threading
import time
from collections import defaultdict
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

import typer
from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from sqlalchemy import Engine

from ..consumers.authority import Authority
from ..consumers.cli import credentials_path, open_engine
from ..consumers.credentials import CredentialStore
from ..consumers.reports import ReadOptions, summary
from ..consumers.runner import ViewMaintainer
from ..consumers.views import AuthorityView
from ..processors.conventions import Convention, load_directory
from ..processors.publish import publish
from ..processors.wiring import processor_topics
from ..producers.kafka import EventProducer
from ..producers.simulator import Simulator
from ..schemas.geography import Geography, load_geography
from .broker import broker_for, free_port
from .kafka import ensure_topics, pipeline_topics
from .metrics import Metrics
from .processes import start_process, start_processor, stop_process
from .settings import Settings

console = Console()


@dataclass
class DemoState:
    """What the display shows, updated by the producer and view threads."""

    produced: int = 0
    started: float = field(default_factory=time.monotonic)
    views: dict[Authority, Engine] = field(default_factory=dict)


def demo(
    duration: float = typer.Option(120.0, help="Seconds to stream before stopping (0: until Ctrl-C)."),
    rate: float = typer.Option(300.0, help="Source events per second."),
    seed: int = typer.Option(2026, help="Simulator seed: the same seed gives the same events."),
    pupils: int = typer.Option(400, help="Simulated resident pupils per commune."),
) -> None:
    """Run the whole feed on the embedded broker with real geography, and show the views live."""
    settings = Settings()
    data_dir = settings.data_dir / "demo"
    with ExitStack() as stack:
        bootstrap = stack.enter_context(broker_for(settings.kafka_bootstrap, data_dir))
        if settings.kafka_bootstrap is None:  # the embedded broker starts empty: so do the views and headcounts
            for folder in ("views", "headcounts"):
                shutil.rmtree(data_dir / folder, ignore_errors=True)
        settings = settings.model_copy(
            update={
                "kafka_bootstrap": bootstrap,
                "kafka_idempotence": settings.kafka_idempotence if settings.kafka_bootstrap else False,
                "allow_dev_key": settings.allow_dev_key or settings.kafka_bootstrap is None,
                "data_dir": data_dir,
            }
        )
        _run(settings, stack, duration, rate, seed, pupils)


def _run(settings: Settings, stack: ExitStack, duration: float, rate: float, seed: int, pupils: int) -> None:
    assert settings.kafka_bootstrap is not None
    geography = load_geography()
    conventions = load_directory(settings.conventions_dir, geography)
    ensure_topics(settings, [*pipeline_topics(settings), *processor_topics(settings)])
    publish(settings, [(c.id, c) for c in conventions])
    metrics = Metrics()
    port = metrics.serve(settings.metrics_port)
    processor_port = free_port()
    processor = start_processor(
        settings.model_copy(update={"metrics_port": processor_port}), settings.data_dir / "processor.log"
    )
    stack.callback(stop_process, processor)
    stop = threading.Event()
    stack.callback(stop.set)
    state = DemoState()
    for authority, its in _by_authority(conventions).items():
        engine = open_engine(settings, authority)
        topics = [settings.delivery_topic(c.id) for c in its]
        maintainer = ViewMaintainer(settings, topics, AuthorityView(authority), engine, metrics=metrics)
        _thread(maintainer.run, stop)
        state.views[authority] = engine
    web = _serve_views(settings, stack, list(state.views))
    console.print(
        f"broker [bold]{settings.kafka_bootstrap}[/]   {len(conventions)} conventions published   "
        f"views and logs in [bold]{settings.data_dir}[/]\n"
        f"metrics: views http://127.0.0.1:{port}/metrics, processor http://127.0.0.1:{processor_port}/metrics\n"
        f"web pages: {web}"
    )
    communes = sorted({c.authority.code for c in conventions if c.authority.level == "commune"})
    simulator = Simulator(geography, communes, seed=seed, pupils_per_commune=pupils)
    _thread(_produce, settings, simulator, rate, state, stop)
    deadline = time.monotonic() + duration if duration else float("inf")
    try:
        with Live(_render(state, geography), console=console, refresh_per_second=2) as live:
            while time.monotonic() < deadline and processor.poll() is None:
                time.sleep(0.5)
                live.update(_render(state, geography))
    except KeyboardInterrupt:
        console.print("stopping…")
    if processor.poll() is not None:
        console.print(f"[red]the processor stopped; see {settings.data_dir / 'processor.log'}[/]")
    console.print(
        f"\nviews kept in {settings.data_dir / 'views'}: scolaflux view show commune:69123 (with the same "
        f"SCOLAFLUX_DATA_DIR={settings.data_dir})"
    )


def _by_authority(conventions: list[Convention]) -> dict[Authority, list[Convention]]:
    grouped: dict[Authority, list[Convention]] = defaultdict(list)
    for convention in conventions:
        grouped[Authority.parse(f"{convention.authority.level}:{convention.authority.code}")].append(convention)
    return dict(sorted(grouped.items(), key=lambda item: (item[0].level, item[0].code)))


def _serve_views(settings: Settings, stack: ExitStack, authorities: list[Authority]) -> str:
    """Start ``scolaflux view serve`` with a fresh token per authority, written to a 0600 file."""
    store = CredentialStore.load(credentials_path(settings))
    tokens = {str(a): store.issue(a, replace=True) for a in authorities}
    token_file: Path = settings.data_dir / "demo-tokens.txt"
    token_file.write_text("".join(f"{a} {t}\n" for a, t in tokens.items()), encoding="utf-8")
    token_file.chmod(0o600)
    port = free_port()
    server = start_process(["view", "serve", "--port", str(port)], settings, settings.data_dir / "views-http.log")
    stack.callback(stop_process, server)
    return f"http://127.0.0.1:{port}/  (HTTP Basic: any user, the password is the authority's token in {token_file})"


def _thread(target: object, *args: object) -> threading.Thread:
    thread = threading.Thread(target=target, args=args, daemon=True)  # type: ignore[arg-type]
    thread.start()
    return thread


def _produce(settings: Settings, simulator: Simulator, rate: float, state: DemoState, stop: threading.Event) -> None:
    with EventProducer(settings) as producer:
        tick = 0.1
        per_tick = max(1, int(rate * tick))
        events = simulator.events(10**9)
        while not stop.is_set():
            began = time.monotonic()
            for _ in range(per_tick):
                producer.send(next(events))
            producer.flush()
            state.produced += per_tick
            time.sleep(max(0.0, tick - (time.monotonic() - began)))


def _render(state: DemoState, geography: Geography) -> Group:
    table = Table(title="each authority's view, live", title_justify="left")
    for column in ("authority", "applied", "arrivals", "departures", "children on list / pupils", "alerts"):
        table.add_column(column, justify="left" if column == "authority" else "right")
    options = ReadOptions(as_of=dt.date.today(), lost_pupil_days=30)
    for authority, engine in state.views.items():
        with engine.connect() as conn:
            s = summary(conn, authority, options)
        f = s["figures"]
        people = f.get("children_on_list", f.get("pupils", 0))
        alerts = (
            f"{f.get('absenteeism_warnings', 0)} absenteeism, {f.get('lost_pupil_alerts', 0)} lost"
            if (authority.level == "commune")
            else ""
        )
        table.add_row(
            _name(authority, geography),
            str(s["deliveries_applied"]),
            str(f["arrivals"]),
            str(f["departures"]),
            str(people),
            alerts,
        )
    elapsed = time.monotonic() - state.started
    return Group(
        table, f"events produced: {state.produced}  ({state.produced / max(elapsed, 1e-9):.0f}/s)   Ctrl-C stops"
    )


def _name(authority: Authority, geography: Geography) -> str:
    places = {"commune": geography.communes, "departement": geography.departements, "region": geography.regions}
    place = places[authority.level].get(authority.code)
    return f"{authority.level} {place.name if place else authority.code} ({authority.code})"


def register(cli: typer.Typer) -> None:
    """Add the demo command to the root CLI."""
    cli.command()(demo)
