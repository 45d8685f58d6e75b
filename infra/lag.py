"""The Kafka adapter of the monitor: which groups consume what, their committed offsets, the
log-end offsets, and the age of the oldest record each group has not consumed yet.

How each figure is read, and why (measured on the embedded Tansu broker and kept valid for Kafka):

- which topics a group consumes: the topics of the deployment on which it has committed offsets
  (views assign their partitions themselves and commit only for monitoring; the processor's faust
  worker commits as a group member).
- committed offsets: the admin's OffsetFetch, always with explicit partitions (kafka-python 2.3
  cannot decode Tansu's answer to the "all partitions" form).
- log-end offsets and the oldest unconsumed record: one fetch from each partition at the group's
  committed offset. The fetch answer carries the high watermark, and its first record (if any)
  is the oldest one the group has not consumed. (Tansu's ListOffsets answers the base offset of
  the last batch plus one instead of the log end, so ``end_offsets`` would under-count lag.)
- live members: ``describe_consumer_groups``, when the broker answers it (Tansu does not: then
  "unknown", and a group that makes no progress is judged STOPPED rather than STALLED).
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass

from kafka import KafkaAdminClient, KafkaConsumer, TopicPartition
from kafka.errors import KafkaError

from .burrow import Sample
from .kafka import MAX_FRAME_BYTES, REASON_HEADER, make_admin
from .kafka_auth import kafka_python_security
from .settings import Settings

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True, order=True)
class Target:
    """One consumer group on one topic, with the group's role and, for a view, its authority."""

    group: str
    topic: str
    role: str  # "processor" | "view" | "other"
    authority: str | None = None


@dataclass(frozen=True, slots=True)
class Head:
    """What a fetch at a position tells: the log-end offset, and the first record after the position."""

    end: int
    first_time: float | None = None
    first_value: bytes | None = None


def watched_groups(settings: Settings, groups: Iterable[str]) -> list[str]:
    """The groups of this deployment: those whose id starts with the topic prefix and a dash."""
    return sorted(g for g in groups if g.startswith(f"{settings.topic_prefix}-"))


def deployment_topics(settings: Settings, topics: Iterable[str]) -> list[str]:
    """The topics of this deployment (``<prefix>.…``): raw, delivery, audit, dead-letter…"""
    return sorted(t for t in topics if t.startswith(f"{settings.topic_prefix}."))


def role_of(settings: Settings, group: str) -> tuple[str, str | None]:
    """A group's role, and the authority (``level:code``) whose view it maintains, if it is a view."""
    if group in (settings.processor_group_id, settings.headcounts_group_id):
        return "processor", None
    view_prefix = settings.view_group_id("")
    if group.startswith(view_prefix):
        return "view", group[len(view_prefix) :]
    return "other", None


def find_targets(
    settings: Settings, topics: Iterable[str], commits: dict[str, set[str]]
) -> tuple[list[Target], list[str]]:
    """What to watch: each group on each topic it has committed offsets on; and the delivery topics
    that no group consumes.

    Pure: ``commits`` maps each group of the deployment to the topics it has committed on.
    """
    targets = []
    for group, consumed in sorted(commits.items()):
        role, authority = role_of(settings, group)
        targets.extend(Target(group, topic, role, authority) for topic in sorted(consumed))
    consumed_by_any = set().union(*commits.values()) if commits else set()
    delivery_prefix = settings.delivery_topic("")
    unconsumed = sorted(t for t in topics if t.startswith(delivery_prefix) and t not in consumed_by_any)
    return targets, unconsumed


