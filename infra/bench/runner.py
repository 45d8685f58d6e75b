"""Runs the benchmark: each section measures its figures ``runs`` times on one broker.

A section that fails leaves its figures "not measured" with the reason, and the others still run.
"""

from __future__ import annotations

import logging
import os
import shutil
import traceback
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from rich.console import Console

from ...schemas.geography import Geography, load_geography
from ..kafka import TopicSpec, ensure_topics
from ..settings import Settings
from .figures import Figure, Goal, Report, machine

log = logging.getLogger(__name__)

NATIONAL_RENTREE = 12_400_000
"""Enrolments of a national rentrée (6.26 M 1st degree + 5.6 M 2nd degree, rounded up, DOMAIN.md)."""


@dataclass(frozen=True)
class Sizes:
    """How much each section measures per run (the quick sizes only show the benchmark works)."""

    ceiling_records: int
    faust_records: int
    core_events: int
    routing_events: int
    processor_events: int
    view_deliveries: int
    latency_seconds: float
    latency_rate: float
    snapshot_rows: int
    memory_events: int = 20_000
    headcount_movements: int = 300_000
    conventions: int = 300
    many_conventions: int = 10_000


FULL = Sizes(
    ceiling_records=200_000,
    faust_records=20_000,
    core_events=20_000,
    routing_events=20_000,
    processor_events=50_000,
    view_deliveries=30_000,
    latency_seconds=20.0,
    latency_rate=2_000.0,
    snapshot_rows=1_000_000,
)
QUICK = Sizes(
    ceiling_records=2_000,
    faust_records=300,
    core_events=300,
    routing_events=200,
    processor_events=500,
    view_deliveries=500,
    latency_seconds=2.0,
    latency_rate=200.0,
    snapshot_rows=2_000,
    memory_events=500,
    headcount_movements=2_000,
    conventions=30,
    many_conventions=1_000,
)


@dataclass
class Options:
    """What to run: how many times, at which sizes, which sections, and where to write."""

    runs: int = 3
    quick: bool = False
    sections: tuple[str, ...] = ()
    json_path: Path = Path("var/bench.json")
    work_dir: Path = Path("var/bench")
    postgres_url: str | None = None
    profile: bool = False

    @property
    def sizes(self) -> Sizes:
        """The sizes of this benchmark."""
        return QUICK if self.quick else FULL


@dataclass
class Bench:
    """One benchmark: its broker, settings, options, and the report it fills."""

    bootstrap: str
    base: Settings
    options: Options
    console: Console
    report: Report = field(init=False)
    _geography: Geography | None = field(default=None, init=False)

    def __post_init__(self) -> None:
        self.report = Report(runs=self.options.runs, quick=self.options.quick, broker=self.bootstrap)

    @property
    def sizes(self) -> Sizes:
        """The sizes of this benchmark."""
        return self.options.sizes

    @property
    def geography(self) -> Geography:
        """The reference geography (loaded once)."""
        if self._geography is None:
            self._geography = load_geography()
        return self._geography

    def settings(self, name: str, **update: object) -> Settings:
        """Settings with a fresh topic prefix (fresh topics and consumer groups) for one measure."""
        prefix = f"bench-{name}-{uuid.uuid4().hex[:6]}"
        return self.base.model_copy(
            update={
                "kafka_bootstrap": self.bootstrap,
                "topic_prefix": prefix,
                "data_dir": (self.options.work_dir / prefix).resolve(),
                **update,
            }
        )

    def topics(self, specs: Iterable[TopicSpec]) -> None:
        """Create topics on the benchmark's broker."""
        ensure_topics(self.base.model_copy(update={"kafka_bootstrap": self.bootstrap}), specs)

    def figure(
        self,
        key: str,
        label: str,
        kind: str,
        goal: Goal | None = None,
        versus_ceiling: bool = False,
        note: str = "",
    ) -> Figure:
        """Register a figure of the report."""
        return self.report.add(Figure(key, label, kind, goal, versus_ceiling, note=note))  # type: ignore[arg-type]

    def say(self, text: str) -> None:
        """A progress line."""
        self.console.print(f"[dim]{text}[/]")


Section = Callable[[Bench], None]
"""Declares its figures (``Bench.figure``), then measures them ``runs`` times."""


def run_sections(bench: Bench, sections: dict[str, Section]) -> Report:
    """Run the chosen sections in order; a failed section marks its figures not measured."""
    chosen = bench.options.sections or tuple(sections)
    unknown = sorted(set(chosen) - set(sections))
    if unknown:
        raise ValueError(f"unknown section(s) {', '.join(unknown)}; known: {', '.join(sections)}")
    for name, section in sections.items():
        if name not in chosen:
            continue
        before = set(bench.report.figures)
        bench.say(f"{name}: measuring")
        try:
            section(bench)
        except Exception as exc:  # a section's failure is reported, and the benchmark goes on
            reason = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"[:300]
            log.debug("section %s failed:\n%s", name, traceback.format_exc())
            bench.console.print(f"[yellow]{name}: {reason}[/]")
            for key, figure in bench.report.figures.items():
                if key not in before and not figure.values:
                    figure.error = reason
    bench.report.finished = machine()
    return bench.report


def clean_work_dir(work_dir: Path) -> None:
    """Remove what earlier benchmarks left in ``work_dir`` (faust data, logs, sample files)."""
    if work_dir.exists() and work_dir.name == "bench":
        shutil.rmtree(work_dir, ignore_errors=True)
    work_dir.mkdir(parents=True, exist_ok=True)


def cpu_count() -> int:
    """Cores of this machine."""
    return os.cpu_count() or 1
