"""The snapshot-diff import on the real broker: the events it reports are on the raw topic, keyed
by pupil; the same pair imported again adds nothing, and forced again adds only exact copies."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
from scolaflux.infra.settings import Settings
from scolaflux.producers.kafka import EventProducer
from scolaflux.producers.snapshot import Ledger, import_snapshot
from scolaflux.producers.snapshot_sample import write_sample_pair
from scolaflux.schemas.geography import load_geography
from scolaflux.schemas.validation import parse_event

from tests.test_producer_outage import read_all

pytestmark = pytest.mark.broker


def test_importing_a_pair_twice_emits_nothing_new(settings: Settings, topics, tmp_path: Path) -> None:
    topics()
    geography = load_geography(["69"])
    previous, current = tmp_path / "previous.csv", tmp_path / "current.csv"
    write_sample_pair(previous, current, geography, ["69"], 2_000, seed=21)
    ledger = Ledger(tmp_path / "ledger")

    def run() -> tuple[int, bool]:
        with EventProducer(settings) as producer:
            report = import_snapshot(
                previous, current, producer, geography, as_of=dt.date(2026, 12, 1),
                rejects_path=tmp_path / "rejects.csv", ledger=ledger,
            )  # fmt: skip
        return report.sent, report.already_imported

    sent, _ = run()
    first = read_all(settings, settings.raw_topic)
    assert len(first) == sent > 100
    assert all(r.key == parse_event(r.value).pupil.ine.encode() for r in first)

    assert run() == (0, True)
    assert len(read_all(settings, settings.raw_topic)) == sent

    ledger = None  # type: ignore[assignment]  # as --force does
    resent, _ = run()
    again = read_all(settings, settings.raw_topic)
    assert resent == sent and len(again) == 2 * sent
    ids = [str(parse_event(r.value).event_id) for r in again]
    assert set(ids) == {str(parse_event(r.value).event_id) for r in first}, "a forced import made new events"
    assert len(set(ids)) == sent, "deduplicated by event id, the topic holds the first import exactly"