class LagReader:
    """Reads offsets and record times from the broker; one per monitor, closed after use."""

    def __init__(self, settings: Settings, fetch_timeout: float = 5.0) -> None:
        self.settings = settings
        self.fetch_timeout = fetch_timeout
        self._probe = KafkaConsumer(
            bootstrap_servers=settings.kafka_bootstrap,
            group_id=None,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            fetch_max_wait_ms=10,
            # only the first record after each position matters: small fetches, no CRC pass in Python
            max_partition_fetch_bytes=4 * 1024,
            check_crcs=False,
            receive_message_max_bytes=MAX_FRAME_BYTES,
            request_timeout_ms=10_000,
            **kafka_python_security(settings),
        )
        self._admin: KafkaAdminClient | None = None
        self._describe_works = True

    # -- discovery ---------------------------------------------------------------------------

    def topics(self) -> set[str]:
        """Topics of the cluster (fresh metadata)."""
        return set(self._probe.topics())

    def groups(self) -> set[str]:
        """Consumer groups known to the cluster, including those that only commit offsets."""
        return {group for group, _protocol in self._admin_client().list_consumer_groups()}

    def partitions(self, topic: str) -> list[int]:
        """The partitions of ``topic`` (empty if it does not exist)."""
        return sorted(self._probe.partitions_for_topic(topic) or ())

    def members_active(self, group: str) -> bool | None:
        """Whether ``group`` has live members; ``None`` when the broker cannot say."""
        if not self._describe_works:
            return None
        try:
            (info,) = self._admin_client().describe_consumer_groups([group])
        except (KafkaError, ValueError) as error:  # Tansu: an ACL operation kafka-python cannot parse
            log.info("describe_consumer_groups unavailable (%s): group membership unknown", type(error).__name__)
            self._describe_works = False
            return None
        return bool(info.members) if info.error_code == 0 else None

    # -- offsets -----------------------------------------------------------------------------

    def committed(self, group: str, partitions: Iterable[tuple[str, int]]) -> dict[tuple[str, int], int]:
        """The offsets ``group`` committed, by (topic, partition); partitions never committed are absent.

        (The admin's OffsetFetch with explicit partitions works on Tansu; without them it does not.)
        """
        tps = [TopicPartition(topic, p) for topic, p in partitions]
        if not tps:
            return {}
        answer = self._admin_client().list_consumer_group_offsets(group, partitions=tps)
        return {(tp.topic, tp.partition): meta.offset for tp, meta in answer.items() if meta.offset >= 0}

    def commits(self, groups: Iterable[str], topics: Iterable[str]) -> dict[str, set[str]]:
        """For each group, the topics among ``topics`` on which it has committed an offset."""
        return {
            group: {topic for topic, _p in offsets} for group, offsets in self.all_committed(groups, topics).items()
        }

    def all_committed(self, groups: Iterable[str], topics: Iterable[str]) -> dict[str, dict[tuple[str, int], int]]:
        """For each group, its committed offsets on every partition of ``topics`` (one request a group)."""
        partitions = [(topic, p) for topic in sorted(topics) for p in self.partitions(topic)]
        return {group: self.committed(group, partitions) for group in groups}

    def beginnings(self, topic: str, partitions: Iterable[int]) -> dict[int, int]:
        """The first offset still in the log of each partition."""
        tps = [TopicPartition(topic, p) for p in partitions]
        return {tp.partition: offset for tp, offset in self._probe.beginning_offsets(tps).items()}

    def heads(self, topic: str, positions: dict[int, int]) -> dict[int, Head]:
        """Fetch each partition of ``topic`` at its position (see ``fetch_heads``)."""
        found = self.fetch_heads({TopicPartition(topic, p): offset for p, offset in positions.items()})
        return {tp.partition: head for tp, head in found.items()}

    def fetch_heads(self, positions: dict[TopicPartition, int]) -> dict[TopicPartition, Head]:
        """Fetch each partition at its position: the log end, and the first record after the position.

        One assignment for all of them; partitions that do not answer within ``fetch_timeout`` are
        missing from the result.
        """
        consumer = self._probe
        consumer.assign([])  # forget high watermarks from an earlier round
        consumer.assign(list(positions))
        for tp, offset in positions.items():
            consumer.seek(tp, offset)
        firsts: dict[TopicPartition, tuple[float | None, bytes | None]] = {}
        found: dict[TopicPartition, Head] = {}
        deadline = time.monotonic() + self.fetch_timeout
        while len(found) < len(positions) and time.monotonic() < deadline:
            for tp, records in consumer.poll(timeout_ms=50).items():
                if tp not in firsts and records:
                    first = records[0]
                    firsts[tp] = (first.timestamp / 1000 if first.timestamp >= 0 else None, first.value)
                    consumer.pause(tp)
            for tp, offset in positions.items():
                highwater = consumer.highwater(tp)
                if tp in found or highwater is None:
                    continue
                if tp in firsts:
                    found[tp] = Head(highwater, *firsts[tp])
                elif highwater <= offset:
                    found[tp] = Head(highwater)
        consumer.assign([])
        return found

    def positions(self, target: Target, committed: dict[tuple[str, int], int] | None = None) -> dict[int, int]:
        """Where ``target``'s group stands on each partition: its committed offset, else the log start.

        ``committed``: the group's committed offsets if already read (else they are read here).
        """
        partitions = self.partitions(target.topic)
        if committed is None:
            committed = self.committed(target.group, [(target.topic, p) for p in partitions])
        missing = [p for p in partitions if (target.topic, p) not in committed]
        beginnings = self.beginnings(target.topic, missing) if missing else {}
        return {p: committed.get((target.topic, p), beginnings.get(p, 0)) for p in partitions}

    def sample(self, target: Target) -> dict[int, Sample]:
        """One sample of every partition of the target's topic (partitions that cannot be read are left out)."""
        return self.sample_all([target])[target]

    def sample_all(
        self, targets: Iterable[Target], committed: dict[str, dict[tuple[str, int], int]] | None = None
    ) -> dict[Target, dict[int, Sample]]:
        """One sample of every partition of each target, fetching as many targets at once as can be
        (two groups on the same partition need two rounds). ``committed``: offsets already read, by group."""
        known = committed or {}
        where = {target: self.positions(target, known.get(target.group)) for target in targets}
        rounds: list[dict[TopicPartition, int]] = []
        owners: list[dict[TopicPartition, Target]] = []
        for target, positions in where.items():
            tps = {TopicPartition(target.topic, p): offset for p, offset in positions.items()}
            i = next((i for i, r in enumerate(rounds) if r.keys().isdisjoint(tps)), len(rounds))
            if i == len(rounds):
                rounds.append({})
                owners.append({})
            rounds[i].update(tps)
            owners[i].update(dict.fromkeys(tps, target))
        samples: dict[Target, dict[int, Sample]] = {target: {} for target in where}
        for positions, owner in zip(rounds, owners, strict=True):
            heads = self.fetch_heads(positions)
            at = time.time()
            for tp, head in heads.items():
                offset = positions[tp]
                samples[owner[tp]][tp.partition] = Sample(at, offset, max(head.end, offset), head.first_time)
        return samples

    def reasons(self, topic: str, since: dict[int, int], until: dict[int, int], limit: int = 10_000) -> dict[str, int]:
        """Counts of the reason header of the records in ``[since, until)`` on each partition of ``topic``."""
        wanted = {TopicPartition(topic, p): (since.get(p, 0), end) for p, end in until.items() if end > since.get(p, 0)}
        counts: dict[str, int] = {}
        if not wanted:
            return counts
        consumer = self._probe
        consumer.assign(list(wanted))
        for tp, (start, _end) in wanted.items():
            consumer.seek(tp, start)
        seen, deadline = 0, time.monotonic() + self.fetch_timeout
        while wanted and seen < limit and time.monotonic() < deadline:
            for tp, records in consumer.poll(timeout_ms=100).items():
                for record in records:
                    if tp in wanted and record.offset < wanted[tp][1]:
                        reason = dict(record.headers or []).get(REASON_HEADER, b"unknown").decode(errors="replace")
                        counts[reason] = counts.get(reason, 0) + 1
                        seen += 1
                if tp in wanted and consumer.position(tp) >= wanted[tp][1]:
                    del wanted[tp]
                    consumer.pause(tp)
        consumer.assign([])
        return counts

    def close(self) -> None:
        """Close every client."""
        with contextlib.suppress(Exception):
            self._probe.close(autocommit=False)
        if self._admin is not None:
            with contextlib.suppress(Exception):
                self._admin.close()

    def __enter__(self) -> LagReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _admin_client(self) -> KafkaAdminClient:
        if self._admin is None:
            self._admin = make_admin(self.settings, request_timeout_ms=10_000)
        return self._admin
