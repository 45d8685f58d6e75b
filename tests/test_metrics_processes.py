"""Every long-running process serves /metrics, /livez and /readyz: a view maintainer and the
monitor, run as the commands an operator runs (the processor's are in test_status_pipeline.py)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator

import httpx
import pytest
from scolaflux.infra.broker import free_port
from scolaflux.infra.kafka import TopicSpec, ensure_topics, pipeline_topics
from scolaflux.infra.settings import Settings, settings_env

from tests.conftest import wait_for

pytestmark = pytest.mark.broker


@pytest.fixture
def command(settings: Settings) -> Iterator[Callable[..., tuple[subprocess.Popen[bytes], str]]]:
    """Start ``scolaflux ARGS`` with the test's settings and a metrics port of its own."""
    started: list[subprocess.Popen[bytes]] = []

    def start(*args: str) -> tuple[subprocess.Popen[bytes], str]:
        port = free_port()
        env = {**os.environ, **settings_env(settings), "SCOLAFLUX_METRICS_PORT": str(port)}
        process = subprocess.Popen(
            [sys.executable, "-m", "scolaflux.infra.cli", *args],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        started.append(process)
        return process, f"http://127.0.0.1:{port}"

    yield start
    for process in started:
        if process.poll() is None:
            process.kill()
            process.wait()


def get(url: str) -> httpx.Response | None:
    try:
        return httpx.get(url, timeout=5)
    except httpx.HTTPError:
        return None


def ready(base: str) -> bool:
    response = get(f"{base}/readyz")
    return response is not None and response.status_code == 200


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (("view", "run", "commune:69123", "--convention", "c1"), "scolaflux_view_deliveries_applied_total"),
        (("monitor", "--interval", "0.5"), "scolaflux_consumer_group_status"),
    ],
    ids=["view", "monitor"],
)
def test_a_process_is_live_ready_and_scraped_then_stops_cleanly(
    settings: Settings, command, args: tuple[str, ...], expected: str
) -> None:
    assert settings.kafka_bootstrap
    ensure_topics(settings, [*pipeline_topics(settings), TopicSpec(settings.delivery_topic("c1"), 3)])
    process, base = command(*args)
    wait_for(lambda: ready(base) or process.poll() is not None, timeout=60, what=f"{args[0]} to be ready")
    assert process.poll() is None, process.stderr.read().decode() if process.stderr else ""
    live = get(f"{base}/livez")
    assert live is not None and live.status_code == 200 and live.json()["ok"] is True
    scrape = get(f"{base}/metrics")
    assert scrape is not None and scrape.status_code == 200
    assert f"# TYPE {expected.removesuffix('_total')}" in scrape.text
    process.send_signal(signal.SIGTERM)
    assert process.wait(30) == 0
    assert get(f"{base}/livez") is None, "the endpoints go with the process"
