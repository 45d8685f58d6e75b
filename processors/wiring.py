"""Builds the processor's pipeline from settings and the reference geography."""

from __future__ import annotations

from ..infra.kafka import TopicSpec
from ..infra.settings import Settings
from ..schemas.geography import Geography
from .identity import audit_key
from .pipeline import Mode, Pipeline, Topics
from .routing import Locator, Router


def master_key(settings: Settings) -> bytes:
    """The master pseudonymisation key (each convention's key, and the audit key, derive from it)."""
    return settings.master_key()


def aggregation_topic(settings: Settings) -> str:
    """The processor's internal topic of headcount movements, keyed by convention and school."""
    return f"{settings.topic_prefix}.aggregation"


def processor_topics(settings: Settings) -> list[TopicSpec]:
    """The topics of the processor beyond the pipeline's (they must exist before it starts).

    The aggregation topic is kept forever (``retention.ms=-1``): its movements are the log of the
    headcounts, from which a worker rebuilds a partition's state when it takes it.
    """
    return [
        TopicSpec(
            aggregation_topic(settings),
            settings.partitions,
            {"retention.ms": "-1"},
            replication=settings.replication_factor,
        )
    ]


def build_pipeline(settings: Settings, geography: Geography, router: Router, mode: Mode = "live") -> Pipeline:
    """The pure pipeline the faust agent (or a backfill) runs, routing through ``router``."""
    return Pipeline(
        router=router,
        locate=Locator(geography),
        known_commune=geography.communes.__contains__,
        topics=Topics(
            deadletter=settings.deadletter_topic,
            audit=settings.audit_topic,
            aggregation=aggregation_topic(settings),
            delivery=settings.delivery_topic,
        ),
        audit_key=audit_key(master_key(settings)),
        mode=mode,
    )
