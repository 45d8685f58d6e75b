"""The walking skeleton end to end, on the real broker: producer → processor → view."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest
from scolaflux.consumers.commune import CommuneView, movement_counts, recent_movements
from scolaflux.consumers.runner import ViewMaintainer
from scolaflux.consumers.store import make_engine, view_url
from scolaflux.infra.kafka import ERROR_HEADER, REASON_HEADER, make_producer
from scolaflux.infra.settings import Settings
from scolaflux.producers.kafka import EventProducer
from scolaflux.schemas.codec import delivery_codec, event_codec
from sqlalchemy import Engine

from tests.conftest import make_event, read_topic, wait_for

pytestmark = pytest.mark.broker

LYON, VILLEURBANNE = "69123", "69266"
LYCEE_DU_PARC = "0690026D"  # Lyon
LYON_CONVENTION = "commune-69123-instruction"


@pytest.fixture
def commune_views(settings: Settings, publish_conventions) -> Iterator[dict[str, Engine]]:
    """Lyon's and Villeurbanne's arrivals-and-departures views, maintained in background threads."""
    conventions = {LYON: LYON_CONVENTION, VILLEURBANNE: "commune-69266-instruction-absenteisme"}
    publish_conventions(*conventions.values(), "departement-42-colleges", "region-84-lyon-lycees-mouvements")
    stop = threading.Event()
    engines = {}
    threads = []
    for commune, convention in conventions.items():
        engine = make_engine(view_url(None, settings.data_dir, f"commune-{commune}"))
        maintainer = ViewMaintainer(settings, settings.delivery_topic(convention), CommuneView(), engine)
        threads.append(threading.Thread(target=maintainer.run, args=(stop,), daemon=True))
        engines[commune] = engine
    for t in threads:
        t.start()
    yield engines
    stop.set()
    for t in threads:
        t.join(10)


def counts(engine: Engine) -> dict[str, int]:
    with engine.connect() as conn:
        return movement_counts(conn)


def test_enrolment_reaches_the_commune_view_and_a_transfer_moves_the_child(
    settings: Settings, commune_views: dict[str, Engine], processor
) -> None:
    processor()
    with EventProducer(settings) as producer:
        producer.send(make_event("enrolment", commune=LYON, school=LYCEE_DU_PARC))
    wait_for(lambda: counts(commune_views[LYON]).get("arrival") == 1, what="the enrolment in Lyon's view")

    villeurbanne_lycee = "0690103M"  # Lycée Frédéric Faÿs, Villeurbanne
    with EventProducer(settings) as producer:
        producer.send(
            make_event(
                "transfer",
                commune=LYON,
                school=LYCEE_DU_PARC,
                payload={
                    "level": "2nde",
                    "exit_date": "2026-10-01",
                    "destination_kind": "school",
                    "destination_school": villeurbanne_lycee,
                },
            )
        )
        producer.send(
            make_event(
                "enrolment",
                commune=LYON,
                school=villeurbanne_lycee,
                payload={"level": "2nde", "track": "GT", "entry_date": "2026-10-02", "origin_school": LYCEE_DU_PARC},
            )
        )
    wait_for(lambda: counts(commune_views[LYON]) == {"arrival": 2, "departure": 1}, what="Lyon's departure")
    wait_for(lambda: counts(commune_views[VILLEURBANNE]) == {"arrival": 1}, what="Villeurbanne's arrival")
    with commune_views[VILLEURBANNE].connect() as conn:
        (arrival,) = recent_movements(conn)
    assert arrival["school"] == villeurbanne_lycee and arrival["other_school"] == LYCEE_DU_PARC
    assert arrival["last_name"] == "Martin"  # nominative: the commune's legal basis allows it


def test_bad_records_go_to_the_dead_letter_topic_and_the_good_ones_through(
    settings: Settings, commune_views: dict[str, Engine], processor
) -> None:
    good = [make_event("enrolment", ine=f"{n:09d}AB", commune=LYON) for n in range(1, 6)]
    invalid = make_event("enrolment", ine="999999999ZZ").to_avro()
    invalid["school"] = "0690026E"  # wrong check letter: valid Avro, invalid event
    producer = make_producer(settings)
    for i, event in enumerate(good):
        producer.send(settings.raw_topic, key=event.pupil.ine.encode(), value=event_codec().encode(event.to_avro()))
        if i == 1:
            producer.send(settings.raw_topic, key=b"k1", value=b"\x00not avro at all")
        if i == 3:
            producer.send(settings.raw_topic, key=b"k2", value=event_codec().encode(invalid))
    producer.flush()
    producer.close()
    processor()

    dead = read_topic(settings, settings.deadletter_topic, 2)
    reasons = {dict(r.headers)[REASON_HEADER].decode(): dict(r.headers)[ERROR_HEADER].decode() for r in dead}
    assert set(reasons) == {"decode", "invalid"}
    assert "marker" in reasons["decode"] and "check letter" in reasons["invalid"]
    assert {r.value for r in dead} == {b"\x00not avro at all", event_codec().encode(invalid)}
    wait_for(lambda: counts(commune_views[LYON]).get("arrival") == 5, what="the five valid enrolments")
    delivered = read_topic(settings, settings.delivery_topic(LYON_CONVENTION), 5)
    assert {delivery_codec().decode(r.value)["subject"] for r in delivered} == {e.pupil.ine for e in good}
    # each delivery carries the time its source event entered the platform (for end-to-end latency)
    raw_times = {r.key: r.timestamp for r in read_topic(settings, settings.raw_topic, 7)}
    assert {r.key: r.timestamp for r in delivered} == {
        e.pupil.ine.encode(): raw_times[e.pupil.ine.encode()] for e in good
    }
