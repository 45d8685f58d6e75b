"""Identity treatment: pseudonyms keyed per convention, so two authorities can never join their data."""

from __future__ import annotations

import hashlib
import hmac


def convention_key(master_key: bytes, convention_id: str) -> bytes:
    """The pseudonymisation secret of one convention, derived from the master key."""
    return hmac.new(master_key, b"scolaflux/convention/" + convention_id.encode(), hashlib.sha256).digest()


def pseudonym(key: bytes, identifier: str) -> str:
    """A keyed hash (HMAC-SHA-256, 128 bits in hex) of an identifier under one convention's key."""
    return hmac.new(key, identifier.encode(), hashlib.sha256).hexdigest()[:32]


def audit_key(master_key: bytes) -> bytes:
    """The secret under which audit records name a pupil: apart from every convention's key, so the
    audit trail (the académie's) cannot be joined with what any authority received."""
    return hmac.new(master_key, b"scolaflux/audit", hashlib.sha256).digest()
