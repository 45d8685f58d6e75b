"""Kafka ACLs for a real cluster: each authority reads its own delivery topics, and nothing else.

One delivery topic per convention exists so that this is possible: the principal of an authority
(``User:<level>-<code>``) gets Read on the delivery topic of each of its conventions and on its own
consumer groups (a view's group is named after its topic); the processor's principal writes every
delivery topic and the audit topic.
"""

from __future__ import annotations

from collections.abc import Iterable

from ..infra.settings import Settings
from .conventions import Convention

PROCESSOR_PRINCIPAL = "User:scolaflux-processor"


def authority_principal(convention: Convention) -> str:
    """The Kafka principal of a convention's authority."""
    return f"User:{convention.authority.level}-{convention.authority.code}"


def acl_commands(settings: Settings, conventions: Iterable[Convention], bootstrap: str = "$BOOTSTRAP") -> list[str]:
    """``kafka-acls.sh`` commands that give each authority read access to its own delivery topics only."""
    base = f"kafka-acls.sh --bootstrap-server {bootstrap} --add"
    lines = [
        f"{base} --allow-principal {PROCESSOR_PRINCIPAL} --operation Write --operation Describe "
        f"--resource-pattern-type prefixed --topic {settings.delivery_topic('')}",
        f"{base} --allow-principal {PROCESSOR_PRINCIPAL} --operation Write --operation Describe "
        f"--topic {settings.audit_topic}",
    ]
    for convention in sorted(conventions, key=lambda c: c.id):
        principal = authority_principal(convention)
        topic = settings.delivery_topic(convention.id)
        lines.append(f"{base} --allow-principal {principal} --operation Read --operation Describe --topic {topic}")
        lines.append(
            f"{base} --allow-principal {principal} --operation Read --resource-pattern-type prefixed "
            f"--group {settings.topic_prefix}-view-{topic}"
        )
    return lines
