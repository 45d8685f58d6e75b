"""Tenant isolation: every endpoint of the views API and of the ingest API, and the CSV/JSON exports,
give an authority (or a source) its own data only.

The routes are read from the apps themselves (``app.routes``): a new endpoint without a case here
fails the test. Each protected URL is tried with the owner's credential (200, own data only),
another authority's (403), none (401) and forged ones (401): nonsense, the right format with a
wrong secret, another authority's secret under the owner's name, the owner's token altered, the
right token under a wrong scheme or in the query string, broken Basic headers. No refusal carries
anything but ``detail``, and no answer carries another authority's pupils, schools or events.
Views are SQLite files and PostgreSQL schemas opened and filled by the code the server uses.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import secrets
import shutil
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from fastapi.routing import APIRoute
from fastapi.testclient import TestClient
from scolaflux.consumers.api import create_app
from scolaflux.consumers.authority import Authority
from scolaflux.consumers.cli import credentials_path, open_engine
from scolaflux.consumers.credentials import CredentialStore
from scolaflux.consumers.reports import SECTIONS, ReadOptions
from scolaflux.consumers.samples import encode, sample_stream
from scolaflux.consumers.store import Record, ViewMismatch, apply_batch
from scolaflux.consumers.views import AuthorityView
from scolaflux.infra.cli import app as cli
from scolaflux.infra.settings import Settings, settings_env
from scolaflux.producers import ingest
from scolaflux.producers.kafka import EventProducer
from sqlalchemy import create_engine, text
from typer.testing import CliRunner

from tests.conftest import make_event, read_topic

POSTGRES_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
LYON, VILLEURBANNE = Authority("commune", "69123"), Authority("commune", "69266")
RHONE, AURA = Authority("departement", "69"), Authority("region", "84")
AUTHORITIES = (LYON, VILLEURBANNE, RHONE, AURA)
AS_OF = dt.date(2026, 12, 1)


@dataclass
class Deployment:
    """Filled views of four authorities, a token for each, and what identifies each one's data."""

    settings: Settings
    tokens: dict[Authority, str]
    markers: dict[Authority, set[str]]

    def others(self, owner: Authority) -> set[str]:
        return set().union(*(m for a, m in self.markers.items() if a != owner))


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def deployment(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Deployment]:
    postgres = request.param == "postgresql"
    settings = Settings(
        topic_prefix=f"sec{uuid.uuid4().hex[:8]}", data_dir=tmp_path, database_url=POSTGRES_URL if postgres else None
    )
    markers = {}
    for seed, authority in enumerate(AUTHORITIES, start=11):
        engine = open_engine(settings, authority)
        stream = sample_stream(authority, seed=seed, pupils=30, years=(2025, 2026))
        topic = settings.delivery_topic(authority.demo_convention())
        apply_batch(
            engine, [Record(topic, 0, i, encode(d), []) for i, d in enumerate(stream)], AuthorityView(authority)
        )
        engine.dispose()
        markers[authority] = {str(d[k]) for d in stream for k in ("subject", "event_ref", "school") if d.get(k)} | {
            str(authority),
            authority.slug,
        }
    for a in AUTHORITIES:
        assert not markers[a] & set().union(*(markers[b] for b in AUTHORITIES if b != a))
    store = CredentialStore.load(credentials_path(settings))
    yield Deployment(settings, {a: store.issue(a) for a in AUTHORITIES}, markers)
    if postgres:
        engine = create_engine(POSTGRES_URL)
        with engine.begin() as conn:
            for authority in AUTHORITIES:
                conn.execute(text(f'DROP SCHEMA IF EXISTS "{authority.schema(settings.topic_prefix)}" CASCADE'))
        engine.dispose()


def views_app(deployment: Deployment) -> TestClient:
    settings = deployment.settings
    return TestClient(
        create_app(credentials_path(settings), lambda a: open_engine(settings, a), lambda: ReadOptions(AS_OF))
    )


PUBLIC = "public"


