"""The audit trail: who received what about a pupil, under which convention (registre des communications).

Audit records name a pupil by a keyed hash of the INE under the audit key, so the académie (or a
family's request, through the académie) can find every delivery about one pupil without the trail
holding a single INE, and without it being joinable with any authority's pseudonyms.

The processor is at-least-once: a batch replayed after a crash writes its audit records again,
with the same delivery ids. The reader shows one entry per delivery id (the first written).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from ..infra.settings import Settings
from ..infra.topics import read_to_end
from ..schemas.codec import audit_codec
from ..schemas.identifiers import normalise_ine
from .identity import audit_key, pseudonym
from .wiring import master_key


def pupil_hash(settings: Settings, ine: str) -> str:
    """How the audit trail names a pupil (``ValueError`` if ``ine`` is not an INE)."""
    return pseudonym(audit_key(master_key(settings)), normalise_ine(ine))


def one_per_delivery(records: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """The first record of each delivery id, in the order read (a replay's copies dropped)."""
    first: dict[str, dict[str, Any]] = {}
    for record in records:
        first.setdefault(record["delivery_id"], record)
    return list(first.values())


def pupil_audit(settings: Settings, ine: str) -> list[dict[str, Any]]:
    """Every delivery about one pupil, once each, oldest first."""
    wanted = pupil_hash(settings, ine).encode()
    codec = audit_codec()
    records = one_per_delivery(
        codec.decode(r.value) for r in read_to_end(settings, settings.audit_topic) if r.key == wanted
    )
    return sorted(records, key=lambda r: (r["delivered_at"], r["convention_id"], r["event_time"]))
