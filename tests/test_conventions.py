"""Convention files: the examples are valid, every broken one is refused with its own message, and
a convention's version history follows the rules of amendment."""

from __future__ import annotations

import datetime as dt
import re
from pathlib import Path

import pytest
from scolaflux.infra.cli import app
from scolaflux.processors.conventions import (
    Convention,
    ConventionFileError,
    check_directory,
    check_file,
    convention_files,
    load_convention,
    load_directory,
)
from scolaflux.processors.history import ConventionHistory, merge
from scolaflux.processors.publish import conventions_of
from scolaflux.schemas.errors import ConfigError
from scolaflux.schemas.geography import load_geography
from typer.testing import CliRunner

ROOT = Path(__file__).parent.parent
EXAMPLES = ROOT / "conventions"
BROKEN = EXAMPLES / "broken"
BROKEN_FILES = convention_files(BROKEN)


@pytest.fixture(scope="module")
def geography():
    return load_geography()


def expected_problem(path: Path) -> str:
    """The problem a broken example announces in its header (``# refused: field: rule``)."""
    match = re.search(r"^# refused: (.+)$", path.read_text(encoding="utf-8"), re.MULTILINE)
    assert match, f"{path.name} has no '# refused:' line"
    return match[1]


def test_the_examples_are_valid_and_cover_every_treatment_level_and_several_academies(geography) -> None:
    checked = check_directory(EXAMPLES, geography)
    assert checked.errors == ()
    conventions = [c for _, c in checked.conventions]
    assert {c.identity for c in conventions} == {"nominative", "pseudonymised", "aggregated"}
    assert {c.authority.level for c in conventions} == {"commune", "departement", "region"}
    assert len({c.academy for c in conventions}) >= 2
    assert sum(c.authority.level == "commune" for c in conventions) >= 3
    assert all(c.identity != "nominative" or c.authority.level == "commune" for c in conventions)


def test_there_are_broken_examples_and_each_announces_a_distinct_problem() -> None:
    assert len(BROKEN_FILES) >= 20
    announced = [expected_problem(p) for p in BROKEN_FILES]
    assert len(set(announced)) == len(announced)


@pytest.mark.parametrize("path", BROKEN_FILES, ids=lambda p: p.stem)
def test_every_broken_file_is_refused_with_its_own_message(path: Path, geography) -> None:
    convention, problems = check_file(path, geography)
    assert convention is None
    messages = [str(p) for p in problems]
    expected = f"{path}: {expected_problem(path)}"
    assert any(m.startswith(expected) for m in messages), messages
    for problem in problems:
        assert problem.file == str(path) and problem.field and problem.rule
    with pytest.raises(ConventionFileError) as raised:
        load_convention(path, geography)
    assert expected in str(raised.value)


def test_check_reports_every_problem_of_a_directory_at_once_and_exits_non_zero() -> None:
    result = CliRunner().invoke(app, ["conventions", "check", str(BROKEN)])
    assert result.exit_code == 1
    for path in BROKEN_FILES:
        assert f"{path}: {expected_problem(path)}" in result.output
    assert "0 valid convention(s)" in result.output


def test_check_accepts_the_examples() -> None:
    result = CliRunner().invoke(app, ["conventions", "check", str(EXAMPLES)])
    assert result.exit_code == 0, result.output
    assert f"{len(convention_files(EXAMPLES))} valid convention(s), 0 problem(s)" in result.output


def test_load_directory_lists_every_problem(geography) -> None:
    with pytest.raises(ConventionFileError) as raised:
        load_directory(BROKEN, geography)
    assert len(raised.value.errors) >= len(BROKEN_FILES)
    assert {e.file for e in raised.value.errors} == {str(p) for p in BROKEN_FILES}


def test_two_files_with_one_id_are_refused(tmp_path: Path) -> None:
    text = (EXAMPLES / "commune-69123-instruction.yaml").read_text(encoding="utf-8")
    (tmp_path / "commune-69123-instruction.yaml").write_text(text, encoding="utf-8")
    (tmp_path / "commune-69123-instruction.yml").write_text(text, encoding="utf-8")
    checked = check_directory(tmp_path)
    assert len(checked.conventions) == 1
    (error,) = checked.errors
    assert error.field == "id" and "is already the id of" in error.rule


def test_a_missing_directory_is_refused_by_name(tmp_path: Path) -> None:
    checked = check_directory(tmp_path / "nowhere")
    assert [str(e) for e in checked.errors] == [
        f"{tmp_path / 'nowhere'}: (directory): does not exist or is not a directory"
    ]


def test_without_geography_the_file_rules_still_apply() -> None:
    _, problems = check_file(BROKEN / "nominative-departement.yaml")
    assert [p.field for p in problems] == ["identity"]
    convention, problems = check_file(BROKEN / "wrong-academy.yaml")  # a geography rule: needs the geography
    assert problems == [] and convention is not None


# --------------------------------------------------------------------------- version history


def _convention(**changes):
    base = load_convention(EXAMPLES / "departement-42-colleges.yaml").model_dump()
    return Convention.model_validate({**base, **changes})


def at(day: int, hour: int = 0) -> dt.datetime:
    return dt.datetime(2026, 10, day, hour, tzinfo=dt.UTC)


