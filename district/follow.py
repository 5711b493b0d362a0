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

Rows read *ahead* of that order (the rules worker's urgent rows, committed above the horizon:
:class:`ingest.journal_pg.JournalFollower`) are kept in ``follower_ahead``, per follower and
partition, by :func:`save_ahead` in the same transaction as their effects: the follower skips
them when the ordered read reaches them, and drops them once its cursor has passed them. So a
row is evaluated once whether it was read ahead or in order, and a takeover (or a restart after
SIGKILL) knows which of the rows ahead of the cursor are done (:func:`load_ahead`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
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


def load_ahead(
    db: psycopg.Connection[Any], follower: str, partitions: Sequence[int]
) -> dict[int, set[Position]]:
    """The rows of ``partitions`` that ``follower`` committed ahead of its cursors."""
    out: dict[int, set[Position]] = {p: set() for p in partitions}
    for p, xid, id_ in db.execute(
        "SELECT partition, xid::text::bigint, id FROM follower_ahead"
        " WHERE follower = %s AND partition = ANY(%s)",
        (follower, list(partitions)),
    ):
        out.setdefault(int(p), set()).add(Position(int(xid), int(id_)))
    return out


def save_ahead(
    db: psycopg.Connection[Any],
    follower: str,
    added: Sequence[tuple[int, Position]],
    dropped: Sequence[tuple[int, Position]],
) -> None:
    """Record the rows ``added`` (partition, position) as evaluated ahead, and forget those
    ``dropped`` (the cursor has passed them), in the caller's transaction (after its
    ``fence``)."""
    if dropped:
        db.execute(
            "DELETE FROM follower_ahead a"
            " USING unnest(%s::integer[], %s::text[], %s::bigint[]) AS d(p, xid, id)"
            " WHERE a.follower = %s AND a.partition = d.p AND a.xid = d.xid::xid8"
            " AND a.id = d.id",
            (
                [p for p, _ in dropped],
                [str(pos.xid) for _, pos in dropped],
                [pos.id for _, pos in dropped],
                follower,
            ),
        )
    if added:
        db.execute(
            "INSERT INTO follower_ahead (follower, partition, xid, id)"
            " SELECT %s, p, xid::xid8, id"
            " FROM unnest(%s::integer[], %s::text[], %s::bigint[]) AS a(p, xid, id)"
            " ON CONFLICT DO NOTHING",
            (
                follower,
                [p for p, _ in added],
                [str(pos.xid) for _, pos in added],
                [pos.id for _, pos in added],
            ),
        )


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


def save_cursors(
    db: psycopg.Connection[Any], follower: str, positions: Mapping[int, Position]
) -> None:
    """:func:`save_cursor` for several partitions in one statement (one round trip, where a
    statement per partition cost the rules worker's commit up to one per partition)."""
    if not positions:
        return
    parts = sorted(positions)  # one order on every instance: no deadlock
    db.execute(
        "INSERT INTO follower_cursors (follower, partition, xid, id)"
        " SELECT %s, p, xid::xid8, id"
        " FROM unnest(%s::integer[], %s::text[], %s::bigint[]) AS c(p, xid, id)"
        " ON CONFLICT (follower, partition) DO UPDATE SET xid = excluded.xid,"
        " id = excluded.id, updated_at = now()",
        (
            follower,
            parts,
            [str(positions[p].xid) for p in parts],
            [positions[p].id for p in parts],
        ),
    )