def view_urls(route: str, owner: Authority) -> list[str] | str:
    """The concrete URLs of one route of the views API for ``owner`` (every route must have a case)."""
    base = f"/views/{owner.slug}/"
    cases: dict[str, list[str] | str] = {
        "/healthz": PUBLIC,
        "/views/{authority}/": [base, f"/views/{owner}/"],
        "/views/{authority}/summary.json": [base + "summary.json", base + f"summary.json?as_of={AS_OF}"],
        "/views/{authority}/{name}.{fmt}": [
            *(base + f"{s}.{fmt}" for s in SECTIONS[owner.level] for fmt in ("json", "csv")),
            base + f"{SECTIONS[owner.level][0]}.csv?sep=,",
            base + "no-such-section.json",
            base + f"{SECTIONS[owner.level][0]}.xml",
        ],
    }
    return cases[route]


def forged(deployment: Deployment, owner: Authority) -> list[dict[str, str]]:
    """Headers that must not open ``owner``'s view (401)."""
    own = deployment.tokens[owner]
    other = deployment.tokens[next(a for a in AUTHORITIES if a != owner)]
    other_secret = other.rsplit(".", 1)[1]
    bearer = [
        "nonsense",
        f"sfx.{owner.slug}.{secrets.token_urlsafe(24)}",  # the right format, a wrong secret
        f"sfx.{owner.slug}.{other_secret}",  # another authority's secret under the owner's name
        f"sfx.{owner.slug}.",
        own[:-1] + ("A" if own[-1] != "A" else "B"),  # the owner's token, one character changed
        own + "x",
        own.upper(),
    ]
    basic = base64.b64encode(f"{owner}:{own[:-1]}".encode()).decode()
    return [
        *({"Authorization": f"Bearer {token}"} for token in bearer),
        {"Authorization": f"Basic {basic}"},
        {"Authorization": f"Basic {own}"},  # not base64
        {"Authorization": "Basic !!!"},
        {"Authorization": f"Token {own}"},
        {"Authorization": f"Bearer{own}"},
        {"Authorization": "Bearer "},
        {"Cookie": f"token={own}"},
    ]


def refused(answer: Any, status: int, leaks: set[str]) -> None:
    assert answer.status_code == status, (answer.request.url, answer.request.headers.get("authorization"))
    assert set(answer.json()) == {"detail"}, answer.text
    found = [m for m in leaks if m in answer.text]
    assert not found, (answer.request.url, found)


def test_every_route_of_the_views_api_gives_each_authority_its_own_data_only(deployment: Deployment) -> None:
    client = views_app(deployment)
    routes = client.app.routes  # type: ignore[attr-defined]
    assert all(isinstance(r, APIRoute) and r.methods == {"GET"} for r in routes), routes
    for owner in AUTHORITIES:
        own, theirs = deployment.markers[owner], deployment.others(owner)
        everything = own | theirs | set(deployment.tokens.values())
        seen_own = set()
        for route in routes:
            urls = view_urls(route.path, owner)
            if urls == PUBLIC:
                answer = client.get(route.path)
                assert answer.status_code == 200 and not [m for m in everything if m in answer.text]
                continue
            for url in urls:
                for headers in (
                    {"Authorization": f"Bearer {deployment.tokens[owner]}"},
                    {"Authorization": "Basic " + base64.b64encode(f"x:{deployment.tokens[owner]}".encode()).decode()},
                ):
                    answer = client.get(url, headers=headers)
                    assert answer.status_code in (200, 404), (url, answer.text)
                    assert not [m for m in theirs if m in answer.text], url
                    seen_own |= {m for m in own if m in answer.text}
                for other in AUTHORITIES:
                    if other != owner:
                        refused(
                            client.get(url, headers={"Authorization": f"Bearer {deployment.tokens[other]}"}),
                            403,
                            everything,
                        )
                refused(client.get(url), 401, everything)
                token_in_query = f"{url}{'&' if '?' in url else '?'}token={deployment.tokens[owner]}"
                refused(client.get(token_in_query), 401, everything)
                for headers in forged(deployment, owner):
                    refused(client.get(url, headers=headers), 401, everything)
        assert seen_own - {str(owner), owner.slug}, f"{owner}: none of its own data was served"


def test_a_view_is_not_opened_under_another_authority_and_a_url_spelling_does_not_cross(deployment: Deployment) -> None:
    client = views_app(deployment)
    token = deployment.tokens[LYON]
    for spelling in ("COMMUNE-69266", "commune:69266", "Commune/69266", "commune-69266 ", "ville-1"):
        answer = client.get(f"/views/{spelling}/summary.json", headers={"Authorization": f"Bearer {token}"})
        assert answer.status_code in (403, 404) and "69266" not in answer.text.replace(spelling, ""), spelling
    if deployment.settings.database_url is None:  # one SQLite file per authority: a copied file is refused
        views = deployment.settings.data_dir / "views"
        shutil.copy(views / f"view-{VILLEURBANNE.slug}.sqlite", views / "view-commune-69999.sqlite")
        with pytest.raises(ViewMismatch):
            open_engine(deployment.settings, Authority("commune", "69999"))


