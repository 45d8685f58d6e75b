"""The error tree of scolaflux. Every error says where and what, and keeps the raw input.

ScolafluxError
├── RejectedInput        an input record cannot be accepted; goes to the dead-letter topic
│   ├── DecodeError      bytes that are not a record of a known schema
│   └── InvalidEvent     a decoded record that breaks a rule (UAI key, INE format, dates...)
└── ConfigError          a configuration file is wrong: names the file, the field and the rule
"""

from __future__ import annotations


class ScolafluxError(Exception):
    """The root of every error raised by scolaflux."""


class RejectedInput(ScolafluxError):
    """An input record that cannot be accepted. ``reason`` is a short, stable category."""

    reason = "rejected"


class DecodeError(RejectedInput):
    """Bytes that are not a record of a known schema."""

    reason = "decode"


class InvalidEvent(RejectedInput):
    """A decoded record that breaks a validation rule."""

    reason = "invalid"


class ConfigError(ScolafluxError):
    """A configuration file is wrong."""

    def __init__(self, file: str, field: str, rule: str) -> None:
        super().__init__(f"{file}: {field}: {rule}")
        self.file, self.field, self.rule = file, field, rule
