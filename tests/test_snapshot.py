"""The snapshot-diff import, without a broker: the diff, the layout, bad rows, the external sort,
deterministic ids and the ledger."""

from __future__ import annotations

import csv
import datetime as dt
from pathlib import Path

import pytest
from scolaflux.producers.snapshot import (
    COLUMNS,
    DiffContext,
    ImportReport,
    Ledger,
    RowError,
    SnapshotRow,
    diff_pupil,
    enrolment_id,
    import_snapshot,
)
from scolaflux.producers.snapshot_sample import SampleChanges, write_sample_pair
from scolaflux.schemas.geography import Geography, load_geography
from scolaflux.schemas.models import Event

AS_OF = dt.date(2026, 12, 1)
RECORDED = dt.datetime(2026, 12, 1, 20, 0, tzinfo=dt.UTC)
LYCEE_DU_PARC, LYCEE_FAYS = "0690026D", "0690103M"
HEADER = ";".join(COLUMNS)
SEPT_1 = dt.date(2026, 9, 1)


class ListSink:
    """Collects events as the producer would send them."""

    def __init__(self) -> None:
        self.events: list[Event] = []
        self.flushed = 0

    def send(self, event: Event) -> None:
        self.events.append(event)

    def flush(self) -> None:
        self.flushed += 1


@pytest.fixture(scope="module")
def geography() -> Geography:
    return load_geography(["69", "01", "38"])


def row(
    ine: str = "123456789AB", uai: str = LYCEE_DU_PARC, entry: dt.date = dt.date(2026, 9, 1), **kw: str
) -> SnapshotRow:
    values = {
        "last_name": "MARTIN", "first_name": "Léa", "sex": "F", "birth_date": dt.date(2011, 5, 4),
        "residence_commune": "69123", "level": "2nde", "track": "GT", **kw,
    }  # fmt: skip
    return SnapshotRow(ine=ine, uai=uai, entry_date=entry, line=2, **values)  # type: ignore[arg-type]


CTX = DiffContext(lambda r: "10", AS_OF, RECORDED)


def test_a_new_pupil_is_an_enrolment_and_a_missing_one_a_departure_to_an_unknown_destination() -> None:
    (arrival,) = diff_pupil(None, row(), CTX)
    assert arrival["event_type"] == "enrolment" and arrival["payload"]["entry_date"] == dt.date(2026, 9, 1)
    (departure,) = diff_pupil(row(), None, CTX)
    assert departure["event_type"] == "transfer"
    assert departure["payload"]["destination_kind"] == "unknown"
    assert departure["payload"]["exit_date"] == AS_OF
    for record in (arrival, departure):
        Event.from_avro(record)


def test_a_change_of_school_is_a_transfer_then_an_enrolment_that_name_each_other() -> None:
    before, after = row(), row(uai=LYCEE_FAYS, entry=dt.date(2026, 11, 3))
    transfer, enrolment = diff_pupil(before, after, CTX)
    assert transfer["event_type"] == "transfer" and transfer["school"] == LYCEE_DU_PARC
    assert transfer["payload"]["destination_school"] == LYCEE_FAYS
    assert transfer["payload"]["exit_date"] == dt.date(2026, 11, 2)
    assert enrolment["school"] == LYCEE_FAYS and enrolment["payload"]["origin_school"] == LYCEE_DU_PARC


def test_changed_fields_are_a_correction_of_the_enrolment_and_nothing_changed_is_nothing() -> None:
    assert diff_pupil(row(), row(), CTX) == []
    (correction,) = diff_pupil(row(), row(first_name="Lea", residence_commune="69266"), CTX)
    assert correction["event_type"] == "correction"
    assert correction["payload"]["changed_fields"] == ["first_name", "residence_commune"]
    assert correction["payload"]["target_event_id"] == enrolment_id(row())
    assert correction["pupil"]["first_name"] == "Lea"
    (reenrolment,) = diff_pupil(row(), row(level="1re", entry=dt.date(2027, 9, 1)), CTX)
    assert reenrolment["event_type"] == "enrolment" and reenrolment["school_year"] == 2027


def test_ids_are_those_of_the_content_of_the_change() -> None:
    first = diff_pupil(row(), row(first_name="Lea"), CTX)
    later = diff_pupil(row(), row(first_name="Lea"), DiffContext(lambda r: "10", dt.date(2027, 1, 5), RECORDED))
    other = diff_pupil(row(), row(first_name="Léna"), CTX)
    assert first[0]["event_id"] == later[0]["event_id"] != other[0]["event_id"]


def write(path: Path, *lines: str, bom: bool = False) -> Path:
    path.write_text(("\ufeff" if bom else "") + "\n".join([HEADER, *lines]) + "\n", encoding="utf-8")
    return path


def run(
    tmp_path: Path, geography: Geography, previous: Path, current: Path, **kw: object
) -> tuple[ImportReport, ListSink]:
    sink = ListSink()
    options: dict = {"as_of": AS_OF, "rejects_path": tmp_path / "rejects.csv", "recorded_at": RECORDED, **kw}
    report = import_snapshot(previous, current, sink, geography, **options)
    return report, sink


