"""``scolaflux bench``: measure the feed on this machine and print the figures against their goals."""

from __future__ import annotations

import signal
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from ..settings import Settings


def bench(
    runs: int = typer.Option(3, min=1, help="Runs of each figure (the median and the spread are printed)."),
    quick: bool = typer.Option(False, help="Tiny sizes: shows the benchmark works, measures nothing worth quoting."),
    only: Annotated[
        list[str] | None, typer.Option("--only", help="Run only these sections (repeatable): see --list.")
    ] = None,
    profile: bool = typer.Option(
        False, help="Profile the processor worker (py-spy, the 'bench' extra) during its last run: an SVG flame graph."
    ),
    list_sections: bool = typer.Option(False, "--list", help="List the sections and exit."),
    json_path: Annotated[Path, typer.Option("--json", help="Where to write the figures as JSON.")] = Path(
        "var/bench.json"
    ),
    postgres: Annotated[
        str | None,
        typer.Option(help="SQLAlchemy URL of a PostgreSQL database for the views figure (default: the setting)."),
    ] = None,
) -> None:
    """Run the benchmark on the embedded broker (or SCOLAFLUX_KAFKA_BOOTSTRAP) and print its table."""
    from .run import run_benchmark
    from .sections import SECTIONS

    if list_sections:
        for name, section in SECTIONS.items():
            typer.echo(f"{name}: {(section.__doc__ or '').strip()}")
        return
    # SIGTERM unwinds like Ctrl-C, so the workers and the embedded broker started here are stopped.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    console = Console()
    if not console.is_terminal:  # piped or redirected: rich would wrap at 80 columns
        console = Console(width=150)
    run_benchmark(Settings(), runs, quick, tuple(only or ()), json_path, postgres, console, profile)


def register(cli: typer.Typer) -> None:
    """Add the benchmark's command to the root CLI."""
    cli.command()(bench)
