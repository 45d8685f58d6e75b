"""The ingest endpoint on the real broker: authenticated per source, answered after the broker's
acknowledgement, per-item results in a batch, rejects named by field and rule and dead-lettered."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from scolaflux.infra.broker import EmbeddedBroker
from scolaflux.infra.kafka import ERROR_HEADER, ORIGIN_HEADER, REASON_HEADER, TopicSpec, ensure_topics
from scolaflux.infra.settings import Settings
from scolaflux.producers.ingest import SourceRegistry, create_app, new_token, token_digest
from scolaflux.producers.kafka import EventProducer
from scolaflux.schemas.errors import ConfigError
from scolaflux.schemas.validation import parse_event

from tests.conftest import make_event, read_topic

LYON_TOKEN, NANTES_TOKEN = new_token(), new_token()
ONE, DIGEST = "sources:\n  - id: a\n    ", "a" * 64


def sources_file(path: Path) -> Path:
    path.write_text(
        f"""sources:
  - id: siecle-lyon
    academy: "10"
    systems: [SIECLE, ONDE]
    token_sha256: {token_digest(LYON_TOKEN)}
  - id: siecle-nantes
    academy: "17"
    token_sha256: {token_digest(NANTES_TOKEN)}
""",
        encoding="utf-8",
    )
    return path


def as_json(**kw: Any) -> dict[str, Any]:
    return json.loads(make_event(**kw).model_dump_json())


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
def client(settings: Settings, topics, tmp_path: Path) -> Iterator[TestClient]:
    topics()
    registry = SourceRegistry.load(sources_file(tmp_path / "sources.yaml"))
    with EventProducer(settings) as producer:
        yield TestClient(create_app(registry, producer, settings.deadletter_topic, ack_timeout=30))


# --------------------------------------------------------------------------- without a broker


def test_tokens_are_stored_hashed_and_only_a_declared_token_authenticates(tmp_path: Path) -> None:
    path = sources_file(tmp_path / "sources.yaml")
    assert LYON_TOKEN not in path.read_text(encoding="utf-8")
    registry = SourceRegistry.load(path)
    assert registry.authenticate(LYON_TOKEN).id == "siecle-lyon"  # type: ignore[union-attr]
    assert registry.authenticate(NANTES_TOKEN).academy == "17"  # type: ignore[union-attr]
    assert registry.authenticate(LYON_TOKEN + "x") is None
    assert registry.authenticate("") is None


@pytest.mark.parametrize(
    ("text", "field", "rule"),
    [
        (f"{ONE}academy: '1'\n    token_sha256: {DIGEST}", "sources.0.academy", "pattern"),
        (f"{ONE}academy: '10'\n    token_sha256: abc", "sources.0.token_sha256.0", "pattern"),
        (f"{ONE}academy: '10'\n    token_sha256: 1234", "sources.0.token_sha256.0", "string"),
        (f"{ONE}academy: '10'\n    token: x\n    token_sha256: {DIGEST}", "sources.0.token", "Extra"),
        ("sources: [", "(file)", "not valid YAML"),
    ],
)
def test_a_wrong_sources_file_names_the_file_the_field_and_the_rule(
    tmp_path: Path, text: str, field: str, rule: str
) -> None:
    path = tmp_path / "sources.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError) as error:
        SourceRegistry.load(path)
    assert error.value.file == str(path) and error.value.field == field and rule in error.value.rule


# --------------------------------------------------------------------------- on the broker


@pytest.mark.broker
def test_an_unauthenticated_call_is_refused(client: TestClient) -> None:
    assert client.post("/events", json=as_json()).status_code == 401
    assert client.post("/events", json=as_json(), headers=auth("not-a-token")).status_code == 401
    assert client.post("/events", json=as_json(), headers={"Authorization": LYON_TOKEN}).status_code == 401


@pytest.mark.broker
def test_one_event_is_answered_once_the_broker_has_it(client: TestClient, settings: Settings) -> None:
    event = as_json(ine="123456789AB")
    answer = client.post("/events", json=event, headers=auth(LYON_TOKEN))
    assert answer.status_code == 200, answer.text
    assert answer.json() == {"index": 0, "status": "accepted", "event_id": event["event_id"]}
    (record,) = read_topic(settings, settings.raw_topic, 1, timeout=10)
    assert record.key == b"123456789AB"
    assert str(parse_event(record.value).event_id) == event["event_id"]


@pytest.mark.broker
def test_a_batch_says_per_item_what_happened_and_loses_none_of_the_good(client: TestClient, settings: Settings) -> None:
    good = [as_json(ine=f"10000000{i}AB") for i in range(3)]
    bad_ine = as_json()
    bad_ine["pupil"]["ine"] = "12345"
    bad_ine["event_id"] = str(uuid.uuid4())
    other_academy = as_json(source={"system": "SIECLE", "academy": "17"})
    wrong_system = as_json(source={"system": "ATTENDANCE", "academy": "10"})
    batch = [good[0], bad_ine, good[1], other_academy, "not an object", wrong_system, good[2]]

    answer = client.post("/events", json=batch, headers=auth(LYON_TOKEN))
    assert answer.status_code == 207, answer.text
    body = answer.json()
    assert (body["accepted"], body["rejected"], body["failed"]) == (3, 4, 0)
    items = body["items"]
    assert [i["status"] for i in items] == [
        "accepted",
        "rejected",
        "accepted",
        "rejected",
        "rejected",
        "rejected",
        "accepted",
    ]
    assert items[1]["errors"][0]["field"] == "pupil.ine" and "RNIE" in items[1]["errors"][0]["rule"]
    assert "12345" not in json.dumps(items[1]["errors"])
    assert items[3]["errors"] == [
        {"field": "source.academy", "rule": "this source may only send events of académie 10"}
    ]
    assert items[4]["errors"][0]["rule"] == "must be a JSON object"
    assert items[5]["errors"][0]["field"] == "source.system"

    raw = read_topic(settings, settings.raw_topic, 3, timeout=10)
    assert sorted(str(parse_event(r.value).event_id) for r in raw) == sorted(e["event_id"] for e in good)
    dead = read_topic(settings, settings.deadletter_topic, 4, timeout=10)
    assert len(dead) == 4
    headers = dict(dead[0].headers)
    assert headers[REASON_HEADER] == b"invalid" and headers[ORIGIN_HEADER] == b"ingest:siecle-lyon"
    assert b"pupil.ine" in headers[ERROR_HEADER]
    registry = client.app.state.metrics.registry  # type: ignore[attr-defined]
    produced = {"topic": settings.raw_topic, "event_type": "enrolment"}
    assert registry.get_sample_value("scolaflux_events_produced_total", produced) == 3
    assert registry.get_sample_value("scolaflux_deadletter_records_total", {"reason": "invalid"}) == 4


@pytest.mark.broker
def test_a_batch_of_only_bad_events_is_a_4xx_and_a_body_that_is_not_json_too(client: TestClient) -> None:
    bad = as_json()
    bad["school"] = "0690026X"
    answer = client.post("/events", json=[bad], headers=auth(LYON_TOKEN))
    assert answer.status_code == 422
    assert answer.json()["items"][0]["errors"][0]["field"] == "school"
    single = client.post("/events", json=bad, headers=auth(LYON_TOKEN))
    assert single.status_code == 422 and single.json()["status"] == "rejected"
    assert client.post("/events", content=b"{nope", headers=auth(LYON_TOKEN)).status_code == 400
    assert client.post("/events", json="text", headers=auth(LYON_TOKEN)).status_code == 400


@pytest.mark.broker
def test_events_the_broker_does_not_acknowledge_in_time_are_a_503_to_send_again(tmp_path: Path) -> None:
    """Against a broker of its own, paused: the answer waits for the acknowledgement, then says so."""
    with EmbeddedBroker(tmp_path / "broker.log") as broker:
        settings = Settings(kafka_bootstrap=broker.bootstrap, topic_prefix="ingest503", data_dir=tmp_path)
        ensure_topics(settings, [TopicSpec(settings.raw_topic, 1), TopicSpec(settings.deadletter_topic, 1)])
        registry = SourceRegistry.load(sources_file(tmp_path / "sources.yaml"))
        producer = EventProducer(settings)
        client = TestClient(create_app(registry, producer, settings.deadletter_topic, ack_timeout=2))
        broker.pause()
        try:
            answer = client.post("/events", json=[as_json()], headers=auth(LYON_TOKEN))
        finally:
            broker.resume()
        assert answer.status_code == 503
        assert answer.json()["items"][0]["status"] == "failed"
        producer.close()  # once the broker is back, the queued event is delivered after all
