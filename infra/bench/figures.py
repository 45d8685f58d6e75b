"""The benchmark's figures: values from several runs, their median and spread, a goal, the ceiling.

A figure is measured once per run; figures vary from run to run on a shared machine, so each is
reported as the median of its runs with the spread (lowest and highest value). Throughput figures
are also given as a share of the machine's ceiling (a librdkafka pass-through on the same broker).
"""

from __future__ import annotations

import datetime as dt
import json
import os
import platform
import statistics
import timeit
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

Kind = Literal["rate", "seconds", "bytes", "ratio", "minutes", "check"]


@dataclass(frozen=True, slots=True)
class Goal:
    """What a figure should reach: at least (``at_least``) or at most ``bound``."""

    bound: float
    at_least: bool

    def met(self, value: float) -> bool:
        """Whether ``value`` reaches the goal."""
        return value >= self.bound if self.at_least else value <= self.bound

    def describe(self, kind: Kind) -> str:
        """The goal in words, e.g. ``>= 25,000/s`` or ``<= 250 ms``."""
        if kind == "check":
            return "yes"
        return f"{'>=' if self.at_least else '<='} {format_value(self.bound, kind)}"


@dataclass
class Figure:
    """One measured figure: its values (one per run), unit kind, goal, and notes."""

    key: str
    label: str
    kind: Kind
    goal: Goal | None = None
    versus_ceiling: bool = False
    values: list[float] = field(default_factory=list)
    note: str = ""
    error: str | None = None

    @property
    def median(self) -> float | None:
        """The median of the runs (None before any run)."""
        return statistics.median(self.values) if self.values else None

    @property
    def low(self) -> float | None:
        """The lowest value."""
        return min(self.values) if self.values else None

    @property
    def high(self) -> float | None:
        """The highest value."""
        return max(self.values) if self.values else None

    def meets(self) -> bool | None:
        """Whether the median meets the goal (None: no goal, or not measured)."""
        median = self.median
        if self.goal is None or median is None:
            return None
        return self.goal.met(median)

    def as_json(self, ceiling: float | None) -> dict[str, Any]:
        """The figure as plain JSON data."""
        return {
            "key": self.key,
            "label": self.label,
            "kind": self.kind,
            "values": self.values,
            "median": self.median,
            "min": self.low,
            "max": self.high,
            "goal": None if self.goal is None else {"bound": self.goal.bound, "at_least": self.goal.at_least},
            "meets_goal": self.meets(),
            "ratio_to_ceiling": ratio_to(self, ceiling),
            "note": self.note,
            "error": self.error,
        }


def ratio_to(figure: Figure, ceiling: float | None) -> float | None:
    """The figure's median as a share of the ceiling, for throughput figures."""
    median = figure.median
    if not figure.versus_ceiling or median is None or not ceiling:
        return None
    return median / ceiling


def format_value(value: float | None, kind: Kind) -> str:
    """A value for people: rates with thousands separators, seconds in ms, bytes in MB."""
    if value is None:
        return "-"
    match kind:
        case "rate":
            return f"{value:,.0f}/s"
        case "seconds":
            return f"{value * 1e6:,.1f} µs" if value < 1e-3 else f"{value * 1000:,.1f} ms"
        case "bytes":
            return f"{value / 1e6:,.0f} MB"
        case "minutes":
            return f"{value:,.1f} min"
        case "check":
            return "yes" if value >= 1 else "no"
        case _:
            return f"{value:,.2f}"


PROBE = "sum(range(1_000_000))"
"""A fixed pure-Python loop, timed when a benchmark starts and ends: shared machines differ from
one day to the next and vary within minutes (1.4x seen here), and the feed is mostly
pure Python, so rates compare only between runs that timed the probe alike."""


def probe_seconds() -> float:
    """Seconds for one pass of ``PROBE`` on this machine now (best of 5 x 5 passes, ~0.5 s)."""
    return min(timeit.repeat(PROBE, number=5, repeat=5)) / 5


def machine() -> dict[str, Any]:
    """What the figures were measured on: cores, load, the probe's time, Python, time."""
    return {
        "cores": os.cpu_count(),
        "load_average": list(os.getloadavg()),
        "probe_seconds": probe_seconds(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "measured_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    }


@dataclass
class Report:
    """Every figure of one benchmark run, with the ceiling they are compared to."""

    runs: int
    quick: bool
    broker: str
    figures: dict[str, Figure] = field(default_factory=dict)
    ceiling_key: str = "ceiling.passthrough"
    started: dict[str, Any] = field(default_factory=machine)
    finished: dict[str, Any] = field(default_factory=dict)

    def add(self, figure: Figure) -> Figure:
        """Register a figure (its values come later, run by run)."""
        self.figures[figure.key] = figure
        return figure

    @property
    def ceiling(self) -> float | None:
        """The median pass-through rate of the ceiling, if measured."""
        figure = self.figures.get(self.ceiling_key)
        return figure.median if figure else None

    def as_json(self) -> dict[str, Any]:
        """The report as plain JSON data (what ``--json`` writes)."""
        return {
            "runs": self.runs,
            "quick": self.quick,
            "broker": self.broker,
            "machine_at_start": self.started,
            "machine_at_end": self.finished,
            "ceiling_key": self.ceiling_key,
            "ceiling": self.ceiling,
            "figures": [figure.as_json(self.ceiling) for figure in self.figures.values()],
        }

    def write_json(self, path: Path) -> None:
        """Write the report as JSON to ``path`` (parent folders made)."""
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.as_json(), indent=2) + "\n", encoding="utf-8")
