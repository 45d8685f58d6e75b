"""Coverage-guided fuzzing (atheris, libFuzzer) of what reads untrusted input: ``make fuzz``.

    python -m tests.fuzz.fuzz_inputs TARGET [libFuzzer flags, e.g. -max_total_time=60 CORPUS_DIR]

Targets: ``event`` (single-object bytes through the codec and validation), ``delivery`` (the
delivery codec), ``identifiers`` (text through the UAI, INE and commune rules). The seed corpus is
written from valid records first. A crash is any exception other than the documented refusals
(``RejectedInput`` for records, ``ValueError`` for identifiers), or a refusal without a reason;
libFuzzer then saves the input as ``crash-*`` and stops.

Not part of the default suite: the property-based tests (``tests/test_fuzz_*.py``) run there.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

import atheris

with atheris.instrument_imports(include=["scolaflux", "fastavro", "pydantic"]):
    from scolaflux.schemas.codec import delivery_codec
    from scolaflux.schemas.errors import DecodeError, RejectedInput
    from scolaflux.schemas.identifiers import normalise_commune, normalise_ine, normalise_uai
    from scolaflux.schemas.validation import encode_event, parse_event


def fuzz_event(data: bytes) -> None:
    """Bytes from the raw topic: an event, or a refusal with a reason."""
    try:
        parse_event(data)
    except RejectedInput as error:
        if not str(error):
            raise AssertionError("a refusal without a reason") from error


def fuzz_delivery(data: bytes) -> None:
    """Bytes from a delivery topic: a record, or a DecodeError with a reason."""
    try:
        delivery_codec().decode(data)
    except DecodeError as error:
        if not str(error):
            raise AssertionError("a refusal without a reason") from error


def fuzz_identifiers(data: bytes) -> None:
    """Text from a source file: each rule normalises it or refuses it, naming the rule."""
    text = atheris.FuzzedDataProvider(data).ConsumeUnicodeNoSurrogates(64)
    for rule in (normalise_uai, normalise_ine, normalise_commune):
        try:
            rule(text)
        except ValueError as error:
            if not str(error):
                raise AssertionError(f"{rule.__name__} refused without a reason") from error


TARGETS: dict[str, Callable[[bytes], None]] = {
    "event": fuzz_event,
    "delivery": fuzz_delivery,
    "identifiers": fuzz_identifiers,
}


def seed_corpus(target: str, corpus: Path) -> None:
    """Valid inputs to start from: every event type, a delivery, identifiers clean and dirty."""
    from tests.conftest import make_event

    corpus.mkdir(parents=True, exist_ok=True)
    if target == "event":
        seeds = [encode_event(make_event(t)) for t in ("enrolment", "transfer", "absence", "correction", "erasure")]
    elif target == "delivery":
        seeds = [delivery_codec().encode(_delivery())]
    else:
        seeds = [s.encode() for s in ("0690026D", "0130002g", " 123456789AB ", "1234A12345B", "2A004", "930H01")]
    for number, seed in enumerate(seeds):
        (corpus / f"seed-{number}").write_bytes(seed)


def _delivery() -> dict:
    import datetime as dt

    now = dt.datetime(2026, 9, 1, 8, tzinfo=dt.UTC)
    return {
        "delivery_id": "d",
        "event_ref": "e",
        "event_type": "enrolment",
        "event_time": now,
        "recorded_at": now,
        "delivered_at": now,
        "convention_id": "demo-commune-69123",
        "convention_version": 1,
        "authority_level": "commune",
        "authority_code": "69123",
        "identity_treatment": "nominative",
        "subject": "123456789AB",
        "fields": ["level"],
        "level": "2nde",
    }


def main(argv: list[str]) -> None:
    """``fuzz_inputs TARGET [libFuzzer args...]``; the first directory argument is the corpus."""
    if len(argv) < 2 or argv[1] not in TARGETS:
        raise SystemExit(f"usage: {argv[0]} {{{','.join(TARGETS)}}} [libFuzzer flags] [CORPUS_DIR]")
    target = argv[1]
    for arg in argv[2:]:
        if not arg.startswith("-"):
            seed_corpus(target, Path(arg))
            break
    atheris.Setup([argv[0], *argv[2:]], TARGETS[target])
    atheris.Fuzz()


if __name__ == "__main__":
    main(sys.argv)
