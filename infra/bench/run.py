"""The benchmark's entry point: a broker, the sections, the table and the JSON file."""

from __future__ import annotations

from pathlib import Path

from rich.console import Console

from ..broker import broker_for
from ..settings import Settings
from .figures import Report
from .runner import Bench, Options, clean_work_dir, run_sections
from .sections import SECTIONS
from .table import show


def run_benchmark(
    settings: Settings,
    runs: int = 3,
    quick: bool = False,
    sections: tuple[str, ...] = (),
    json_path: Path = Path("var/bench.json"),
    postgres_url: str | None = None,
    console: Console | None = None,
    profile: bool = False,
) -> Report:
    """Measure every chosen section ``runs`` times, print the table and write the JSON report.

    Runs on ``settings.kafka_bootstrap`` when set, else on an embedded broker started here.
    """
    console = console or Console()
    work_dir = settings.data_dir / "bench"
    clean_work_dir(work_dir)
    postgres = postgres_url or (settings.database_url if (settings.database_url or "").startswith("postgres") else None)
    options = Options(runs, quick, sections, json_path, work_dir, postgres, profile)
    with broker_for(settings.kafka_bootstrap, work_dir) as bootstrap:
        embedded = {"kafka_idempotence": False, "allow_dev_key": True}
        base = settings if settings.kafka_bootstrap else settings.model_copy(update=embedded)
        bench = Bench(bootstrap, base, options, console)
        report = run_sections(bench, SECTIONS)
    show(report, console)
    report.write_json(json_path)
    console.print(f"figures written to {json_path}")
    return report
