"""The views' HTTP API: each authority reads its own view only, as JSON and CSV."""

from __future__ import annotations

import base64
import datetime as dt
import json
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from scolaflux.consumers.api import create_app, engines_by_authority
from scolaflux.consumers.authority import Authority
from scolaflux.consumers.credentials import CredentialStore
from scolaflux.consumers.reports import SECTIONS, ReadOptions
from scolaflux.consumers.samples import encode, sample_stream
from scolaflux.consumers.store import Record, apply_batch, make_engine
from scolaflux.consumers.views import AuthorityView
from scolaflux.schemas.errors import ConfigError

LYON, RHONE, AURA = Authority("commune", "69123"), Authority("departement", "69"), Authority("region", "84")


@pytest.fixture
def served(tmp_path: Path) -> tuple[TestClient, dict[Authority, str], Path]:
    """The app over three filled views, and a token for each authority."""
    engines = {}
    for authority in (LYON, RHONE, AURA):
        engine = make_engine(f"sqlite:///{tmp_path / f'{authority.slug}.sqlite'}")
        view = AuthorityView(authority)
        view.create(engine)
        stream = sample_stream(authority, seed=5, pupils=40, years=(2025, 2026))
        apply_batch(engine, [Record("t", 0, i, encode(d), []) for i, d in enumerate(stream)], view)
        engines[authority] = engine
    path = tmp_path / "credentials.json"
    store = CredentialStore.load(path)
    tokens = {authority: store.issue(authority) for authority in engines}
    app = create_app(path, engines_by_authority(engines.__getitem__), lambda: ReadOptions(dt.date(2026, 12, 1)))
    return TestClient(app), tokens, path


def urls(authority: Authority) -> list[str]:
    base = f"/views/{authority.slug}/"
    return [base, base + "summary.json"] + [
        base + f"{s}.{f}" for s in SECTIONS[authority.level] for f in ("json", "csv")
    ]


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_each_authority_reads_its_own_view(served) -> None:
    client, tokens, _ = served
    for authority, token in tokens.items():
        for url in urls(authority):
            answer = client.get(url, headers=bearer(token))
            assert answer.status_code == 200, url
    summary = client.get(f"/views/{LYON.slug}/summary.json", headers=bearer(tokens[LYON])).json()
    assert summary["authority"] == "commune:69123" and summary["figures"]["arrivals"] > 0
    basic = base64.b64encode(f"{LYON}:{tokens[LYON]}".encode()).decode()
    assert (
        client.get(f"/views/{LYON.slug}/summary.json", headers={"Authorization": f"Basic {basic}"}).status_code == 200
    )


def test_the_csv_is_utf8_with_bom_and_semicolons_and_the_json_has_rows(served) -> None:
    client, tokens, _ = served
    answer = client.get(f"/views/{RHONE.slug}/headcounts.csv", headers=bearer(tokens[RHONE]))
    assert (
        answer.headers["content-type"].startswith("text/csv") and "attachment" in answer.headers["content-disposition"]
    )
    assert answer.content.startswith(b"\xef\xbb\xbf")
    header = answer.content.decode("utf-8-sig").splitlines()[0]
    assert header == "school_year;school;level;pupils"
    rows = client.get(f"/views/{RHONE.slug}/headcounts.json", headers=bearer(tokens[RHONE])).json()["rows"]
    assert sum(r["pupils"] for r in rows) > 0
    comma = client.get(f"/views/{RHONE.slug}/headcounts.csv?sep=,", headers=bearer(tokens[RHONE]))
    assert comma.content.decode("utf-8-sig").splitlines()[0] == "school_year,school,level,pupils"


def test_no_wrong_or_forged_credential_gets_401_and_another_authoritys_gets_403_and_nothing_else(served) -> None:
    client, tokens, _ = served
    forged = f"sfx.{LYON.slug}.not-the-secret"
    for authority in tokens:
        other = next(a for a in tokens if a != authority)
        for url in urls(authority):
            for headers, status in (
                ({}, 401),
                (bearer("nonsense"), 401),
                (bearer(forged), 401),
                ({"Authorization": "Basic !!!"}, 401),
                (bearer(tokens[other]), 403),
            ):
                answer = client.get(url, headers=headers)
                assert answer.status_code == status, (url, headers)
                assert set(answer.json()) == {"detail"}  # nothing of the view in the answer
    assert client.get("/views/ville-1/summary.json", headers=bearer(tokens[LYON])).status_code == 403


def test_tokens_are_stored_hashed_and_rotate_without_restart(served) -> None:
    client, tokens, path = served
    stored = path.read_text()
    assert all(token not in stored for token in tokens.values())
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    store = CredentialStore.load(path)
    fresh = store.issue(LYON, replace=True)  # the old token is revoked, the server picks the file up
    assert client.get(f"/views/{LYON.slug}/summary.json", headers=bearer(fresh)).status_code == 200
    assert client.get(f"/views/{LYON.slug}/summary.json", headers=bearer(tokens[LYON])).status_code == 401


def test_a_wrong_credential_file_names_the_file_the_field_and_the_rule(tmp_path: Path) -> None:
    path = tmp_path / "credentials.json"
    path.write_text(json.dumps({"authorities": {"commune:69123": ["plain-text-token"]}}))
    with pytest.raises(ConfigError) as error:
        CredentialStore.load(path)
    assert (error.value.file, error.value.field) == (str(path), "authorities.commune:69123")
    assert "scrypt" in error.value.rule
    path.write_text(json.dumps({"authorities": {"ville:1": []}}))
    with pytest.raises(ConfigError, match="authorities.ville:1: must be level:code"):
        CredentialStore.load(path)
