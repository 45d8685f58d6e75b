"""Stream health against a real running pipeline: producer → faust processor → Lyon's view.

One processor start for the whole story: a slowed view falls behind (WARNING, lag in seconds
growing) while the processor keeps up (OK); the processor's /metrics counts what it did and its
health endpoints answer; then the view and the processor stop while events keep coming: both
groups turn STOPPED, in the sampler, in the monitor's gauges and in ``scolaflux status --json``.
"""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from scolaflux.consumers.authority import Authority
from scolaflux.consumers.runner import ViewMaintainer
from scolaflux.consumers.store import open_view_engine
from scolaflux.consumers.views import AuthorityView
from scolaflux.infra.broker import free_port
from scolaflux.infra.kafka import ensure_topics, make_producer, pipeline_topics
from scolaflux.infra.lag import LagReader
from scolaflux.infra.metrics import Metrics
from scolaflux.infra.processes import start_processor, stop_process
from scolaflux.infra.settings import Settings, settings_env
from scolaflux.infra.status import GroupReport, Sampler, StatusReport
from scolaflux.infra.status_cli import run_monitor
from scolaflux.processors.conventions import load_convention
from scolaflux.processors.publish import publish
from scolaflux.processors.wiring import processor_topics
from scolaflux.producers.kafka import EventProducer

from tests.conftest import make_event, wait_for

pytestmark = pytest.mark.broker

ROOT = Path(__file__).resolve().parent.parent
LYON = Authority.parse("commune:69123")
CONVENTION = "commune-69123-instruction"
LYCEE_DU_PARC = "0690026D"  # Lyon
RATE = 40.0  # events per second, all to Lyon's view
SLOWED_BATCH, SLOWED_PAUSE = 10, 0.5  # the slowed view applies at most 20 deliveries a second


def slowed(maintainer: ViewMaintainer) -> Callable[[threading.Event], None]:
    """Lyon's view maintainer, slowed down: one partition at a time, a small batch, then a pause.

    It applies at most ``SLOWED_BATCH / SLOWED_PAUSE`` deliveries a second: less than ``RATE``.
    """

    def run(stop: threading.Event) -> None:
        maintainer.batch_size = SLOWED_BATCH
        consumer = maintainer.open_consumer()  # a new view: from the beginning
        try:
            partitions = consumer.assignment()
            for turn in itertools.cycle(partitions):
                if stop.is_set():
                    break
                consumer.pause(partitions)
                consumer.resume([turn])
                maintainer.poll_once(consumer)
                stop.wait(SLOWED_PAUSE)
        finally:
            consumer.close()

    return run


class Background:
    """Threads that run until their event is set."""

    def __init__(self) -> None:
        self.threads: list[tuple[threading.Thread, threading.Event]] = []

    def start(self, target: Callable[[threading.Event], None]) -> threading.Event:
        stop = threading.Event()
        thread = threading.Thread(target=target, args=(stop,), daemon=True)
        thread.start()
        self.threads.append((thread, stop))
        return stop

    def stop(self, stop: threading.Event) -> None:
        stop.set()
        for thread, event in self.threads:
            if event is stop:
                thread.join(30)
                assert not thread.is_alive()

    def stop_all(self) -> None:
        for _thread, stop in self.threads:
            stop.set()
        for thread, _stop in self.threads:
            thread.join(30)


@pytest.fixture
def background() -> Iterator[Background]:
    threads = Background()
    yield threads
    threads.stop_all()


def produce(settings: Settings, sent: list[str]) -> Callable[[threading.Event], None]:
    """A source sending Lyon residents' enrolments at ``RATE`` a second (INEs kept in ``sent``)."""

    def run(stop: threading.Event) -> None:
        with EventProducer(settings) as producer:
            n = 0
            while not stop.is_set():
                began = time.monotonic()
                for _ in range(int(RATE / 10)):
                    n += 1
                    ine = f"{n:09d}AB"
                    producer.send(make_event("enrolment", ine=ine, commune=LYON.code, school=LYCEE_DU_PARC))
                    sent.append(ine)
                producer.flush()
                stop.wait(max(0.0, 0.1 - (time.monotonic() - began)))

    return run


def group(report: StatusReport, group_id: str) -> GroupReport | None:
    return next((g for g in report.groups if g.group == group_id), None)


