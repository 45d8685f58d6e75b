"""Headcount projections by the grade-progression-ratio method (*méthode des taux de passage*).

For each school and each pair of consecutive levels (2nde → 1re, 1re → Tle), the ratio is the
headcount of the upper level in year y+1 over that of the lower level in year y, summed over every
pair of consecutive years the history holds. A school without such a pair takes the ratio of all
schools together. The entry level, which no lower level of the same view feeds, is held at its
average over the observed years. Pure functions: history in, projection out.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

History = Mapping[tuple[str, str, int], int]
"""Headcount by (school, level, school year)."""


@dataclass(frozen=True)
class Ratio:
    """One grade-progression ratio and where it comes from."""

    school: str
    from_level: str
    to_level: str
    value: float | None
    basis: str  # "school" | "all schools" | "none"
    year_pairs: tuple[tuple[int, int], ...]


@dataclass
class Projection:
    """Projected headcounts by (school, level, school year), the ratios used and the years they rest on."""

    rows: list[dict[str, object]] = field(default_factory=list)
    ratios: list[Ratio] = field(default_factory=list)
    observed_years: tuple[int, ...] = ()
    basis_pairs: tuple[tuple[int, int], ...] = ()

    @property
    def basis(self) -> str:
        """Which years the ratios rest on, in words."""
        if not self.basis_pairs:
            years = ", ".join(map(str, self.observed_years)) or "none"
            return f"no ratio: projections need two consecutive school years, the view holds {years}"
        pairs = ", ".join(f"{a}→{b}" for a, b in self.basis_pairs)
        return f"grade-progression ratios computed from school years {pairs} (rentrée year)"


def project(history: History, levels: Sequence[str], horizon: int = 3) -> Projection:
    """Project headcounts of every school and level for ``horizon`` school years after the last observed."""
    years = tuple(sorted({year for (_, _, year) in history}))
    pairs = tuple((y, y + 1) for y in years if y + 1 in years)
    result = Projection(observed_years=years, basis_pairs=pairs)
    if not pairs:
        return result
    last = years[-1]
    schools = sorted({school for (school, _, _) in history})
    overall = {step: _ratio(history, None, step, pairs) for step in zip(levels, levels[1:], strict=False)}
    for school in schools:
        current = {level: float(history.get((school, level, last), 0)) for level in levels}
        ratios = []
        for step in zip(levels, levels[1:], strict=False):
            own = _ratio(history, school, step, pairs)
            value, basis = (own, "school") if own is not None else (overall[step], "all schools")
            ratios.append(Ratio(school, *step, value, basis if value is not None else "none", pairs))
        result.ratios.extend(ratios)
        entry = _entry_average(history, school, levels[0], years)
        for offset in range(1, horizon + 1):
            following = {levels[0]: entry}
            for ratio in ratios:
                following[ratio.to_level] = (
                    current[ratio.from_level] * ratio.value if ratio.value is not None else current[ratio.to_level]
                )
            current = following
            for level in levels:
                result.rows.append(
                    {"school": school, "level": level, "school_year": last + offset, "projected": round(current[level])}
                )
    return result


def _ratio(
    history: History, school: str | None, step: tuple[str, str], pairs: Sequence[tuple[int, int]]
) -> float | None:
    lower, upper = step
    below = above = 0
    totals: dict[tuple[str, int], int] = defaultdict(int)
    for (s, level, year), count in history.items():
        if school is None or s == school:
            totals[(level, year)] += count
    for year, following in pairs:
        if totals[(lower, year)] > 0:
            below += totals[(lower, year)]
            above += totals[(upper, following)]
    return above / below if below else None


def _entry_average(history: History, school: str, level: str, years: Sequence[int]) -> float:
    counts = [history.get((school, level, year), 0) for year in years]
    return sum(counts) / len(counts)
