"""Following a log that several instances write at once, in an order that skips nothing.

A follower that reads ``id > cursor`` from a table with concurrent writers skips rows: ids come
from a sequence when a row is inserted, not when its transaction commits, so a row with a lower
id can become visible after the follower has moved past it. Rows of a followed table therefore
carry the writing transaction's id (``xid xid8 NOT NULL DEFAULT pg_current_xact_id()``), and
:func:`next_batch` reads only rows whose transaction is older than every transaction still
running (``xid < pg_snapshot_xmin(pg_current_snapshot())``), in ``(xid, id)`` order. Every
transaction below that horizon has ended, so no row can appear behind the cursor later.

The price: a transaction left open anywhere in the cluster holds every follower back until it
ends (``idle_in_transaction_session_timeout`` bounds that; docs/district.md).

The cursor, one per follower and partition, is in ``follower_cursors``; :func:`save_cursor`
writes it in the transaction that writes the batch's effects, after
:func:`district.leases.fence`, so a takeover resumes exactly where the last holder committed.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import sql


@dataclass(frozen=True, slots=True, order=True)
class Position:
    """A row's place in the log: its transaction's id, then its own id."""

    xid: int = 0
    id: int = 0


def next_batch(
    db: psycopg.Connection[Any],
    table: str,
    after: Position,
    *,
    partitions: Sequence[int] | None = None,
    columns: Sequence[str] = ("payload",),
    limit: int = 500,
) -> list[tuple[Position, tuple[Any, ...]]]:
    """Up to ``limit`` rows of ``table`` after ``after`` whose transactions have all ended, in
    log order, each with its :class:`Position` and the values of ``columns``; only rows of
    ``partitions`` (a ``partition`` column) when given."""
    where = sql.SQL("")
    params: list[Any] = [str(after.xid), after.id]
    if partitions is not None:
        where = sql.SQL(" AND partition = ANY(%s)")
        params.append(list(partitions))
    params.append(limit)
    query = sql.SQL(
        "SELECT xid::text::bigint, id, {cols} FROM {table}"
        " WHERE (xid, id) > (%s::text::xid8, %s)"
        " AND xid < pg_snapshot_xmin(pg_current_snapshot()){where}"
        " ORDER BY xid, id LIMIT %s"
    ).format(
        cols=sql.SQL(", ").join(sql.Identifier(c) for c in columns),
        table=sql.Identifier(table),
        where=where,
    )
    return [(Position(int(r[0]), int(r[1])), tuple(r[2:])) for r in db.execute(query, params)]


def load_cursor(db: psycopg.Connection[Any], follower: str, partition: int) -> Position:
    """Where ``follower`` got to in ``partition`` (the start if it never committed there)."""
    row = db.execute(
        "SELECT xid::text::bigint, id FROM follower_cursors WHERE follower = %s AND partition = %s",
        (follower, partition),
    ).fetchone()
    return Position(int(row[0]), int(row[1])) if row else Position()


def save_cursor(
    db: psycopg.Connection[Any], follower: str, partition: int, position: Position
) -> None:
    """Record ``position`` in the caller's transaction (after its ``fence``)."""
    db.execute(
        "INSERT INTO follower_cursors (follower, partition, xid, id)"
        " VALUES (%s, %s, %s::text::xid8, %s)"
        " ON CONFLICT (follower, partition) DO UPDATE SET xid = excluded.xid,"
        " id = excluded.id, updated_at = now()",
        (follower, partition, str(position.xid), position.id),
    )
