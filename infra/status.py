"""Stream health at a glance: per consumer group, a Burrow-style verdict from a window of samples;
per authority, how fresh its view is; the rejects.

``Sampler`` collects samples through a ``LagReader`` (the Kafka adapter); ``build_report`` turns
windows of samples into a ``StatusReport`` (pure); ``render`` and ``StatusReport.to_json`` show it.
``scolaflux status`` samples over a short window and prints one screen; ``scolaflux monitor`` samples
for ever and exports the lag, freshness and verdict gauges on ``/metrics`` for Prometheus.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from .burrow import Sample, Status, evaluate_partition, worst
from .lag import LagReader, Target, deployment_topics, find_targets, watched_groups
from .metrics import Metrics
from .settings import Settings

Window = Sequence[Sample]


@dataclass(frozen=True)
class PartitionReport:
    """One partition of one topic for one group, at the last sample."""

    partition: int
    committed: int
    end: int
    lag: int
    lag_seconds: float | None
    status: str


@dataclass(frozen=True)
class TopicReport:
    """One group on one topic: verdict, lag, and rates over the window (records per second)."""

    topic: str
    status: str
    lag: int
    lag_seconds: float | None
    produced_per_second: float
    consumed_per_second: float
    partitions: list[PartitionReport]


@dataclass(frozen=True)
class GroupReport:
    """One consumer group: its verdict is its worst topic's."""

    group: str
    role: str
    authority: str | None
    status: str
    lag: int
    lag_seconds: float | None
    produced_per_second: float
    consumed_per_second: float
    topics: list[TopicReport]


@dataclass(frozen=True)
class AuthorityReport:
    """One authority's view: freshness is the age of the oldest delivery it has not applied (0: current)."""

    authority: str
    group: str
    status: str
    lag: int
    freshness_seconds: float | None
    applied_per_second: float


@dataclass(frozen=True)
class RejectReport:
    """Records on the dead-letter topic: in all, during the window, and the window's reasons."""

    total: int
    in_window: int
    per_second: float
    reasons: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class StatusReport:
    """Everything ``scolaflux status`` shows."""

    at: float
    window_seconds: float
    samples: int
    groups: list[GroupReport]
    authorities: list[AuthorityReport]
    rejects: RejectReport
    unconsumed_topics: list[str]
    missing_groups: list[str]

    @property
    def ok(self) -> bool:
        """Whether every group is OK and none that must exist is missing."""
        return not self.missing_groups and all(g.status == Status.OK.name for g in self.groups)

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict (for ``--json`` and scripts)."""
        return {"ok": self.ok, **asdict(self)}


# -- pure: from windows to a report -----------------------------------------------------------


def _rate(first: Sample, last: Sample, attribute: str) -> float:
    elapsed = last.at - first.at
    return max(getattr(last, attribute) - getattr(first, attribute), 0) / elapsed if elapsed > 0 else 0.0


def _max_seconds(values: Iterable[float | None]) -> float | None:
    """The largest of ``values``; ``None`` if any is unknown (an unknown age could be the largest)."""
    values = list(values)
    if any(v is None for v in values):
        return None
    return max((v for v in values if v is not None), default=0.0)


def topic_report(topic: str, windows: Mapping[int, Window], members_active: bool | None) -> TopicReport:
    """The report of one group on one topic, from each partition's window (oldest sample first)."""
    partitions = []
    for partition, window in sorted(windows.items()):
        last = window[-1]
        status = evaluate_partition(window, members_active)
        partitions.append(PartitionReport(partition, last.committed, last.end, last.lag, last.lag_seconds, status.name))
    filled = [w for w in windows.values() if w]
    return TopicReport(
        topic=topic,
        status=worst(Status[p.status] for p in partitions).name if partitions else Status.ERROR.name,
        lag=sum(p.lag for p in partitions),
        lag_seconds=_max_seconds(p.lag_seconds for p in partitions),
        produced_per_second=sum(_rate(w[0], w[-1], "end") for w in filled),
        consumed_per_second=sum(_rate(w[0], w[-1], "committed") for w in filled),
        partitions=partitions,
    )


def group_report(
    target_windows: Mapping[Target, Mapping[int, Window]], group: str, members_active: bool | None
) -> GroupReport:
    """The report of one group over all the topics it consumes."""
    mine = {t: w for t, w in target_windows.items() if t.group == group}
    first = next(iter(mine))
    topics = [topic_report(t.topic, w, members_active) for t, w in sorted(mine.items())]
    return GroupReport(
        group=group,
        role=first.role,
        authority=first.authority,
        status=worst(Status[t.status] for t in topics).name,
        lag=sum(t.lag for t in topics),
        lag_seconds=_max_seconds(t.lag_seconds for t in topics),
        produced_per_second=sum(t.produced_per_second for t in topics),
        consumed_per_second=sum(t.consumed_per_second for t in topics),
        topics=topics,
    )


