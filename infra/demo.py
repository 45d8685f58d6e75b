"""``scolaflux demo``: the whole feed on one machine, with real geography, and its views live.

Starts the embedded broker (unless ``SCOLAFLUX_KAFKA_BOOTSTRAP`` is set), the processor, one view
maintainer per commune, and a simulator; shows the views changing in the terminal; stops cleanly
on Ctrl-C or after ``--duration`` seconds, leaving the views on disk.
"""

from __future__ import annotations

import shutil
import threading
import time
from contextlib import ExitStack
from dataclasses import dataclass, field

import typer
from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from sqlalchemy import Engine

from ..consumers.commune import CommuneView, movement_counts
from ..consumers.runner import ViewMaintainer
from ..consumers.store import make_engine, view_url
from ..processors.conventions import load_directory
from ..processors.publish import publish
from ..processors.wiring import processor_topics
from ..producers.kafka import EventProducer
from ..producers.simulator import Simulator
from ..schemas.geography import load_geography
from .broker import broker_for
from .kafka import ensure_topics, pipeline_topics
from .metrics import Metrics
from .processes import start_processor, stop_process
from .settings import Settings

console = Console()


@dataclass
class DemoState:
    """What the display shows, updated by the producer and view threads."""

    produced: int = 0
    started: float = field(default_factory=time.monotonic)
    views: dict[str, Engine] = field(default_factory=dict)


def demo(
    duration: float = typer.Option(60.0, help="Seconds to stream before stopping (0: until Ctrl-C)."),
    rate: float = typer.Option(200.0, help="Source events per second."),
    seed: int = typer.Option(2026, help="Simulator seed: the same seed gives the same events."),
) -> None:
    """Run the whole feed on the embedded broker with real geography, and show the views live."""
    settings = Settings()
    data_dir = settings.data_dir / "demo"
    with ExitStack() as stack:
        bootstrap = stack.enter_context(broker_for(settings.kafka_bootstrap, data_dir))
        if settings.kafka_bootstrap is None:
            shutil.rmtree(data_dir / "views", ignore_errors=True)  # the embedded broker starts empty
        settings = settings.model_copy(
            update={
                "kafka_bootstrap": bootstrap,
                "kafka_idempotence": settings.kafka_idempotence if settings.kafka_bootstrap else False,
                "data_dir": data_dir,
            }
        )
        _run(settings, stack, duration, rate, seed)


def _run(settings: Settings, stack: ExitStack, duration: float, rate: float, seed: int) -> None:
    assert settings.kafka_bootstrap is not None
    geography = load_geography()
    conventions = load_directory(settings.conventions_dir, geography)
    ensure_topics(settings.kafka_bootstrap, [*pipeline_topics(settings), *processor_topics(settings)])
    publish(settings, [(c.id, c) for c in conventions])
    communes = {c.authority.code: c.id for c in conventions if c.authority.level == "commune"}
    metrics = Metrics()
    port = metrics.serve(settings.metrics_port)
    console.print(
        f"broker [bold]{settings.kafka_bootstrap}[/]  metrics http://127.0.0.1:{port}/metrics  "
        f"views and logs in [bold]{settings.data_dir}[/]  {len(conventions)} conventions published"
    )
    processor = start_processor(settings, settings.data_dir / "processor.log")
    stack.callback(stop_process, processor)
    stop = threading.Event()
    stack.callback(stop.set)
    state = DemoState()
    for commune, convention_id in communes.items():
        engine = make_engine(view_url(settings.database_url, settings.data_dir / "views", f"commune-{commune}"))
        maintainer = ViewMaintainer(settings, settings.delivery_topic(convention_id), CommuneView(), engine)
        _thread(maintainer.run, stop)
        state.views[commune] = engine
    simulator = Simulator(geography, sorted(communes), seed=seed)
    _thread(_produce, settings, simulator, rate, state, stop)
    deadline = time.monotonic() + duration if duration else float("inf")
    try:
        with Live(_render(state, geography), console=console, refresh_per_second=4) as live:
            while time.monotonic() < deadline and processor.poll() is None:
                time.sleep(0.25)
                live.update(_render(state, geography))
    except KeyboardInterrupt:
        console.print("stopping…")
    if processor.poll() is not None:
        console.print(f"[red]the processor stopped; see {settings.data_dir / 'processor.log'}[/]")


def _thread(target: object, *args: object) -> threading.Thread:
    thread = threading.Thread(target=target, args=args, daemon=True)  # type: ignore[arg-type]
    thread.start()
    return thread


def _produce(settings: Settings, simulator: Simulator, rate: float, state: DemoState, stop: threading.Event) -> None:
    with EventProducer(settings) as producer:
        tick = 0.1
        events = simulator.events(10**9)
        while not stop.is_set():
            began = time.monotonic()
            for _ in range(max(1, int(rate * tick))):
                producer.send(next(events))
            producer.flush()
            state.produced += max(1, int(rate * tick))
            time.sleep(max(0.0, tick - (time.monotonic() - began)))


def _render(state: DemoState, geography: object) -> Group:
    table = Table(title="communes: arrivals and departures (live)")
    for column in ("commune", "arrivals", "departures"):
        table.add_column(column)
    names = getattr(geography, "communes", {})
    for code, engine in state.views.items():
        with engine.connect() as conn:
            counts = movement_counts(conn)
        name = names[code].name if code in names else code
        table.add_row(f"{name} ({code})", str(counts.get("arrival", 0)), str(counts.get("departure", 0)))
    elapsed = time.monotonic() - state.started
    return Group(table, f"events produced: {state.produced}  ({state.produced / max(elapsed, 1e-9):.0f}/s)")


def register(cli: typer.Typer) -> None:
    """Add the demo command to the root CLI."""
    cli.command()(demo)
