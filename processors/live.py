"""Conventions live: every processor worker reads the whole compacted conventions topic.

The topic is read outside the consumer group (every partition assigned to every worker, from the
beginning), so each worker sees ALL conventions, not a partition share. Before each batch of
events the worker catches up with the topic's end: a convention published (acknowledged) before an
event was produced is known when that event is judged. A change rebuilds the immutable
``ConventionIndex`` and swaps it in one assignment; a batch in progress keeps the one it started with.

A tombstone, or a latest version whose status is ``ended``, removes a convention: nothing more is
delivered under it, whatever the event's time.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition

from ..infra.kafka import FETCH_MAX_WAIT_MS, delivery_topics, ensure_topics
from ..infra.settings import Settings
from ..schemas.errors import ConfigError
from ..schemas.models import Event
from .history import ConventionHistory
from .routing import ConventionIndex, Location, Route

log = logging.getLogger(__name__)

OnNew = Callable[[list[str]], Awaitable[None]]


def apply_records(
    histories: Mapping[str, ConventionHistory], records: Iterable[tuple[bytes | None, bytes | None]]
) -> dict[str, ConventionHistory]:
    """The histories after some records of the conventions topic (key, value; None value: tombstone)."""
    updated = dict(histories)
    for key, value in records:
        if key is None:
            log.warning("conventions topic: a record without a key was ignored")
            continue
        convention_id = key.decode("utf-8", "replace")
        if value is None:
            updated.pop(convention_id, None)
            continue
        try:
            history = ConventionHistory.from_bytes(value, f"conventions topic, key {convention_id}")
        except ConfigError as error:
            log.warning("conventions topic: %s (the previous record stays in force)", error)
            continue
        if history.id != convention_id:
            log.warning("conventions topic: key %s holds convention %s; ignored", convention_id, history.id)
            continue
        updated[convention_id] = history
    return updated


def in_force(histories: Mapping[str, ConventionHistory]) -> list[ConventionHistory]:
    """The histories that can still deliver: those whose latest version has not ended."""
    return [h for h in histories.values() if h.latest.status != "ended"]


class LiveConventions:
    """A worker's router: the current ``ConventionIndex``, kept up to date from the conventions topic."""

    def __init__(
        self,
        bootstrap: str,
        topic: str,
        master_key: bytes,
        on_new: OnNew | None = None,
        security: Mapping[str, Any] | None = None,
    ) -> None:
        """``security``: the aiokafka arguments of ``aiokafka_security`` (none: plaintext)."""
        self.bootstrap, self.topic, self.master_key = bootstrap, topic, master_key
        self.security = dict(security or {})
        self.on_new = on_new
        self.histories: dict[str, ConventionHistory] = {}
        self.index = ConventionIndex.build([], master_key)
        self._consumer: AIOKafkaConsumer | None = None
        self._partitions: list[TopicPartition] = []
        self._lock = asyncio.Lock()

    def routes(self, event: Event, where: Location) -> Sequence[Route]:
        """Route through the index as it is now."""
        return self.index.routes(event, where)

    async def start(self) -> None:
        """Assign every partition of the conventions topic, from the beginning (no group join)."""
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self.bootstrap,
            group_id=None,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            fetch_max_wait_ms=FETCH_MAX_WAIT_MS,
            **self.security,
        )
        try:
            await consumer.start()
        except BaseException:
            await consumer.stop()  # a refused start (e.g. authentication) leaves no client open
            raise
        partitions = consumer.partitions_for_topic(self.topic)
        if not partitions:
            await consumer.force_metadata_update()
            partitions = consumer.partitions_for_topic(self.topic) or {0}
        self._partitions = [TopicPartition(self.topic, p) for p in sorted(partitions)]
        consumer.assign(self._partitions)
        await consumer.seek_to_beginning(*self._partitions)
        # Fetched only while catching up: a broker answers a connection's requests in order, so the
        # catch-up's ListOffsets would otherwise wait behind a fetch held for up to its maximum wait.
        consumer.pause(*self._partitions)
        self._consumer = consumer

    async def stop(self) -> None:
        """Close the reader."""
        if self._consumer is not None:
            await self._consumer.stop()
            self._consumer = None

    async def catch_up(self) -> bool:
        """Read the topic up to its current end; swap in a new index if anything changed."""
        async with self._lock:
            return await self._catch_up()

    async def _catch_up(self) -> bool:
        if self._consumer is None:
            await self.start()
        consumer = self._consumer
        assert consumer is not None
        ends = await consumer.end_offsets(self._partitions)
        records: list[tuple[bytes | None, bytes | None]] = []
        if await _behind(consumer, ends):
            consumer.resume(*self._partitions)
            try:
                while await _behind(consumer, ends):
                    batch = await consumer.getmany(*self._partitions, timeout_ms=500)
                    records.extend((m.key, m.value) for messages in batch.values() for m in messages)
            finally:
                consumer.pause(*self._partitions)
        if not records:
            return False
        await self._swap(apply_records(self.histories, records))
        return True

    async def _swap(self, histories: dict[str, ConventionHistory]) -> None:
        new = sorted(set(histories) - set(self.histories))
        if new and self.on_new is not None:
            await self.on_new(new)
        self.histories = histories
        self.index = ConventionIndex.build(in_force(histories), self.master_key)
        log.info("conventions: %d in force (%d known)", len(self.index.histories), len(histories))


async def _behind(consumer: AIOKafkaConsumer, ends: dict[TopicPartition, int]) -> bool:
    """Whether the consumer has yet to reach any of the given end offsets."""
    for tp, end in ends.items():
        if await consumer.position(tp) < end:
            return True
    return False


def delivery_topic_creator(settings: Settings) -> OnNew:
    """An ``on_new`` callback that creates the delivery topics of new conventions (off the event loop)."""

    async def create(convention_ids: list[str]) -> None:
        specs = delivery_topics(settings, convention_ids)
        await asyncio.get_running_loop().run_in_executor(None, ensure_topics, settings, specs)

    return create
