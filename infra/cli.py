"""The ``scolaflux`` command. Each area adds its own command group; this module only wires them."""

from __future__ import annotations

import typer

from ..consumers import cli as consumers_cli
from ..processors import cli as processors_cli
from ..producers import cli as producers_cli
from . import chaos, demo, status_cli
from .bench import cli as bench_cli

app = typer.Typer(no_args_is_help=True, add_completion=False, help=__doc__)
processors_cli.register(app)
producers_cli.register(app)
consumers_cli.register(app)
demo.register(app)
status_cli.register(app)
bench_cli.register(app)
chaos.register(app)


if __name__ == "__main__":
    app()
