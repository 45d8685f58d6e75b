"""Kill -9 a running view process at random moments while deliveries flow; after restart the view
equals the view of an uninterrupted run of the same topic. The short version; the long one is
``make chaos`` (issue #8)."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from scolaflux.consumers.authority import Authority
from scolaflux.consumers.cli import open_engine
from scolaflux.consumers.ledger import CONTENT_TABLES
from scolaflux.consumers.runner import ViewMaintainer
from scolaflux.consumers.samples import encode, sample_stream
from scolaflux.consumers.store import (
    BOOKKEEPING_TABLES,
    applied_deliveries,
    applied_offsets,
    make_engine,
    snapshot,
)
from scolaflux.consumers.views import AuthorityView
from scolaflux.infra.kafka import make_producer
from scolaflux.infra.settings import Settings, settings_env
from sqlalchemy import Engine, create_engine, func, select, text

from tests.conftest import wait_for

pytestmark = pytest.mark.broker

LYON = Authority("commune", "69123")
POSTGRES_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
ROUNDS = 6


def start_view(settings: Settings, log: Path) -> subprocess.Popen[bytes]:
    """``scolaflux view run commune:69123`` as a child process with the test's settings."""
    with log.open("ab") as out:
        return subprocess.Popen(
            # small batches: many transactions, so that a kill often lands in the middle of one
            [
                sys.executable,
                "-m",
                "scolaflux.infra.cli",
                "view",
                "run",
                str(LYON),
                "--convention",
                LYON.demo_convention(),
                "--batch-size",
                "40",
            ],
            env={**os.environ, **settings_env(settings)},
            stdout=out,
            stderr=subprocess.STDOUT,
        )


def applied(engine: Engine) -> int:
    with engine.connect() as conn:
        return conn.execute(select(func.count()).select_from(applied_deliveries)).scalar_one()


def next_offsets(engine: Engine) -> int:
    with engine.connect() as conn:
        return conn.execute(select(func.coalesce(func.sum(applied_offsets.c.next_offset), 0))).scalar_one()


@pytest.mark.parametrize("backend", ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def test_a_view_killed_at_random_moments_ends_equal_to_an_uninterrupted_run(
    settings: Settings, topics, tmp_path: Path, backend: str
) -> None:
    if backend == "postgresql":
        settings = settings.model_copy(update={"database_url": POSTGRES_URL})
    topics(LYON.demo_convention())
    deliveries = sample_stream(LYON, seed=11, pupils=900, years=(2025, 2026))
    # keyed as the processor keys them (by subject), so one pupil's deliveries stay in order
    stream = [((d["subject"] or d["event_ref"]).encode(), encode(d)) for d in deliveries]
    missing_school = {**sample_stream(LYON, seed=1, pupils=1)[0], "school": None}
    stream[100:100] = [(b"bad", b"not a delivery"), (b"bad", encode(missing_school))]
    size = len(stream) // ROUNDS + 1
    waves = [stream[i : i + size] for i in range(0, len(stream), size)]
    producer = make_producer(settings)
    rng = random.Random(2026)
    engine = open_engine(settings, LYON)
    kills = 0
    process: subprocess.Popen[bytes] | None = None
    try:
        for wave in waves:
            for key, value in wave:
                producer.send(settings.delivery_topic(LYON.demo_convention()), key=key, value=value)
            producer.flush()
            before = applied(engine)
            process = start_view(settings, tmp_path / "view.log")
            wait_for(lambda b=before: applied(engine) > b, timeout=60, what="the view to apply part of the wave")
            time.sleep(rng.uniform(0, 0.4))  # a random moment, on purpose: mid-batch or between batches
            process.send_signal(signal.SIGKILL)
            process.wait()
            kills += 1
        process = start_view(settings, tmp_path / "view.log")
        try:
            wait_for(lambda: next_offsets(engine) == len(stream), timeout=120, what="the restarted view to catch up")
        finally:
            process.terminate()
            process.wait(30)
        reference = uninterrupted(settings, tmp_path)
        tables = [*CONTENT_TABLES, *BOOKKEEPING_TABLES]
        crashed, calm = snapshot(engine, tables), snapshot(reference, tables)
        differences = {name: len(set(crashed[name]) ^ set(calm[name])) for name in crashed}
        print(f"{backend}: {kills} kills, {len(stream)} records, differences {differences}")
        assert differences == dict.fromkeys(differences, 0)
        assert len(crashed["movements"]) > 500 and len(crashed["rejected_deliveries"]) == 2
    finally:
        if process is not None and process.poll() is None:
            process.kill()
            process.wait()
        producer.close()
        if backend == "postgresql":
            drop_schemas(settings.topic_prefix)


def uninterrupted(settings: Settings, tmp_path: Path) -> Engine:
    """The same topic applied by one maintainer that nobody kills, into a SQLite file of its own."""
    engine = make_engine(f"sqlite:///{tmp_path / 'reference.sqlite'}")
    maintainer = ViewMaintainer(
        settings, [settings.delivery_topic(LYON.demo_convention())], AuthorityView(LYON), engine
    )
    maintainer.catch_up(timeout=120)
    return engine


def drop_schemas(prefix: str) -> None:
    admin = create_engine(POSTGRES_URL)
    with admin.begin() as conn:
        for (schema,) in conn.execute(
            text("SELECT schema_name FROM information_schema.schemata WHERE schema_name LIKE :p"), {"p": f"{prefix}_%"}
        ):
            conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
    admin.dispose()
