"""The benchmark still works: a quick run of its fast sections on the session broker, and its figures.

No timed assertion here: speed is what the benchmark prints, not what a test asserts.
"""

from __future__ import annotations

import json
import math
import os
import time
import uuid
from pathlib import Path

import pytest
from rich.console import Console
from scolaflux.infra.bench.conventions import synthetic_conventions
from scolaflux.infra.bench.core import avro_timer
from scolaflux.infra.bench.figures import Figure, Goal, Report, format_value
from scolaflux.infra.bench.processor import Delivered, audit_identity, compare
from scolaflux.infra.bench.records import end_offsets, produce
from scolaflux.infra.bench.run import run_benchmark
from scolaflux.infra.bench.table import notes
from scolaflux.infra.bench.workers import CpuUse, cpu_seconds, high_water_mark
from scolaflux.infra.kafka import TopicSpec, ensure_topics
from scolaflux.infra.settings import Settings
from scolaflux.processors.conventions import convention_rules
from scolaflux.schemas.codec import Codec, audit_codec
from scolaflux.schemas.geography import load_geography

AUDIT_RECORD = {
    "delivery_id": str(uuid.uuid4()),
    "event_id": str(uuid.uuid4()),
    "event_type": "enrolment",
    "event_time": 1_788_000_000_000,
    "pupil": "3162fc76d58e7229cb152908e6e41367",
    "convention_id": "commune-69123-instruction",
    "convention_version": 2,
    "authority_level": "commune",
    "authority_code": "69123",
    "identity_treatment": "nominative",
    "fields": ["level"],
    "delivered_at": 1_788_000_100_000,
    "mode": "live",
}


def test_median_spread_goal_and_ratio_to_the_ceiling() -> None:
    report = Report(runs=3, quick=False, broker="here")
    report.add(Figure("ceiling.passthrough", "ceiling", "rate", versus_ceiling=True, values=[100.0, 300.0, 200.0]))
    rate = report.add(Figure("x", "x", "rate", Goal(60.0, at_least=True), versus_ceiling=True, values=[50, 70, 90]))
    latency = report.add(Figure("p99", "p99", "seconds", Goal(0.25, at_least=False), values=[0.3, 0.2, 0.4]))
    assert (rate.median, rate.low, rate.high, rate.meets()) == (70, 50, 90, True)
    assert latency.meets() is False
    figures = {f["key"]: f for f in report.as_json()["figures"]}
    assert figures["x"]["ratio_to_ceiling"] == pytest.approx(0.35)
    assert figures["p99"]["ratio_to_ceiling"] is None
    assert format_value(0.25, "seconds") == "250.0 ms" and format_value(2.5e-5, "seconds") == "25.0 µs"


def test_synthetic_conventions_pass_the_processors_rules() -> None:
    geography = load_geography()
    conventions = synthetic_conventions(geography, 300)
    assert len({c.id for c in conventions}) == 300
    assert {c.authority.level for c in conventions} == {"commune", "departement", "region"}
    assert len({c.academy for c in conventions}) > 1
    assert all(not list(convention_rules(c, geography)) for c in conventions)


@pytest.mark.broker
def test_quick_benchmark_prints_and_writes_its_figures(bootstrap: str, tmp_path: Path) -> None:
    settings = Settings(kafka_bootstrap=bootstrap, kafka_idempotence=False, data_dir=tmp_path)
    console = Console(record=True, width=200)
    out = tmp_path / "bench.json"
    sections = ("ceiling", "core", "headcounts")
    run_benchmark(settings, runs=2, quick=True, sections=sections, json_path=out, console=console)
    data = json.loads(out.read_text())
    figures = {f["key"]: f for f in data["figures"]}
    expected = {
        "ceiling.produce",
        "ceiling.consume",
        "ceiling.passthrough",
        "core.pipeline",
        "core.without_avro",
        "routing.ratio",
    }
    assert expected | {"headcounts.memory", "headcounts.memory.dicts", "headcounts.rate"} <= set(figures)
    for figure in figures.values():
        assert figure["error"] is None, figure
        assert len(figure["values"]) == 2 and all(v > 0 and math.isfinite(v) for v in figure["values"])
        assert figure["min"] <= figure["median"] <= figure["max"]
    assert data["ceiling"] == figures["ceiling.passthrough"]["median"]
    assert figures["core.pipeline"]["ratio_to_ceiling"] == pytest.approx(
        figures["core.pipeline"]["median"] / data["ceiling"]
    )
    assert figures["core.without_avro"]["median"] >= figures["core.pipeline"]["median"]
    assert figures["routing.ratio"]["meets_goal"] in (True, False)
    assert all(data[at]["probe_seconds"] > 0 for at in ("machine_at_start", "machine_at_end"))
    printed = console.export_text()
    assert "routing cost per event" in printed and "x ceiling" in printed
    assert "sum(range(1_000_000))` at start and end" in printed