def test_bad_rows_are_rejected_with_line_numbers_and_the_good_ones_imported(
    tmp_path: Path, geography: Geography
) -> None:
    previous = write(
        tmp_path / "previous.csv",
        f"111111111AA;MARTIN;Léa;F;04/05/2011;69123;{LYCEE_DU_PARC};2nde;GT;01/09/2026",
        f"222222222BB;PETIT;Jules;M;2013-02-01;69266;{LYCEE_FAYS};2nde;;01/09/2026",
        bom=True,
    )
    current = write(
        tmp_path / "current.csv",
        f"111111111AA;MARTIN;Léa;F;04/05/2011;69123;{LYCEE_DU_PARC};2nde;GT;01/09/2026",
        f"222222222BB;PETIT;Jules;M;31/02/2013;69266;{LYCEE_FAYS};2nde;;01/09/2026",  # line 3: impossible date
        "333333333CC;ROUX;Rose;F;01/01/2015;69259;0690026X;6e;;01/09/2026",  # line 4: wrong check letter
        "44444;DAVID;Adam;M;01/01/2015;69259;0691234Y;6e;;01/09/2026",  # line 5: INE format
        "555555555DD;LEROY;Noah;M;01/01/2015;69123",  # line 6: fields missing
        f"666666666EE;SIMON;Lina;F;03/03/2015;69123;{LYCEE_FAYS};10010012110;;02/09/2026",  # MEF code of 6e
        f"111111111AA;MARTIN;Léa;F;04/05/2011;69123;{LYCEE_FAYS};2nde;GT;01/09/2026",  # line 8: INE again
    )
    report, sink = run(tmp_path, geography, previous, current)
    assert report.rejected == {"previous": 0, "current": 5}
    with (tmp_path / "rejects.csv").open(encoding="utf-8") as file:
        rejects = {int(r["line"]): r["reason"] for r in csv.DictReader(file, delimiter=";")}
    assert sorted(rejects) == [3, 4, 5, 6, 8]
    assert rejects[3].startswith("DATE_NAISSANCE:")
    assert rejects[4].startswith("UAI:") and rejects[5].startswith("INE:")
    assert rejects[8] == "INE: appears again (first at line 2)"
    assert "44444" not in " ".join(rejects.values())
    # the good new pupil is imported; the pupil whose row was rejected is not said to have left
    assert [(e.event_type.value, e.pupil.ine) for e in sink.events] == [("enrolment", "666666666EE")]
    assert sink.events[0].payload.level == "6e"
    assert report.events == {"enrolment": 1} and report.sent == 1 and sink.flushed == 1


def test_a_file_without_the_layout_columns_is_refused_naming_them(tmp_path: Path, geography: Geography) -> None:
    previous = write(tmp_path / "previous.csv")
    current = tmp_path / "current.csv"
    current.write_text("INE;NOM\n123456789AB;MARTIN\n", encoding="utf-8")
    with pytest.raises(RowError, match=r"line 1: missing column\(s\) PRENOM, SEXE"):
        run(tmp_path, geography, previous, current)


def test_the_external_sort_gives_the_same_events_as_one_chunk(tmp_path: Path, geography: Geography) -> None:
    previous, current = tmp_path / "p.csv", tmp_path / "c.csv"
    write_sample_pair(previous, current, geography, ["69", "01"], 3000, seed=4, changes=SampleChanges(bad=0.01))
    whole, in_one = run(tmp_path, geography, previous, current, chunk_rows=1_000_000)
    parts, in_runs = run(tmp_path, geography, previous, current, chunk_rows=97)
    assert [e.event_id for e in in_runs.events] == [e.event_id for e in in_one.events]
    assert whole.events == parts.events and whole.rejected == parts.rejected
    kinds = whole.events
    assert kinds["enrolment"] > 50 and kinds["transfer"] > 50 and kinds["correction"] > 10
    assert whole.rejected["current"] > 10
    ines = [e.pupil.ine for e in in_runs.events]
    assert ines == sorted(ines), "a pupil's events are sent together, in INE order"


def test_the_same_pair_twice_gives_the_same_events_and_the_ledger_sends_nothing_again(
    tmp_path: Path, geography: Geography
) -> None:
    previous, current = tmp_path / "p.csv", tmp_path / "c.csv"
    write_sample_pair(previous, current, geography, ["69"], 500, seed=9)
    first, sent_first = run(tmp_path, geography, previous, current)
    again, sent_again = run(tmp_path, geography, previous, current, recorded_at=RECORDED + dt.timedelta(days=1))
    assert [e.event_id for e in sent_first.events] == [e.event_id for e in sent_again.events]
    assert first.sent > 20

    ledger = Ledger(tmp_path / "ledger")
    recorded, sent = run(tmp_path, geography, previous, current, ledger=ledger)
    assert recorded.sent == first.sent and not recorded.already_imported
    repeat, sent_repeat = run(tmp_path, geography, previous, current, ledger=ledger)
    assert repeat.already_imported and sent_repeat.events == [] and repeat.sent == 0
    # a different pair is not taken for the same one
    current.write_text(current.read_text(encoding="utf-8") + "", encoding="utf-8")
    with current.open("a", encoding="utf-8") as file:
        file.write(f"999999999ZZ;NEW;Pupil;F;01/01/2015;69123;{LYCEE_DU_PARC};2nde;GT;01/09/2026\n")
    changed, sent_changed = run(tmp_path, geography, previous, current, ledger=ledger)
    assert not changed.already_imported and changed.sent == first.sent + 1
