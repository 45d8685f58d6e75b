"""The benchmark's table, printed with rich: median, spread, share of the ceiling, goal, verdict."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

from .figures import PROBE, Figure, Report, format_value, ratio_to


def render(report: Report) -> Table:
    """A rich table of every figure of ``report``."""
    load = ", ".join(f"{x:.2f}" for x in report.started.get("load_average", []))
    probes = [f"{m['probe_seconds'] * 1000:.1f} ms" for m in (report.started, report.finished) if "probe_seconds" in m]
    table = Table(
        title=f"scolaflux benchmark: {report.runs} run(s) per figure{' (quick)' if report.quick else ''}",
        caption=f"{report.started.get('cores')} cores, load average at start {load}; "
        f"`{PROBE}` at start and end: {' and '.join(probes)}; broker {report.broker}. "
        "Shared machine: figures vary from run to run; compare runs whose probes are alike.",
    )
    for name, justify in (
        ("figure", "left"),
        ("median", "right"),
        ("spread (min - max)", "right"),
        ("x ceiling", "right"),
        ("goal", "right"),
        ("", "center"),
    ):
        table.add_column(name, justify=justify)  # type: ignore[arg-type]
    for number, figure in enumerate(report.figures.values(), 1):
        table.add_row(*_row(number, figure, report.ceiling))
    return table


def _row(number: int, figure: Figure, ceiling: float | None) -> tuple[str, ...]:
    label = f"{figure.label} [dim][{number}][/]" if figure.note or figure.error else figure.label
    if figure.error is not None and not figure.values:
        return label, "[yellow]not measured[/]", "", "", _goal(figure), ""
    spread = f"{format_value(figure.low, figure.kind)} - {format_value(figure.high, figure.kind)}"
    ratio = ratio_to(figure, ceiling)
    verdict = {True: "[green]met[/]", False: "[red]not met[/]", None: ""}[figure.meets()]
    return (
        label,
        format_value(figure.median, figure.kind),
        spread if len(figure.values) > 1 else "",
        "" if ratio is None else f"{ratio:.3f}",
        _goal(figure),
        verdict,
    )


def _goal(figure: Figure) -> str:
    return "" if figure.goal is None else figure.goal.describe(figure.kind)


def notes(report: Report) -> list[str]:
    """The numbered notes under the table: how a figure was measured, or why it was not."""
    lines = []
    for number, figure in enumerate(report.figures.values(), 1):
        text = "; ".join(t for t in (figure.note, f"not measured: {figure.error}" if figure.error else "") if t)
        if text:
            lines.append(f"[{number}] {figure.key}: {text}")
    return lines


def show(report: Report, console: Console) -> None:
    """Print the report's table and its notes."""
    console.print(render(report))
    for line in notes(report):
        console.print(line, markup=False, highlight=False)
