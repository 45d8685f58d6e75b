"""The audit trail: one record per delivery, found by pupil, holding no INE; its reader shows a
delivery once however many times an at-least-once processor wrote its record."""

from __future__ import annotations

import datetime as dt

import pytest
from scolaflux.infra.cli import app
from scolaflux.infra.kafka import make_producer
from scolaflux.infra.settings import Settings, settings_env
from scolaflux.processors.audit import pupil_hash
from scolaflux.processors.conventions import load_convention
from scolaflux.processors.history import ConventionHistory
from scolaflux.processors.identity import convention_key, pseudonym
from scolaflux.processors.routing import ConventionIndex
from scolaflux.processors.wiring import build_pipeline, master_key
from scolaflux.schemas.codec import audit_codec, delivery_codec
from scolaflux.schemas.geography import load_geography
from typer.testing import CliRunner

from tests.conftest import EXAMPLE_CONVENTIONS, make_event

LYON_LYCEE = "0690026D"
CONVENTIONS = ("commune-69123-instruction", "region-84-lyon-lycees-mouvements", "region-84-lyon-lycees-effectifs")


def pipeline_for(settings: Settings, mode: str = "live"):
    histories = [ConventionHistory.first(load_convention(EXAMPLE_CONVENTIONS / f"{c}.yaml")) for c in CONVENTIONS]
    return build_pipeline(
        settings, load_geography(["69"]), ConventionIndex.build(histories, master_key(settings)), mode
    )


def test_every_delivery_has_its_audit_record_naming_the_pupil_by_a_hash_no_authority_holds() -> None:
    settings = Settings(topic_prefix="audit", kafka_bootstrap="unused:9092")
    event = make_event("enrolment", commune="69123", school=LYON_LYCEE)
    outputs = pipeline_for(settings).route(event)
    audits = [audit_codec().decode(o.value) for o in outputs if o.topic == settings.audit_topic]
    deliveries = [delivery_codec().decode(o.value) for o in outputs if o.topic.startswith(settings.delivery_topic(""))]
    assert sorted(a["convention_id"] for a in audits) == sorted(CONVENTIONS)  # aggregated included
    by_delivery = {a["delivery_id"]: a for a in audits}
    for delivery in deliveries:
        audit = by_delivery[delivery["delivery_id"]]
        assert audit["fields"] == delivery["fields"] and audit["convention_version"] == delivery["convention_version"]
        assert audit["identity_treatment"] == delivery["identity_treatment"]
        assert audit["event_id"] == str(event.event_id)
    key = master_key(settings)
    assert {a["pupil"] for a in audits} == {pupil_hash(settings, event.pupil.ine)}
    assert all(event.pupil.ine.encode() not in o.value for o in outputs if o.topic == settings.audit_topic)
    pseudonyms = {pseudonym(convention_key(key, c), event.pupil.ine) for c in CONVENTIONS}
    assert pupil_hash(settings, event.pupil.ine) not in pseudonyms  # the trail cannot be joined with a feed


@pytest.mark.broker
def test_audit_pupil_answers_who_received_what_about_one_pupil(settings: Settings, topics) -> None:
    topics()
    pupil, other = "111111111AA", "222222222BB"
    pipeline = pipeline_for(settings)
    day = dt.datetime(2026, 9, 3, 8, tzinfo=dt.UTC)
    events = [
        make_event("enrolment", ine=pupil, commune="69123", school=LYON_LYCEE, event_time=day),
        make_event(
            "transfer",
            ine=pupil,
            commune="69123",
            school=LYON_LYCEE,
            payload={"level": "2nde", "exit_date": "2026-10-01", "destination_kind": "unknown"},
            event_time=day + dt.timedelta(days=30),
        ),
        make_event("enrolment", ine=other, commune="69123", school=LYON_LYCEE, event_time=day),
    ]
    producer = make_producer(settings)
    for event in [*events, events[0]]:  # the first event's audit records written again, as a replay does
        for output in pipeline.route(event):
            if output.topic == settings.audit_topic:
                producer.send(output.topic, key=output.key, value=output.value)
    producer.flush()
    producer.close()

    result = CliRunner().invoke(app, ["audit", "pupil", pupil.lower()], env=settings_env(settings))
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[-1] == "6 deliveries"  # two events, three conventions each; the replay's copies shown once
    assert sum("commune 69123  commune-69123-instruction v1  nominative  enrolment" in line for line in lines) == 1
    assert sum("region 84  region-84-lyon-lycees-effectifs v1  aggregated  transfer" in line for line in lines) == 1
    assert pupil not in result.output and other not in result.output

    nobody = CliRunner().invoke(app, ["audit", "pupil", "333333333CC"], env=settings_env(settings))
    assert nobody.output.splitlines() == ["no delivery about this pupil", "0 deliveries"]
    wrong = CliRunner().invoke(app, ["audit", "pupil", "NOT-AN-INE-42"], env=settings_env(settings))
    assert wrong.exit_code != 0 and "NOT-AN-INE-42" not in wrong.output
    piped = CliRunner().invoke(app, ["audit", "pupil"], input=f"{pupil}\n", env=settings_env(settings))
    assert piped.output == result.output  # the INE read from standard input, out of `ps` and shell history