def test_the_cli_export_of_each_section_holds_its_authoritys_data_only(deployment: Deployment) -> None:
    env = settings_env(deployment.settings)
    for owner in (LYON, RHONE):
        seen_own = set()
        for name in SECTIONS[owner.level]:
            for fmt in ("csv", "json"):
                result = CliRunner().invoke(
                    cli,
                    ["view", "export", str(owner), "--section", name, "--format", fmt, "--as-of", str(AS_OF)],
                    env=env,
                )
                assert result.exit_code == 0, result.output
                assert not [m for m in deployment.others(owner) if m in result.stdout], (owner, name)
                seen_own |= {m for m in deployment.markers[owner] if m in result.stdout}
        assert seen_own, owner


# --------------------------------------------------------------------------- the ingest API

LYON_SOURCE, NANTES_SOURCE = ingest.new_token(), ingest.new_token()


def ingest_urls(route: APIRoute) -> str:
    """What each route of the ingest API is (every route must have a case)."""
    return {
        "/healthz": PUBLIC,
        "/openapi.json": PUBLIC,
        "/docs": PUBLIC,
        "/docs/oauth2-redirect": PUBLIC,
        "/redoc": PUBLIC,
        "/events": "events",
    }[route.path]


@pytest.mark.broker
def test_every_route_of_the_ingest_api_takes_events_from_their_own_source_only(
    settings: Settings, topics, tmp_path: Path
) -> None:
    topics()
    sources = tmp_path / "sources.yaml"
    sources.write_text(
        "sources:\n"
        f"  - {{id: siecle-lyon, academy: '10', token_sha256: '{ingest.token_digest(LYON_SOURCE)}'}}\n"
        f"  - {{id: siecle-nantes, academy: '17', token_sha256: '{ingest.token_digest(NANTES_SOURCE)}'}}\n",
        encoding="utf-8",
    )
    lyon_event = json.loads(make_event(ine="111111111AB").model_dump_json())
    secret = {"111111111AB", "Martin", "Léa", LYON_SOURCE, NANTES_SOURCE}
    with EventProducer(settings) as producer:
        client = TestClient(
            ingest.create_app(ingest.WatchedRegistry(sources), producer, settings.deadletter_topic, ack_timeout=30)
        )
        accepted = 0
        for route in client.app.routes:  # type: ignore[attr-defined]
            if ingest_urls(route) == PUBLIC:
                answer = client.get(route.path)
                assert answer.status_code == 200 and not [s for s in secret if s in answer.text], route.path
                continue
            assert route.methods == {"POST"}
            ok = client.post(route.path, json=lyon_event, headers={"Authorization": f"Bearer {LYON_SOURCE}"})
            assert ok.status_code == 200 and ok.json()["status"] == "accepted", ok.text
            accepted += 1
            other = client.post(route.path, json=lyon_event, headers={"Authorization": f"Bearer {NANTES_SOURCE}"})
            assert other.status_code == 422 and not [s for s in secret if s in other.text], other.text
            for headers in (
                {},
                {"Authorization": "Bearer nonsense"},
                {"Authorization": f"Bearer {ingest.new_token()}"},  # the right format, a wrong secret
                {"Authorization": f"Bearer {LYON_SOURCE}x"},
                {"Authorization": f"Bearer {LYON_SOURCE[:-1]}"},
                {"Authorization": f"Basic {base64.b64encode(f'siecle-lyon:{LYON_SOURCE}'.encode()).decode()}"},
                {"Authorization": LYON_SOURCE},
                {"Authorization": f"Token {LYON_SOURCE}"},
            ):
                refused(client.post(route.path, json=lyon_event, headers=headers), 401, secret)
            refused(client.post(f"{route.path}?token={LYON_SOURCE}", json=lyon_event), 401, secret)
    raw = read_topic(settings, settings.raw_topic, accepted + 1, timeout=5)
    assert len(raw) == accepted  # nothing refused reached the raw topic
