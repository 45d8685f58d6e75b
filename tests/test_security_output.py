"""No secret and no pupil identifier in what the running feed says: a short `scolaflux demo` (simulator
-> processor -> views -> views API, real processes on the test broker) with logging at INFO, its
output and its processes' log files, the /metrics of the views and of the processor, and the views
API's error answers, scanned for every INE and name of the events produced, the pseudonym master key
(and the keys derived from it) and the API tokens."""

from __future__ import annotations

import itertools
import os
import re
import secrets
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from scolaflux.infra.settings import Settings, settings_env
from scolaflux.processors.conventions import load_directory
from scolaflux.processors.identity import audit_key, convention_key
from scolaflux.producers.simulator import Simulator
from scolaflux.schemas.geography import load_geography

from tests.conftest import EXAMPLE_CONVENTIONS, wait_for

pytestmark = pytest.mark.broker

SEED, PUPILS, RATE, DURATION = 7, 60, 300, 20
RUN = (
    "import logging, sys; logging.basicConfig(level=logging.INFO); "
    "from scolaflux.infra.cli import app; sys.argv = ['scolaflux', *sys.argv[1:]]; app()"
)


def produced_identities(count: int) -> tuple[set[str], set[str]]:
    """INEs, and last and first names, of the first ``count`` events the demo's simulator makes."""
    conventions = load_directory(EXAMPLE_CONVENTIONS)
    communes = sorted({c.authority.code for c in conventions if c.authority.level == "commune"})
    simulator = Simulator(load_geography(), communes, seed=SEED, pupils_per_commune=PUPILS)
    ines: set[str] = set()
    names: set[str] = set()
    for record in itertools.islice(simulator.records(), count):
        pupil = record["pupil"]
        ines.add(pupil["ine"])
        names |= {pupil["last_name"], pupil["first_name"]}
    return ines, names


def get(url: str, headers: dict[str, str] | None = None) -> tuple[int, str]:
    try:
        answer = httpx.get(url, headers=headers, timeout=10)
    except httpx.TransportError:
        return 0, ""  # not listening yet
    return answer.status_code, f"{answer.headers}\n{answer.text}"


def leaks(text: str, secrets_: set[str], names: set[str]) -> set[str]:
    """The secrets and INEs found anywhere in ``text``, and the names found as whole words (a name
    inside a longer word, such as "Martin" in "Saint-Martin", is not a name)."""
    found = {s for s in secrets_ if s in text}
    return found | {n for n in names if re.search(rf"(?<![\w-]){re.escape(n)}(?![\w-])", text)}


def test_a_short_run_says_no_pupil_identifier_and_no_secret(settings: Settings, tmp_path: Path) -> None:
    key = f"test-master-key-{secrets.token_hex(16)}"
    env = {
        **os.environ,
        **settings_env(settings),
        "SCOLAFLUX_PSEUDONYM_KEY": key,
        "SCOLAFLUX_CONVENTIONS_DIR": str(EXAMPLE_CONVENTIONS),
        "SCOLAFLUX_KAFKA_IDEMPOTENCE": "false",
        "PYTHONUNBUFFERED": "1",
        "COLUMNS": "200",
    }
    args = ["demo", "--duration", str(DURATION), "--rate", str(RATE), "--pupils", str(PUPILS), "--seed", str(SEED)]
    out_path, err_path = tmp_path / "demo.out", tmp_path / "demo.err"
    with out_path.open("wb") as out, err_path.open("wb") as err:
        demo = subprocess.Popen([sys.executable, "-c", RUN, *args], env=env, stdout=out, stderr=err)
        try:
            first = wait_for(
                lambda: re.search(
                    r"views (\S+)/metrics, processor (\S+)/metrics\s+web pages: (\S+)/", out_path.read_text()
                ),
                timeout=60,
                what="the demo's addresses",
            )
            views_metrics, processor_metrics, web = first.groups()
            tokens_file = settings.data_dir / "demo" / "demo-tokens.txt"
            tokens = dict(line.split() for line in tokens_file.read_text().splitlines())
            lyon, rhone = tokens["commune:69123"], tokens["departement:42"]
            wait_for(lambda: get(f"{web}/healthz")[0] == 200, timeout=30, what="the views API")

            def applied() -> int:
                status, body = get(f"{web}/views/commune-69123/summary.json", {"Authorization": f"Bearer {lyon}"})
                return status == 200 and '"deliveries_applied": 0' not in body.replace('":0', '": 0')

            wait_for(applied, timeout=DURATION + 20, what="deliveries applied in a view")
            said: list[str] = []
            for url, headers in [
                ("/views/commune-69123/summary.json", {}),
                ("/views/commune-69123/summary.json", {"Authorization": "Bearer nonsense"}),
                ("/views/commune-69123/summary.json", {"Authorization": f"Bearer {lyon}x"}),
                ("/views/commune-69123/summary.json", {"Authorization": f"Bearer {rhone}"}),
                ("/views/commune-69123/no-such-section.json", {"Authorization": f"Bearer {lyon}"}),
                ("/views/commune-69123/movements.json?as_of=yesterday", {"Authorization": f"Bearer {lyon}"}),
                ("/views/commune-69123/movements.csv?sep=x", {"Authorization": f"Bearer {lyon}"}),
                ("/views/ville-1/summary.json", {"Authorization": f"Bearer {lyon}"}),
            ]:
                status, body = get(web + url, headers)
                assert status >= 400, (url, status)
                said.append(body)
            for _ in range(3):
                said += [get(f"{views_metrics}/metrics")[1], get(f"{processor_metrics}/metrics")[1]]
                time.sleep(2)
            assert "scolaflux_view_deliveries_applied_total" in said[-2] or "scolaflux_" in said[-2]
            demo.wait(timeout=DURATION + 60)
        finally:
            if demo.poll() is None:
                demo.terminate()
                demo.wait(30)
    logs = [p.read_text("utf-8", "replace") for p in sorted(settings.data_dir.rglob("*.log"))]
    output = [out_path.read_text("utf-8", "replace"), err_path.read_text("utf-8", "replace"), *logs, *said]
    produced = int(re.findall(r"events produced: (\d+)", output[0])[-1]) if "events produced" in output[0] else 0
    ines, names = produced_identities(max(produced, RATE * DURATION) + RATE * 5)
    master = key.encode()
    secret = {key, audit_key(master).hex(), *tokens.values()}
    secret |= {convention_key(master, c.id).hex() for c in load_directory(EXAMPLE_CONVENTIONS)}
    assert len(logs) >= 2 and sum(len(text) for text in output) > 10_000  # the scan read a real run
    for text in output:
        assert not leaks(text, ines | secret, names), leaks(text, ines | secret, names)
