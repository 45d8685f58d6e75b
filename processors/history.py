"""A convention's version history, and its record on the compacted conventions topic.

Signing, amending, suspending and ending a convention each publish a new version; the topic keeps
one record per convention (key: its id) holding every version, because an event is judged by the
version in force at the event's own time (``event_time``), which may be an older one.
"""

from __future__ import annotations

import datetime as dt
import json
import sys
import weakref
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from ..schemas.errors import ConfigError
from .conventions import Convention, LegalBasis, Population


@dataclass(frozen=True, slots=True)
class ConventionHistory:
    """Every published version of one convention, oldest first."""

    versions: tuple[Convention, ...]

    @property
    def id(self) -> str:
        """The convention's id."""
        return self.versions[0].id

    @property
    def latest(self) -> Convention:
        """The most recent version."""
        return self.versions[-1]

    def in_force(self, moment: dt.datetime) -> Convention | None:
        """The version that judges an event of time ``moment``: the last one to have taken effect."""
        for version in reversed(self.versions):
            if version.takes_effect <= moment:
                return version
        return None

    def amended(self, convention: Convention, source: str = "(convention)") -> ConventionHistory:
        """This history with ``convention`` as its next version; the same version again changes nothing.

        Raises ``ConfigError`` when the version is not new but differs, or takes effect too early.
        """
        if convention.id != self.id:
            raise ConfigError(source, "id", f"{convention.id!r} is not {self.id!r}")
        for known in self.versions:
            if known.version == convention.version:
                if known == convention:
                    return self
                rule = f"version {known.version} is already published with another text: give the change a new version"
                raise ConfigError(source, "version", rule)
        latest = self.latest
        if convention.version < latest.version:
            raise ConfigError(source, "version", f"must be above the latest published version ({latest.version})")
        if convention.takes_effect <= latest.takes_effect:
            rule = f"must be after the time version {latest.version} took effect ({latest.takes_effect.isoformat()})"
            raise ConfigError(source, "effective_from", rule)
        return ConventionHistory((*self.versions, convention))

    @classmethod
    def first(cls, convention: Convention) -> ConventionHistory:
        """The history of a convention published for the first time."""
        return cls((convention,))

    def to_bytes(self) -> bytes:
        """The value of this history's record on the conventions topic (JSON)."""
        return json.dumps({"id": self.id, "versions": [v.model_dump(mode="json") for v in self.versions]}).encode()

    @classmethod
    def from_bytes(cls, data: bytes, source: str = "(conventions topic)") -> ConventionHistory:
        """A history read from the conventions topic; ``ConfigError`` if the record is not one."""
        try:
            record = _interned(json.loads(data))
            versions = tuple(Convention.model_validate(_shared_parts(v)) for v in record["versions"])
        except (ValueError, KeyError, TypeError) as exc:
            detail = "; ".join(str(e["msg"]) for e in exc.errors()[:3]) if isinstance(exc, ValidationError) else ""
            raise ConfigError(source, "versions", f"not a convention history ({type(exc).__name__}{detail})") from None
        if not versions or len({v.id for v in versions}) != 1:
            raise ConfigError(source, "versions", "must hold one or more versions of one convention")
        return cls(versions)


def _interned(value: Any) -> Any:
    """A JSON value with its strings interned: thousands of conventions held by a worker repeat the
    same codes, field names and texts, and a model keeps the string it was given."""
    if isinstance(value, str):
        return sys.intern(value)
    if isinstance(value, list):
        return [_interned(item) for item in value]
    if isinstance(value, dict):
        return {sys.intern(key): _interned(item) for key, item in value.items()}
    return value


_SHARED: weakref.WeakValueDictionary[tuple[type, str], Any] = weakref.WeakValueDictionary()


def _shared_parts(version: Any) -> Any:
    """A version's record with its population and legal bases as validated instances shared by every
    version that has the same ones (most of thousands of conventions do); pydantic keeps an instance
    given for a model field as it is. Anything unusual is left for the validation to judge."""
    if not isinstance(version, dict):
        return version
    shared = dict(version)
    if isinstance(version.get("population"), dict):
        shared["population"] = _shared(Population, version["population"])
    if isinstance(version.get("legal_basis"), list) and all(isinstance(b, dict) for b in version["legal_basis"]):
        shared["legal_basis"] = [_shared(LegalBasis, basis) for basis in version["legal_basis"]]
    return shared


def _shared(model: type[Any], data: dict[str, Any]) -> Any:
    key = (model, json.dumps(data, sort_keys=True))
    instance = _SHARED.get(key)
    if instance is None:
        instance = _SHARED[key] = model.model_validate(data)
    return instance


def merge(
    histories: dict[str, ConventionHistory], conventions: Iterable[tuple[str, Convention]]
) -> dict[str, ConventionHistory]:
    """The histories that change when ``conventions`` (source name, convention) are published over them."""
    changed: dict[str, ConventionHistory] = {}
    for source, convention in conventions:
        current = changed.get(convention.id) or histories.get(convention.id)
        updated = ConventionHistory.first(convention) if current is None else current.amended(convention, source)
        if updated is not current:
            changed[convention.id] = updated
    return changed
