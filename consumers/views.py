"""An authority's view: the ``View`` that the store and the runner apply deliveries to.

Communes, départements and régions keep the same rows (see ``ledger``); what differs is what they
read from them (``commune``, ``departement``, ``region`` modules) and which deliveries they accept:
only those addressed to the authority itself.
"""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import Connection, Engine, Table

from .authority import Authority
from .ledger import CONTENT_TABLES, Delivery, apply_deliveries, metadata, parse_delivery
from .store import Record, claim_view


class AuthorityView:
    """The view of one authority (or, without one, of whatever its topics deliver: the demo's)."""

    tables: Sequence[Table] = CONTENT_TABLES

    def __init__(self, authority: Authority | None = None) -> None:
        self.authority = authority
        self.name = str(authority) if authority else "view"

    def create(self, engine: Engine) -> None:
        """Create the view's tables and record whose view the database holds."""
        metadata.create_all(engine)
        claim_view(engine, self.authority)

    def parse(self, record: Record) -> Delivery:
        """Decode and check one record (raises ``RejectedInput`` to set it aside)."""
        return parse_delivery(record, self.authority)

    def apply(self, conn: Connection, items: list[Delivery]) -> None:
        """Apply deliveries in order inside the open transaction."""
        apply_deliveries(conn, items)