def build_report(
    target_windows: Mapping[Target, Mapping[int, Window]],
    members: Mapping[str, bool | None],
    rejects: RejectReport,
    unconsumed_topics: Sequence[str] = (),
    missing_groups: Sequence[str] = (),
    at: float | None = None,
) -> StatusReport:
    """The whole report from every target's windows (pure)."""
    groups = [group_report(target_windows, g, members.get(g)) for g in sorted({t.group for t in target_windows})]
    authorities = [
        AuthorityReport(g.authority, g.group, g.status, g.lag, g.lag_seconds, g.consumed_per_second)
        for g in groups
        if g.role == "view" and g.authority
    ]
    samples = [s for windows in target_windows.values() for w in windows.values() for s in w]
    span = max((s.at for s in samples), default=0.0) - min((s.at for s in samples), default=0.0)
    return StatusReport(
        at=at if at is not None else max((s.at for s in samples), default=time.time()),
        window_seconds=round(span, 3),
        samples=max((len(w) for windows in target_windows.values() for w in windows.values()), default=0),
        groups=groups,
        authorities=authorities,
        rejects=rejects,
        unconsumed_topics=list(unconsumed_topics),
        missing_groups=list(missing_groups),
    )


def export(report: StatusReport, metrics: Metrics) -> None:
    """Set the monitor's gauges from a report: lag per partition, verdict per group, freshness per authority."""
    for group in report.groups:
        metrics.group_status(group.group, group.status)
        for topic in group.topics:
            for p in topic.partitions:
                metrics.consumer_lag(group.group, topic.topic, p.partition, p.lag, p.lag_seconds)
    for authority in report.authorities:
        if authority.freshness_seconds is not None:
            metrics.view_freshness(authority.authority, authority.freshness_seconds)


# -- the sampler (drives the Kafka adapter) --------------------------------------------------


class Sampler:
    """Keeps a sliding window of samples for every group of the deployment, and reports on them."""

    def __init__(self, settings: Settings, reader: LagReader, max_samples: int = 10) -> None:
        self.settings, self.reader, self.max_samples = settings, reader, max_samples
        self.windows: dict[Target, dict[int, deque[Sample]]] = {}
        self.members: dict[str, bool | None] = {}
        self.unconsumed: list[str] = []
        self.missing: list[str] = []
        self._deadletter_ends: deque[tuple[float, dict[int, int]]] = deque(maxlen=max_samples)

    def sample(self) -> None:
        """Rediscover the groups and their topics, then take one sample of each."""
        topics = self.reader.topics()
        groups = watched_groups(self.settings, self.reader.groups())
        committed = self.reader.all_committed(groups, deployment_topics(self.settings, topics))
        commits = {group: {topic for topic, _p in offsets} for group, offsets in committed.items()}
        found, self.unconsumed = find_targets(self.settings, topics, commits)
        # A group once seen stays watched: Kafka keeps committed offsets for days, and an answer
        # that misses a group (Tansu's ListGroups sometimes does) must not reset its window.
        for target in found:
            self.windows.setdefault(target, {})
        targets = sorted(self.windows)
        known = {t.group for t in targets}
        self.missing = [] if self.settings.processor_group_id in known else [self.settings.processor_group_id]
        for target, samples in self.reader.sample_all(targets, committed).items():
            for partition, sample in samples.items():
                self.windows[target].setdefault(partition, deque(maxlen=self.max_samples)).append(sample)
        self.members = {g: self.reader.members_active(g) for g in {t.group for t in targets}}
        if self.settings.deadletter_topic in topics:
            self._sample_deadletters()

    def _sample_deadletters(self) -> None:
        topic = self.settings.deadletter_topic
        last = self._deadletter_ends[-1][1] if self._deadletter_ends else {}
        positions = {p: last.get(p, 0) for p in self.reader.partitions(topic)}
        ends = {p: head.end for p, head in self.reader.heads(topic, positions).items()}
        self._deadletter_ends.append((time.time(), ends))

    def rejects(self) -> RejectReport:
        """The dead-letter records: in all, and during the window with their reasons."""
        if not self._deadletter_ends:
            return RejectReport(0, 0, 0.0)
        (first_at, first), (last_at, last) = self._deadletter_ends[0], self._deadletter_ends[-1]
        in_window = sum(end - first.get(p, 0) for p, end in last.items())
        reasons = self.reader.reasons(self.settings.deadletter_topic, first, last) if in_window else {}
        elapsed = last_at - first_at
        return RejectReport(sum(last.values()), in_window, in_window / elapsed if elapsed > 0 else 0.0, reasons)

    def report(self) -> StatusReport:
        """The report on the current windows."""
        return build_report(self.windows, self.members, self.rejects(), self.unconsumed, self.missing)


def collect(settings: Settings, window: float, interval: float) -> StatusReport:
    """Sample every ``interval`` seconds for ``window`` seconds (at least two samples), then report."""
    samples = max(2, int(window / interval) + 1)
    with LagReader(settings) as reader:
        sampler = Sampler(settings, reader, max_samples=samples)
        for i in range(samples):
            began = time.monotonic()
            sampler.sample()
            if i < samples - 1:
                time.sleep(max(0.0, interval - (time.monotonic() - began)))
        return sampler.report()
