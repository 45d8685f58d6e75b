"""Who a view belongs to: an authority (collectivité) by level and INSEE code, e.g. ``commune:69123``."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

from ..schemas.errors import ScolafluxError

Level = Literal["commune", "departement", "region"]
LEVELS: tuple[Level, ...] = ("commune", "departement", "region")
_CODE = re.compile(r"^[0-9][0-9AB][0-9]{0,3}$")
_AUTHORITY = re.compile(r"^(?P<level>commune|d[ée]partement|r[ée]gion)[:/-](?P<code>[0-9A-Za-z]{1,5})$", re.IGNORECASE)


class UnknownAuthority(ScolafluxError):
    """A text that does not name an authority as ``level:code``."""


@dataclass(frozen=True, slots=True)
class Authority:
    """A local authority (collectivité territoriale): commune, département or région, by INSEE code."""

    level: Level
    code: str

    @classmethod
    def parse(cls, text: str) -> Authority:
        """``commune:69123``, ``departement:69``, ``region:84`` (also with ``-`` or ``/`` as separator)."""
        match = _AUTHORITY.match(text.strip())
        if match is None or not _CODE.match(match["code"].upper()):
            raise UnknownAuthority(f"authority: expected level:code with level in {list(LEVELS)}, got {text!r}")
        level = match["level"].lower().replace("é", "e")
        return cls(level, match["code"].upper())  # type: ignore[arg-type]

    def __str__(self) -> str:
        return f"{self.level}:{self.code}"

    @property
    def slug(self) -> str:
        """A name safe in file names and URLs: ``commune-69123``."""
        return f"{self.level}-{self.code}"

    def schema(self, prefix: str) -> str:
        """The PostgreSQL schema holding this authority's view, e.g. ``scolaflux_commune_69123``."""
        return re.sub(r"[^a-z0-9_]", "_", f"{prefix}_{self.level}_{self.code}".lower())[:63]

    def demo_convention(self) -> str:
        """The convention id that samples and tests use for this authority when none is published."""
        return f"demo-{self.level}-{self.code}"