def test_the_version_in_force_is_the_last_to_have_taken_effect() -> None:
    v1 = _convention()
    v2 = _convention(version=2, effective_from=at(10), retention_days=365)
    v3 = _convention(version=3, effective_from=at(20), status="suspended")
    history = ConventionHistory.first(v1).amended(v2).amended(v3)
    assert history.in_force(dt.datetime(2026, 6, 30, 21, 59, tzinfo=dt.UTC)) is None  # before 1 July in Paris
    assert history.in_force(dt.datetime(2026, 6, 30, 22, 0, tzinfo=dt.UTC)) == v1
    assert history.in_force(at(9, 23)) == v1
    assert history.in_force(at(10)) == v2
    assert history.in_force(at(25)) == v3 and not v3.delivers(at(25))
    assert v2.delivers(at(15)) and not v2.delivers(dt.datetime(2029, 9, 1, tzinfo=dt.UTC))


def test_publishing_the_same_version_again_changes_nothing() -> None:
    history = ConventionHistory.first(_convention())
    assert history.amended(_convention()) is history
    assert merge({history.id: history}, [("f", _convention())]) == {}


def test_a_changed_text_needs_a_new_version() -> None:
    history = ConventionHistory.first(_convention())
    with pytest.raises(ConfigError, match="version: version 1 is already published with another text"):
        history.amended(_convention(retention_days=10), "departement-42-colleges.yaml")


def test_an_amendment_must_take_effect_after_the_version_it_replaces() -> None:
    history = ConventionHistory.first(_convention()).amended(_convention(version=2, effective_from=at(10)))
    with pytest.raises(ConfigError, match="effective_from: must be after the time version 2 took effect"):
        history.amended(_convention(version=3, effective_from=at(9)))
    with pytest.raises(ConfigError, match="version: must be above the latest published version"):
        ConventionHistory.first(_convention(version=4, effective_from=at(1))).amended(_convention())


def test_a_history_survives_the_topic_and_garbage_is_refused() -> None:
    history = ConventionHistory.first(_convention()).amended(_convention(version=2, effective_from=at(10)))
    assert ConventionHistory.from_bytes(history.to_bytes()) == history
    with pytest.raises(ConfigError, match="versions: not a convention history"):
        ConventionHistory.from_bytes(b'{"id": "x", "versions": [{"id": "x"}]}')
    with pytest.raises(ConfigError, match="versions: not a convention history"):
        ConventionHistory.from_bytes(b"\x00 not json")
    with pytest.raises(ConfigError, match="versions: not a convention history"):
        broken = history.to_bytes().replace(b'"basis": "', b'"basis": "nowhere-')
        ConventionHistory.from_bytes(broken)


def test_histories_read_from_the_topic_share_their_equal_parts() -> None:
    """A worker holds every convention: equal populations and legal bases are one object (memory)."""
    one, two = (ConventionHistory.first(_convention(retention_days=d)).to_bytes() for d in (10, 20))
    first, second = (ConventionHistory.from_bytes(data).latest for data in (one, two))
    assert first != second and first.population == second.population
    assert first.population is second.population and first.legal_basis[0] is second.legal_basis[0]


# --------------------------------------------------------------------------- commands


def test_acl_gives_each_authority_its_own_delivery_topics_only() -> None:
    result = CliRunner().invoke(app, ["conventions", "acl", str(EXAMPLES), "--bootstrap", "kafka:9092"])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    lyon = [line for line in lines if "User:commune-69123 " in line]
    assert len(lyon) == 3 and all("kafka-acls.sh --bootstrap-server kafka:9092 --add" in line for line in lyon)
    assert any("--topic scolaflux.delivery.commune-69123-instruction" in line for line in lyon)
    assert not any("departement" in line or "region" in line or "Write" in line for line in lyon)
    assert all("User:scolaflux-" in line for line in lines if "--operation Write" in line)  # the feed's own


@pytest.mark.broker
def test_publish_adds_versions_and_refuses_a_changed_text_under_a_published_version(settings, topics, tmp_path) -> None:
    from scolaflux.infra.settings import settings_env

    topics()
    env = settings_env(settings)
    first = CliRunner().invoke(app, ["conventions", "publish", str(EXAMPLES)], env=env)
    count = len(convention_files(EXAMPLES))
    assert first.exit_code == 0 and f"{count} changed, 0 unchanged" in first.output, first.output
    again = CliRunner().invoke(app, ["conventions", "publish", str(EXAMPLES)], env=env)
    assert f"0 changed, {count} unchanged" in again.output
    name = "departement-42-colleges.yaml"
    text = (EXAMPLES / name).read_text(encoding="utf-8").replace("retention_days: 730", "retention_days: 365")
    (tmp_path / name).write_text(text, encoding="utf-8")
    changed = CliRunner().invoke(app, ["conventions", "publish", str(tmp_path)], env=env)
    assert changed.exit_code == 1
    assert f"{tmp_path / name}: version: version 1 is already published with another text" in changed.output
    amended = text.replace("version: 1", "version: 2\neffective_from: 2026-11-01T00:00:00+01:00")
    (tmp_path / name).write_text(amended, encoding="utf-8")
    ok = CliRunner().invoke(app, ["conventions", "publish", str(tmp_path)], env=env)
    assert "published departement-42-colleges version 2 (signed)" in ok.output, ok.output
    assert conventions_of(settings, "region", "84") == [
        "region-84-lyon-lycees-effectifs",
        "region-84-lyon-lycees-mouvements",
    ]
    listing = CliRunner().invoke(app, ["conventions", "list"], env=env)
    assert "departement-42-colleges  v2  signed  pseudonymised  departement 42" in listing.output
    assert "(2 version(s))" in listing.output and len(listing.output.splitlines()) == count
