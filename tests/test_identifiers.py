"""UAI, INE and commune rules, on real and dirty values."""

import pytest
from scolaflux.schemas.identifiers import (
    ine_format,
    normalise_commune,
    normalise_ine,
    normalise_uai,
    uai_check_letter,
)


@pytest.mark.parametrize("uai", ["0030701W", "0750655E", "0690026D"])
def test_real_uai_codes_pass(uai: str) -> None:
    assert normalise_uai(uai) == uai


def test_uai_is_normalised_for_case_and_spaces() -> None:
    assert normalise_uai(" 0690026d ") == "0690026D"


@pytest.mark.parametrize(
    ("dirty", "rule"),
    [
        ("0690026E", "check letter D"),  # wrong key
        ("930H01", "7 digits and a letter"),  # real dirty value from the lycée list
        ("0951090u1", "7 digits and a letter"),
        ("069002D", "7 digits and a letter"),
        ("", "7 digits and a letter"),
    ],
)
def test_dirty_uai_codes_are_refused_with_the_rule(dirty: str, rule: str) -> None:
    with pytest.raises(ValueError, match=rule.replace("check letter D", "expected D")):
        normalise_uai(dirty)


def test_check_letter_skips_i_o_q() -> None:
    letters = {uai_check_letter(f"{n:07d}") for n in range(23)}
    assert letters.isdisjoint({"I", "O", "Q"}) and len(letters) == 23


@pytest.mark.parametrize(
    ("ine", "fmt"),
    [("123456789AB", "RNIE"), ("1234567890A", "BEA"), ("1234A12345B", "apprentice")],
)
def test_ine_formats(ine: str, fmt: str) -> None:
    assert ine_format(ine) == fmt


@pytest.mark.parametrize("bad", ["12345678AB", "123456789A1", "ABCDEFGHIJK", "1234B12345C", "123456789ABC"])
def test_bad_ine_is_refused_without_echoing_it(bad: str) -> None:
    with pytest.raises(ValueError) as info:
        normalise_ine(bad)
    assert bad not in str(info.value)


def test_ine_is_upper_cased() -> None:
    assert normalise_ine("123456789ab") == "123456789AB"


@pytest.mark.parametrize("code", ["69123", "2A004", "2b033", "97411", "75056"])
def test_commune_codes(code: str) -> None:
    assert normalise_commune(code) == code.upper()


@pytest.mark.parametrize("bad", ["6912", "2C004", "A9123", "691234", "69-23"])
def test_bad_commune_codes(bad: str) -> None:
    with pytest.raises(ValueError, match="5 characters"):
        normalise_commune(bad)
