"""Kafka ACLs for a real cluster: each authority reads its own delivery topics, and nothing else.

One delivery topic per convention exists so that this is possible. Principals (SASL user names):

- ``User:<level>-<code>`` per authority: Read on the delivery topic of each of its conventions, on
  its view's group (``<prefix>-view-<level>:<code>``, where offsets are committed for monitoring)
  and on the conventions topic (a view finds its conventions there);
- ``User:scolaflux-processor`` (faust workers, backfills): Read on the raw, conventions and
  aggregation topics; Write on every delivery topic, the audit, dead-letter and aggregation topics;
  Read on its two groups (raw events, headcounts); Read on delivery and audit topics and both on
  the backfill progress (a backfill skips what was delivered); Create on the topics it makes when
  it starts or meets a new convention;
- ``User:scolaflux-producer`` (simulator, snapshot import, ingest endpoint): Write on the raw and
  dead-letter topics, Create on the topics it makes at start;
- ``User:scolaflux-publisher`` (the académie): Read and Write on the conventions topic, Create on
  delivery topics;
- ``User:scolaflux-monitor``: Describe on every group and Read on every topic of the deployment
  (the lag reader fetches the first unconsumed record of each partition: it can see deliveries).

Read and Write imply Describe in Kafka, so Describe is not listed. Idempotent producers need no
IdempotentWrite on the cluster since Kafka 3.0 (KIP-679): Write on the topic is enough.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

from ..infra.settings import Settings
from .conventions import Convention
from .wiring import aggregation_topic

PROCESSOR_PRINCIPAL = "User:scolaflux-processor"
PRODUCER_PRINCIPAL = "User:scolaflux-producer"
PUBLISHER_PRINCIPAL = "User:scolaflux-publisher"
MONITOR_PRINCIPAL = "User:scolaflux-monitor"


@dataclass(frozen=True, slots=True)
class Acl:
    """Operations a principal is allowed on a topic or group, by literal name or by prefix."""

    principal: str
    operations: tuple[str, ...]
    resource: Literal["topic", "group"]
    name: str
    prefixed: bool = False

    def command(self, bootstrap: str) -> str:
        """The ``kafka-acls.sh`` command that adds it."""
        operations = " ".join(f"--operation {op}" for op in self.operations)
        pattern = " --resource-pattern-type prefixed" if self.prefixed else ""
        return (
            f"kafka-acls.sh --bootstrap-server {bootstrap} --add --allow-principal {self.principal} "
            f"{operations}{pattern} --{self.resource} {self.name}"
        )


def authority_principal(convention: Convention) -> str:
    """The Kafka principal of a convention's authority."""
    return f"User:{convention.authority.level}-{convention.authority.code}"


def acls(settings: Settings, conventions: Iterable[Convention]) -> list[Acl]:
    """Every ACL the feed needs on a cluster with an authorizer, for these conventions."""
    delivery = settings.delivery_topic("")
    internal, progress = aggregation_topic(settings), f"{settings.topic_prefix}.backfill-progress"
    create = ("Create",)  # on the topics a process ensures at start (see ``ensure_topics``)
    processor, producer, publisher, monitor = (
        PROCESSOR_PRINCIPAL,
        PRODUCER_PRINCIPAL,
        PUBLISHER_PRINCIPAL,
        MONITOR_PRINCIPAL,
    )
    out = [
        Acl(processor, ("Read", *create), "topic", settings.raw_topic),
        Acl(processor, ("Read", *create), "topic", settings.conventions_topic),
        Acl(processor, ("Read", "Write", *create), "topic", settings.audit_topic),
        Acl(processor, ("Write", *create), "topic", settings.deadletter_topic),
        Acl(processor, ("Read", "Write", *create), "topic", internal),
        Acl(processor, ("Read", "Write", *create), "topic", progress),
        Acl(processor, ("Read", "Write", *create), "topic", delivery, prefixed=True),
        Acl(processor, ("Read",), "group", settings.processor_group_id),
        Acl(processor, ("Read",), "group", settings.headcounts_group_id),
        Acl(producer, ("Write", *create), "topic", settings.raw_topic),
        Acl(producer, ("Write", *create), "topic", settings.deadletter_topic),
        Acl(producer, create, "topic", settings.audit_topic),
        Acl(producer, create, "topic", settings.conventions_topic),
        Acl(publisher, ("Read", "Write", *create), "topic", settings.conventions_topic),
        Acl(publisher, create, "topic", delivery, prefixed=True),
        Acl(monitor, ("Read",), "topic", f"{settings.topic_prefix}.", prefixed=True),
        Acl(monitor, ("Describe",), "group", f"{settings.topic_prefix}-", prefixed=True),
    ]
    authorities: dict[str, list[Convention]] = {}
    for convention in sorted(conventions, key=lambda c: c.id):
        authorities.setdefault(authority_principal(convention), []).append(convention)
    for principal, theirs in authorities.items():
        authority = f"{theirs[0].authority.level}:{theirs[0].authority.code}"
        out.extend(Acl(principal, ("Read",), "topic", settings.delivery_topic(c.id)) for c in theirs)
        out.append(Acl(principal, ("Read",), "topic", settings.conventions_topic))
        out.append(Acl(principal, ("Read",), "group", settings.view_group_id(authority)))
    return out


def acl_commands(settings: Settings, conventions: Iterable[Convention], bootstrap: str = "$BOOTSTRAP") -> list[str]:
    """``kafka-acls.sh`` commands that give each principal what it needs, and each authority its own topics only."""
    return [acl.command(bootstrap) for acl in acls(settings, conventions)]
