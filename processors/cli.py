"""``scolaflux process``: run the processor (a faust worker) against the configured broker."""

from __future__ import annotations

import typer

from ..infra.settings import Settings


def process() -> None:
    """Run the processor: raw events in, per-authority deliveries and dead letters out."""
    import faust

    from ..infra.kafka import ensure_topics, pipeline_topics
    from ..schemas.geography import load_geography
    from .app import create_app
    from .wiring import build_pipeline

    settings = Settings()
    if settings.kafka_bootstrap is None:
        raise typer.BadParameter("set SCOLAFLUX_KAFKA_BOOTSTRAP (the processor does not start a broker)")
    ensure_topics(settings.kafka_bootstrap, pipeline_topics(settings))
    geography = load_geography()
    app = create_app(settings, build_pipeline(settings, geography))
    faust.Worker(app, loglevel="WARNING", quiet=True).execute_from_commandline()


def register(cli: typer.Typer) -> None:
    """Add the processor's commands to the root CLI."""
    cli.command()(process)
