"""Identifier rules: UAI (school), INE (pupil), INSEE commune code.

Pure functions. Each validator returns the normalised value or raises ``ValueError`` with a
message that names the rule broken. A message never echoes a value of the wrong shape: a pupil's
INE or name that slipped into the wrong column must not reach a log or a dead-letter header.
"""

from __future__ import annotations

import re

UAI_LETTERS = "ABCDEFGHJKLMNPRSTUVWXYZ"  # I, O and Q are not used
_UAI = re.compile(r"^[0-9]{7}[A-Z]$")
_INE_FORMATS = {
    "RNIE": re.compile(r"^[0-9]{9}[A-Z]{2}$"),
    "BEA": re.compile(r"^[0-9]{10}[A-Z]$"),
    "apprentice": re.compile(r"^[0-9]{4}A[0-9]{5}[A-Z]$"),
}
_COMMUNE = re.compile(r"^[0-9][0-9AB][0-9]{3}$")


def uai_check_letter(first7: str) -> str:
    """The UAI check letter (clé) of the first seven digits."""
    return UAI_LETTERS[int(first7) % 23]


def normalise_uai(value: str) -> str:
    """Upper-case and strip a UAI (RNE), then check its format and check letter."""
    uai = value.strip().upper()
    if not _UAI.fullmatch(uai):
        raise ValueError(f"UAI must be 7 digits and a letter (got {len(uai)} characters)")
    expected = uai_check_letter(uai[:7])
    if uai[7] != expected:
        raise ValueError(f"UAI {value!r} has check letter {uai[7]}, expected {expected}")
    return uai


def ine_format(value: str) -> str:
    """The name of the INE format that ``value`` follows, or raise ``ValueError``.

    No public rule for the INE check character is known: only the format is checked.
    """
    for name, pattern in _INE_FORMATS.items():
        if pattern.fullmatch(value):
            return name
    raise ValueError("INE must be 11 characters in the RNIE, BEA or apprentice format")


def normalise_ine(value: str) -> str:
    """Upper-case and strip an INE, then check its format."""
    ine = value.strip().upper()
    ine_format(ine)
    return ine


def normalise_commune(value: str) -> str:
    """Upper-case and strip an INSEE commune code (COG), then check its format."""
    code = value.strip().upper()
    if not _COMMUNE.fullmatch(code):
        raise ValueError(f"commune code must be 5 characters, digits or 2A/2B for Corsica (got {len(code)})")
    return code
