"""The web page of a view, in a real browser (Debian's chromium driven by Playwright): load the page,
produce a delivery on the authority's topic, see the number change on the page."""

from __future__ import annotations

import datetime as dt
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import uvicorn
from scolaflux.consumers.api import create_app, engines_by_authority
from scolaflux.consumers.authority import Authority
from scolaflux.consumers.cli import credentials_path, open_engine
from scolaflux.consumers.credentials import CredentialStore
from scolaflux.consumers.reports import ReadOptions
from scolaflux.consumers.runner import ViewMaintainer
from scolaflux.consumers.samples import encode, sample_stream
from scolaflux.consumers.views import AuthorityView
from scolaflux.infra.broker import free_port
from scolaflux.infra.kafka import make_producer
from scolaflux.infra.settings import Settings

from tests.conftest import wait_for

pytestmark = pytest.mark.broker

RHONE = Authority("departement", "69")
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


@pytest.fixture
def server(settings: Settings, topics) -> Iterator[tuple[str, str]]:
    """A running view maintainer and HTTP server for the département of the Rhône: (base URL, token)."""
    topics(RHONE.demo_convention())
    engine = open_engine(settings, RHONE)
    maintainer = ViewMaintainer(
        settings, [settings.delivery_topic(RHONE.demo_convention())], AuthorityView(RHONE), engine
    )
    stop = threading.Event()
    runner = threading.Thread(target=maintainer.run, args=(stop,), daemon=True)
    runner.start()
    token = CredentialStore.load(credentials_path(settings)).issue(RHONE)
    app = create_app(credentials_path(settings), engines_by_authority(lambda _a: engine), ReadOptions)
    port = free_port()
    http = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    serving = threading.Thread(target=http.run, daemon=True)
    serving.start()
    wait_for(lambda: http.started, timeout=30, what="the HTTP server")
    yield f"http://127.0.0.1:{port}", token
    http.should_exit = True
    stop.set()
    serving.join(10)
    runner.join(10)


def produce(settings: Settings, deliveries: list[dict]) -> None:
    producer = make_producer(settings)
    for d in deliveries:
        producer.send(settings.delivery_topic(RHONE.demo_convention()), key=d["subject"].encode(), value=encode(d))
    producer.flush()
    producer.close()


def test_the_page_shows_the_headcount_and_follows_a_new_enrolment_live(
    settings: Settings, server: tuple[str, str], tmp_path: Path
) -> None:
    from playwright.sync_api import sync_playwright

    assert shutil.which("chromium") or Path(CHROMIUM).exists(), "install Debian's chromium (make test does)"
    base, token = server
    firsts = {d["subject"]: d for d in reversed(sample_stream(RHONE, seed=4, pupils=30, duplicates=0))}
    enrolments = [d for d in firsts.values() if d["event_type"] == "enrolment"]  # one per pupil
    produce(settings, enrolments[:10])
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            context = browser.new_context(http_credentials={"username": str(RHONE), "password": token})
            page = context.new_page()
            page.goto(f"{base}/views/{RHONE.slug}/")
            pupils = page.locator("#fig-pupils .value")
            pupils.wait_for(timeout=30_000)
            wait_for(lambda: pupils.text_content() == "10", timeout=30, what="the page to show 10 pupils")
            assert page.locator("#chart rect").count() >= 1  # the chart has bars
            assert page.locator("#export-headcounts").get_attribute("href").endswith("headcounts.csv")

            late = {**enrolments[10], "event_time": dt.datetime(2027, 1, 5, 8, tzinfo=dt.UTC)}
            produce(settings, [late])
            wait_for(lambda: pupils.text_content() == "11", timeout=30, what="the page to follow the new enrolment")

            with page.expect_download() as download:
                page.click("#export-headcounts")
            saved = tmp_path / "headcounts.csv"
            download.value.save_as(saved)
            assert saved.read_bytes().startswith(b"\xef\xbb\xbfschool_year;school;")

            stranger = browser.new_context(http_credentials={"username": "x", "password": "wrong"})
            answer = stranger.new_page().goto(f"{base}/views/{RHONE.slug}/summary.json")
            assert answer is not None and answer.status == 401
        finally:
            browser.close()
