"""Credentials: stored hashed, rotated without downtime (two valid tokens during the rotation, the
servers read the file again without a restart), and a file being rewritten is never half-read."""

from __future__ import annotations

import datetime as dt
import json
import logging
import threading
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from scolaflux.consumers.api import Credentials, create_app
from scolaflux.consumers.authority import Authority
from scolaflux.consumers.credentials import CredentialStore
from scolaflux.consumers.reports import ReadOptions
from scolaflux.consumers.samples import encode, sample_stream
from scolaflux.consumers.store import Record, apply_batch, make_engine
from scolaflux.consumers.views import AuthorityView
from scolaflux.infra.cli import app as cli
from scolaflux.producers.ingest import WatchedRegistry, new_token, token_digest
from typer.testing import CliRunner

LYON = Authority("commune", "69123")


def test_a_view_token_rotates_without_downtime_through_the_cli(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'lyon.sqlite'}")
    view = AuthorityView(LYON)
    view.create(engine)
    apply_batch(engine, [Record("t", 0, i, encode(d), []) for i, d in enumerate(sample_stream(LYON, pupils=5))], view)
    env = {"SCOLAFLUX_DATA_DIR": str(tmp_path)}
    client = TestClient(
        create_app(tmp_path / "view-credentials.json", lambda _a: engine, lambda: ReadOptions(dt.date(2026, 12, 1)))
    )

    def status(token: str) -> int:
        return client.get(f"/views/{LYON.slug}/summary.json", headers={"Authorization": f"Bearer {token}"}).status_code

    old = CliRunner().invoke(cli, ["view", "token", str(LYON)], env=env).stdout.strip()
    assert status(old) == 200
    new = CliRunner().invoke(cli, ["view", "token", str(LYON)], env=env).stdout.strip()
    assert (status(old), status(new)) == (200, 200)  # the rotation window: both open the view
    revoked = CliRunner().invoke(cli, ["view", "revoke", str(LYON)], env=env)
    assert revoked.exit_code == 0 and "1 token(s) revoked" in revoked.stdout
    assert (status(old), status(new)) == (401, 200)  # the same server, no restart
    CliRunner().invoke(cli, ["view", "revoke", str(LYON), "--all"], env=env)
    assert status(new) == 401
    stored = (tmp_path / "view-credentials.json").read_text()
    assert (
        old not in stored
        and new not in stored
        and oct((tmp_path / "view-credentials.json").stat().st_mode & 0o777) == "0o600"
    )
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".view-credentials")] == []


def test_tokens_are_scrypt_hashes_each_with_its_own_salt(tmp_path: Path) -> None:
    store = CredentialStore.load(tmp_path / "c.json")
    store.issue(LYON)
    store.issue(LYON)
    hashes = json.loads((tmp_path / "c.json").read_text())["authorities"][str(LYON)]
    assert all(h.startswith("scrypt$16384$8$1$") for h in hashes)
    assert len({h.split("$")[4] for h in hashes}) == 2  # salts differ


def test_a_server_reading_while_the_file_is_rewritten_never_fails_nor_refuses_a_valid_token(tmp_path: Path) -> None:
    path = tmp_path / "view-credentials.json"
    store = CredentialStore.load(path)
    token = store.issue(LYON)
    credentials = Credentials(path)
    done = threading.Event()

    def rotate_others() -> None:
        for i in range(40):
            store.issue(Authority("commune", f"{69001 + i}"))
        done.set()

    writer = threading.Thread(target=rotate_others)
    writer.start()
    checks = 0
    while not done.is_set():
        assert credentials.verify(token) == LYON
        checks += 1
    writer.join()
    assert checks > 1


def test_an_ingest_source_holds_two_tokens_during_a_rotation_and_the_file_is_read_again(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    old, new = new_token(), new_token()
    path = tmp_path / "sources.yaml"

    def declare(*digests: str) -> None:
        listed = ", ".join(f"'{d}'" for d in digests)
        path.write_text(
            f"sources:\n  - {{id: siecle-lyon, academy: '10', token_sha256: [{listed}]}}\n", encoding="utf-8"
        )

    declare(token_digest(old))
    registry = WatchedRegistry(path)
    assert registry.authenticate(old).id == "siecle-lyon" and registry.authenticate(new) is None  # type: ignore[union-attr]
    declare(token_digest(old), token_digest(new))
    assert registry.authenticate(old) and registry.authenticate(new)
    declare(token_digest(new))
    assert registry.authenticate(old) is None and registry.authenticate(new)
    path.write_text("sources: [", encoding="utf-8")  # a broken edit: refuse everyone, say why in the log
    with caplog.at_level(logging.ERROR):
        assert registry.authenticate(new) is None
    assert "not valid YAML" in caplog.text and new not in caplog.text
    declare(token_digest(new))
    assert registry.authenticate(new)
