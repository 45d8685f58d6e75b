"""The ACLs of `scolaflux conventions acl` against the names the code really uses: each authority
reads its own delivery topics and group only, the processor and producers what they read and write.

Kafka's rules are applied as a real authorizer does: a literal resource matches its own name, a
prefixed one every name that starts with it, and Read or Write imply Describe.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from scolaflux.consumers.authority import Authority
from scolaflux.consumers.runner import ViewMaintainer
from scolaflux.consumers.store import make_engine
from scolaflux.consumers.views import AuthorityView
from scolaflux.infra.settings import Settings
from scolaflux.processors.acl import (
    MONITOR_PRINCIPAL,
    PROCESSOR_PRINCIPAL,
    PRODUCER_PRINCIPAL,
    Acl,
    acl_commands,
    acls,
)
from scolaflux.processors.app import create_app
from scolaflux.processors.conventions import load_directory
from scolaflux.processors.live import LiveConventions
from scolaflux.processors.routing import ConventionIndex
from scolaflux.processors.wiring import aggregation_topic, build_pipeline, master_key
from scolaflux.schemas.geography import load_geography

EXAMPLES = Path(__file__).parent.parent / "conventions"
SETTINGS = Settings(kafka_bootstrap="kafka:9092", topic_prefix="sfx")
CONVENTIONS = load_directory(EXAMPLES)
ACLS = acls(SETTINGS, CONVENTIONS)


def allowed(principal: str, operation: str, resource: str, name: str) -> bool:
    implied = {"Describe": {"Describe", "Read", "Write"}}.get(operation, {operation})
    return any(
        acl.principal == principal
        and acl.resource == resource
        and (name.startswith(acl.name) if acl.prefixed else name == acl.name)
        and implied & set(acl.operations)
        for acl in ACLS
    )


def view_group(authority: Authority, tmp_path: Path) -> str:
    """The group the real view maintainer commits under."""
    engine = make_engine(f"sqlite:///{tmp_path / f'{authority.slug}.sqlite'}")
    return ViewMaintainer(SETTINGS, ["t"], AuthorityView(authority), engine).group_id


def test_each_authority_reads_its_own_delivery_topics_and_group_and_nothing_else(tmp_path: Path) -> None:
    every_topic = {SETTINGS.delivery_topic(c.id) for c in CONVENTIONS} | {
        SETTINGS.raw_topic,
        SETTINGS.audit_topic,
        SETTINGS.deadletter_topic,
        aggregation_topic(SETTINGS),
    }
    authorities = {Authority(c.authority.level, c.authority.code) for c in CONVENTIONS}
    groups = {a: view_group(a, tmp_path) for a in authorities}
    for authority in authorities:
        principal = f"User:{authority.slug}"
        own = {
            SETTINGS.delivery_topic(c.id)
            for c in CONVENTIONS
            if c.authority.code == authority.code and c.authority.level == authority.level
        }
        assert own, authority
        for topic in every_topic:
            assert allowed(principal, "Read", "topic", topic) == (topic in own), (principal, topic)
            assert not allowed(principal, "Write", "topic", topic)
        assert allowed(principal, "Read", "topic", SETTINGS.conventions_topic)  # how a view finds its conventions
        for other, group in groups.items():
            assert allowed(principal, "Read", "group", group) == (other == authority), (principal, group)


def test_the_processor_reads_raw_and_aggregation_and_writes_deliveries_audit_dead_letters() -> None:
    conventions = LiveConventions("kafka:9092", SETTINGS.conventions_topic, master_key(SETTINGS))
    conventions.index = ConventionIndex.build([], master_key(SETTINGS))
    app = create_app(SETTINGS, build_pipeline(SETTINGS, load_geography(["69"]), conventions), conventions)
    assert not app.tables and app.producer_only  # faust makes no topic and joins no group of its own
    for topic in (SETTINGS.raw_topic, SETTINGS.conventions_topic, aggregation_topic(SETTINGS)):
        assert allowed(PROCESSOR_PRINCIPAL, "Read", "topic", topic), topic
    writes = [SETTINGS.delivery_topic(c.id) for c in CONVENTIONS]
    for topic in (*writes, SETTINGS.audit_topic, SETTINGS.deadletter_topic, aggregation_topic(SETTINGS)):
        assert allowed(PROCESSOR_PRINCIPAL, "Write", "topic", topic), topic
    assert allowed(PROCESSOR_PRINCIPAL, "Create", "topic", SETTINGS.delivery_topic("a-new-convention"))
    assert allowed(PROCESSOR_PRINCIPAL, "Read", "group", SETTINGS.processor_group_id)
    assert allowed(PROCESSOR_PRINCIPAL, "Read", "group", SETTINGS.headcounts_group_id)
    assert not allowed(PROCESSOR_PRINCIPAL, "Write", "topic", SETTINGS.raw_topic)


def test_producers_write_raw_events_and_dead_letters_and_read_nothing() -> None:
    assert allowed(PRODUCER_PRINCIPAL, "Write", "topic", SETTINGS.raw_topic)
    assert allowed(PRODUCER_PRINCIPAL, "Write", "topic", SETTINGS.deadletter_topic)
    assert not any("Read" in acl.operations for acl in ACLS if acl.principal == PRODUCER_PRINCIPAL)
    assert allowed(MONITOR_PRINCIPAL, "Describe", "group", SETTINGS.view_group_id("commune:69123"))


@pytest.mark.parametrize(
    ("acl", "command"),
    [
        (
            Acl("User:commune-69123", ("Read",), "topic", "sfx.delivery.x"),
            "kafka-acls.sh --bootstrap-server kafka:9092 --add --allow-principal User:commune-69123 "
            "--operation Read --topic sfx.delivery.x",
        ),
        (
            Acl("User:p", ("Read", "Write"), "topic", "sfx.delivery.", prefixed=True),
            "kafka-acls.sh --bootstrap-server kafka:9092 --add --allow-principal User:p --operation Read "
            "--operation Write --resource-pattern-type prefixed --topic sfx.delivery.",
        ),
    ],
)
def test_each_acl_is_one_kafka_acls_command(acl: Acl, command: str) -> None:
    assert acl.command("kafka:9092") == command
    assert len(acl_commands(SETTINGS, CONVENTIONS, "kafka:9092")) == len(ACLS)