@pytest.mark.broker
def test_a_failing_section_is_reported_and_the_others_still_run(bootstrap: str, tmp_path: Path) -> None:
    settings = Settings(kafka_bootstrap=bootstrap, kafka_idempotence=False, data_dir=tmp_path)
    console = Console(record=True, width=200)
    report = run_benchmark(
        settings,
        runs=1,
        quick=True,
        sections=("ceiling", "views"),
        json_path=tmp_path / "bench.json",
        postgres_url="postgresql+psycopg://nobody@127.0.0.1:1/none",
        console=console,
    )
    assert report.figures["ceiling.passthrough"].values
    cpu, bound = report.figures["views.sqlite.cpu"], report.figures["views.sqlite.without_avro"]
    assert report.figures["views.sqlite"].values and bound.values[0] > 1 / cpu.values[0]  # SQLite ran, decode timed
    postgres = report.figures["views.postgresql"]
    assert not postgres.values and postgres.error
    assert any("views.postgresql" in line and "not measured" in line for line in notes(report))


def test_two_deployments_compare_on_event_deliveries_and_final_cells() -> None:
    first = Delivered(events={b"a", b"b"}, cell_updates={"x", "y"}, cells={("c", "0690026D", "2nde"): 7})
    same = Delivered(events={b"b", b"a"}, cell_updates={"x", "z"}, cells={("c", "0690026D", "2nde"): 7})
    assert compare(first, same) == ""  # which movement published a cell may differ; its final count may not
    lost = Delivered(events={b"a"}, cells={("c", "0690026D", "2nde"): 6})
    assert "1 only in the first" in compare(first, lost) and "1 of 1 end with different counts" in compare(first, lost)


def test_an_audit_records_identity_is_its_delivery_id_read_from_the_bytes() -> None:
    record = AUDIT_RECORD
    again = audit_codec().encode({**record, "delivered_at": 1_788_000_200_000})  # the same delivery redone
    other = audit_codec().encode({**record, "delivery_id": str(uuid.uuid4())})
    identity = audit_identity(audit_codec().encode(record))
    assert identity.endswith(record["delivery_id"].encode())
    assert identity == audit_identity(again) != audit_identity(other)


def test_the_avro_timer_counts_codec_calls_and_puts_the_codec_back() -> None:
    codec, methods = audit_codec(), (Codec.decode, Codec.encode)
    with avro_timer() as spent:
        assert spent() == 0
        for _ in range(100):
            assert codec.decode(codec.encode(AUDIT_RECORD))["delivery_id"] == AUDIT_RECORD["delivery_id"]
        inside = spent()
    assert inside > 0 and (Codec.decode, Codec.encode) == methods
    codec.decode(codec.encode(AUDIT_RECORD))
    assert spent() == inside  # nothing counted once the block is left


def test_peak_memory_is_read_from_the_process_itself() -> None:
    peak = high_water_mark(os.getpid())
    assert peak is not None and peak > 10_000_000
    assert high_water_mark(2**22 + 12345) is None  # no such process


def test_cpu_time_is_read_from_the_process_itself() -> None:
    before = cpu_seconds(os.getpid())
    deadline = time.thread_time() + 0.2
    while time.thread_time() < deadline:  # burn 0.2 s of CPU in this thread (so 0.2 s pass, whatever other threads do)
        pass
    after = cpu_seconds(os.getpid())
    assert before is not None and after is not None and after - before >= 0.1
    assert cpu_seconds(2**22 + 12345) is None  # no such process


def test_cpu_use_counts_a_process_and_the_whole_machine() -> None:
    use = CpuUse({"me": [os.getpid()], "gone": [2**22 + 12345]}).start()
    deadline = time.thread_time() + 0.2
    while time.thread_time() < deadline:  # burn 0.2 s of CPU in this thread (so 0.2 s pass, whatever other threads do)
        pass
    used, seconds = use.used()
    assert used["me"] >= 0.1 and used["gone"] == 0
    # counted in clock ticks, each core's and the process's rounded at both ends (other threads of this
    # process busy on the other core: up to 40 ms apart, seen here)
    slack = (2 * (os.cpu_count() or 1) + 2) / os.sysconf("SC_CLK_TCK")
    assert used["machine"] >= used["me"] - slack
    assert seconds >= 0.2


@pytest.mark.broker
def test_end_offsets_count_every_record_of_big_batches(bootstrap: str) -> None:
    # the embedded broker answers ListOffsets with the last batch's base offset + 1
    topic = f"bench-ends-{uuid.uuid4().hex[:6]}"
    empty = f"{topic}-empty"
    ensure_topics(Settings(kafka_bootstrap=bootstrap), [TopicSpec(topic, 3), TopicSpec(empty, 2)])
    produce(bootstrap, topic, [(None, b"x" * 100)] * 5_000)
    ends = end_offsets(bootstrap, [topic, empty])
    assert sum(ends.values()) == 5_000
    assert ends[(empty, 0)] == ends[(empty, 1)] == 0