def test_verdicts_lag_and_metrics_follow_a_running_pipeline(settings: Settings, background: Background) -> None:
    settings = settings.model_copy(update={"metrics_port": free_port()})
    assert settings.kafka_bootstrap
    ensure_topics(settings, [*pipeline_topics(settings), *processor_topics(settings)])
    publish(settings, [(CONVENTION, load_convention(ROOT / "conventions" / f"{CONVENTION}.yaml"))])
    processor = start_processor(settings, settings.data_dir / "processor.log")
    try:
        engine = open_view_engine(None, settings.data_dir / "views", LYON, settings.topic_prefix)
        maintainer = ViewMaintainer(
            settings, [settings.delivery_topic(CONVENTION)], AuthorityView(LYON), engine, metrics=Metrics()
        )
        view_group, processor_group = settings.view_group_id(str(LYON)), settings.processor_group_id
        assert maintainer.group_id == view_group
        sent: list[str] = []
        background.start(produce(settings, sent))
        view = background.start(slowed(maintainer))
        bad = make_producer(settings)
        bad.send(settings.raw_topic, key=b"k", value=b"\x00not avro").get(30)
        bad.close()

        # A slowed view: WARNING, and the age of its oldest unapplied delivery grows.
        reader = LagReader(settings)
        sampler = Sampler(settings, reader, max_samples=6)  # > faust's 2.8 s commit interval
        reports: list[StatusReport] = []

        def sample() -> StatusReport:
            sampler.sample()
            reports.append(sampler.report())
            return reports[-1]

        def falling_behind() -> bool:
            report = sample()
            mine, proc = group(report, view_group), group(report, processor_group)
            ages = [g.lag_seconds for r in reports[-3:] if (g := group(r, view_group)) and g.lag_seconds is not None]
            return bool(
                mine
                and proc
                and mine.status == "WARNING"
                and proc.status == "OK"
                and len(ages) == 3
                and ages[0] < ages[1] < ages[2]
            )

        wait_for(
            falling_behind,
            timeout=150,
            interval=1.0,
            what="the slowed view to fall behind while the processor keeps up",
        )
        last = reports[-1]
        (lyon,) = [a for a in last.authorities if a.authority == str(LYON)]
        assert lyon.freshness_seconds and lyon.freshness_seconds > 0 and lyon.lag > 0
        assert last.rejects.total >= 1  # the record that was not Avro went to the dead-letter topic

        # The processor's own endpoints: what it consumed and delivered, alive and ready.
        base = f"http://127.0.0.1:{settings.metrics_port}"

        def scrape() -> str:
            try:
                return httpx.get(f"{base}/metrics", timeout=5).text
            except httpx.HTTPError:
                return ""

        delivered = f'scolaflux_deliveries_total{{convention="{CONVENTION}"}}'
        text = wait_for(lambda: t if delivered in (t := scrape()) else "", timeout=30, what="the processor's /metrics")
        assert f'scolaflux_events_consumed_total{{topic="{settings.raw_topic}"}}' in text
        assert 'scolaflux_deadletter_records_total{reason="decode"} 1.0' in text
        for stage in ("conventions", "pipeline", "acknowledgements", "commit"):  # each batch, stage by stage
            assert f'scolaflux_processor_batch_stage_seconds_count{{stage="{stage}"}}' in text
        assert "scolaflux_processor_fetched_age_seconds_count" in text
        assert not [ine for ine in sent[:200] if ine in text], "no pupil identifier in any metric"
        assert httpx.get(f"{base}/livez", timeout=5).status_code == 200
        assert httpx.get(f"{base}/readyz", timeout=5).status_code == 200

        # The view and the processor stop; events keep coming: both groups are STOPPED.
        background.stop(view)
        stop_process(processor)

        def both_stopped() -> bool:
            report = sample()
            return all((g := group(report, gid)) and g.status == "STOPPED" for gid in (view_group, processor_group))

        wait_for(both_stopped, timeout=60, interval=1.0, what="both groups to be judged STOPPED")
        reader.close()

        # The monitor exports the same verdicts for Prometheus…
        monitor_settings = settings.model_copy(update={"metrics_port": free_port()})
        background.start(lambda stop: run_monitor(monitor_settings, 0.5, 4, stop))
        gauge = f'scolaflux_consumer_group_status{{group="{view_group}",status="STOPPED"}} 1.0'
        monitor = f"http://127.0.0.1:{monitor_settings.metrics_port}"

        def monitor_says_stopped() -> bool:
            try:
                return gauge in httpx.get(f"{monitor}/metrics", timeout=5).text
            except httpx.HTTPError:
                return False

        wait_for(monitor_says_stopped, timeout=30, what="the monitor's gauge")
        assert httpx.get(f"{monitor}/readyz", timeout=5).status_code == 200
        freshness = f'scolaflux_view_freshness_seconds{{authority="{LYON}"}}'
        assert freshness in httpx.get(f"{monitor}/metrics", timeout=5).text

        # …and `scolaflux status --json` says so and exits non-zero.
        cli = subprocess.run(
            [sys.executable, "-m", "scolaflux.infra.cli", "status", "--json", "--window", "3", "--interval", "1"],
            env={**os.environ, **settings_env(settings)},
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert cli.returncode == 1, cli.stderr
        document = json.loads(cli.stdout)
        statuses = {g["group"]: g["status"] for g in document["groups"]}
        assert statuses[view_group] == "STOPPED" and statuses[processor_group] == "STOPPED"
        assert document["ok"] is False
        assert [a["authority"] for a in document["authorities"]] == [str(LYON)]
    finally:
        stop_process(processor)
