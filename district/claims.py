"""Due work claimed by one instance at a time: escalation steps and notifications.

An item is added once (its ``key`` is unique: an alert's step, a delivery), in the transaction
that decided it (:func:`add`). Instances :meth:`WorkQueue.claim` due items with
``FOR UPDATE SKIP LOCKED`` — concurrent claimers skip each other's rows instead of waiting or
taking the same one — and hold each claim until ``claim_expires_at``. A claim is finished with
:meth:`WorkQueue.complete`, :meth:`WorkQueue.retry` or :meth:`WorkQueue.fail`, each of which
names the attempt it holds: once a claim has expired and another instance has claimed the item
(its ``attempts`` went up), the first holder's calls change nothing and return False.

So nothing waits for a dead instance (its claims expire, and the item is claimed again) and two
live instances never work on the same item at once. What remains is the window of every
outbox: an instance that sent a message and died before :meth:`WorkQueue.complete` committed
leaves an item that will be sent again. :attr:`Claim.key` travels with the message (an
idempotency key, a Message-ID) so a receiver can drop the repeat, and :meth:`WorkQueue.extend`
keeps a slow send's claim from expiring under it. docs/district.md has the reasoning.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg
from psycopg.types.json import Jsonb
from psycopg_pool import ConnectionPool


@dataclass(frozen=True, slots=True)
class Claim:
    id: int
    kind: str
    key: str
    community: str
    payload: dict[str, Any]
    due_at: datetime
    attempt: int
    """The claim's token: the item's ``attempts`` when this instance claimed it."""


def add(
    db: psycopg.Connection[Any],
    kind: str,
    key: str,
    payload: dict[str, Any],
    *,
    due_in_s: float = 0.0,
    community: str = "",
) -> bool:
    """Add an item due ``due_in_s`` from now (database time), in the caller's transaction.
    False when an item with ``key`` exists already (added once, whoever asks again)."""
    row = db.execute(
        "INSERT INTO work_items (kind, key, community, payload, due_at)"
        " VALUES (%s, %s, %s, %s, now() + %s * interval '1 second')"
        " ON CONFLICT (key) DO NOTHING RETURNING id",
        (kind, key, community, Jsonb(payload), due_in_s),
    ).fetchone()
    return row is not None


class WorkQueue:
    """Instance ``instance_id``'s claims on the ``work_items`` table; each claim lasts
    ``claim_s`` seconds unless extended."""

    def __init__(self, pool: ConnectionPool, instance_id: str, *, claim_s: float = 30.0) -> None:
        if claim_s <= 0:
            raise ValueError("claim_s must be positive")
        self.pool = pool
        self.instance_id = instance_id
        self.claim_s = claim_s

    def claim(self, kinds: Sequence[str], limit: int = 10) -> list[Claim]:
        """Claim up to ``limit`` due items of ``kinds``, oldest due first: pending ones nobody
        holds, and those whose holder's claim expired."""
        with self.pool.connection() as db, db.transaction():
            rows = db.execute(
                "UPDATE work_items w SET claimed_by = %s, attempts = w.attempts + 1,"
                " claim_expires_at = now() + %s * interval '1 second', updated_at = now()"
                " WHERE w.id IN (SELECT id FROM work_items"
                "   WHERE state = 'pending' AND kind = ANY(%s) AND due_at <= now()"
                "   AND (claim_expires_at IS NULL OR claim_expires_at <= now())"
                "   ORDER BY due_at, id FOR UPDATE SKIP LOCKED LIMIT %s)"
                " RETURNING w.id, w.kind, w.key, w.community, w.payload, w.due_at, w.attempts",
                (self.instance_id, self.claim_s, list(kinds), limit),
            ).fetchall()
        claims = [
            Claim(int(i), str(k), str(key), str(c), dict(p), due, int(a))
            for i, k, key, c, p, due, a in rows
        ]
        claims.sort(key=lambda c: (c.due_at, c.id))
        return claims

    def _finish(self, claim: Claim, sets: str, params: tuple[Any, ...]) -> bool:
        with self.pool.connection() as db, db.transaction():
            return self._finish_in(db, claim, sets, params)

    def _finish_in(
        self, db: psycopg.Connection[Any], claim: Claim, sets: str, params: tuple[Any, ...] = ()
    ) -> bool:
        """Update the item of ``claim`` with ``sets`` (an SQL ``SET`` list) in the caller's
        transaction, if the claim is still this instance's: for a completion that must commit
        with other writes (the receipt, the next escalation step)."""
        query = (
            f"UPDATE work_items SET {sets}, updated_at = now() WHERE id = %s AND state = 'pending'"
            " AND claimed_by = %s AND attempts = %s RETURNING id"
        )
        row = db.execute(
            query.encode(), (*params, claim.id, self.instance_id, claim.attempt)
        ).fetchone()
        return row is not None

    def complete(self, claim: Claim, db: psycopg.Connection[Any] | None = None) -> bool:
        """Mark the item done (in ``db``'s transaction if given). False: the claim was lost."""
        sets, params = "state = 'done', done_at = now(), done_by = %s", (self.instance_id,)
        if db is not None:
            return self._finish_in(db, claim, sets, params)
        return self._finish(claim, sets, params)

    def retry(self, claim: Claim, delay_s: float, error: str) -> bool:
        """Release the item to be claimed again ``delay_s`` from now."""
        return self._finish(
            claim,
            "due_at = now() + %s * interval '1 second', claimed_by = NULL,"
            " claim_expires_at = NULL, last_error = %s",
            (delay_s, error),
        )

    def fail(self, claim: Claim, error: str) -> bool:
        """Give the item up for good (a final error)."""
        return self._finish(claim, "state = 'failed', done_at = now(), last_error = %s", (error,))

    def extend(self, claim: Claim) -> bool:
        """Keep holding ``claim`` for another ``claim_s`` (a slow send). False: lost already."""
        return self._finish(
            claim, "claim_expires_at = now() + %s * interval '1 second'", (self.claim_s,)
        )
