"""Tables partitioned by time: partitions made ahead, retention by dropping whole partitions.

A partitioned table (``PARTITION BY RANGE (<timestamptz column>)``, made by a migration) gets
one partition per UTC day or month, named ``<table>_p<YYYYMMDD>`` or ``<table>_p<YYYYMM>``.
:func:`ensure_ahead` makes the current one and the next ``ahead`` (idempotent: a maintenance
job runs it, as a claimed work item, on one instance at a time); :func:`drop_before` detaches
and drops every partition that ends at or before a cutoff — retention without ``DELETE`` and the
vacuum it costs. Which column partitions which table, and why: docs/district.md.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

import psycopg
from psycopg import sql

Span = Literal["day", "month"]


def _start(t: datetime, span: Span) -> datetime:
    t = t.astimezone(UTC)
    if span == "day":
        return datetime(t.year, t.month, t.day, tzinfo=UTC)
    return datetime(t.year, t.month, 1, tzinfo=UTC)


def _next(t: datetime, span: Span) -> datetime:
    if span == "day":
        return t + timedelta(days=1)
    return datetime(t.year + t.month // 12, t.month % 12 + 1, 1, tzinfo=UTC)


def _name(table: str, start: datetime, span: Span) -> str:
    return f"{table}_p{start:%Y%m%d}" if span == "day" else f"{table}_p{start:%Y%m}"


def partitions(db: psycopg.Connection[Any], table: str, span: Span) -> dict[str, datetime]:
    """The time partitions of ``table`` made by this module: name → start (UTC)."""
    pattern = re.compile(rf"^{re.escape(table)}_p(\d{{8}}|\d{{6}})$")
    rows = db.execute(
        "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid"
        " WHERE i.inhparent = %s::regclass",
        (table,),
    ).fetchall()
    out = {}
    for (name,) in rows:
        m = pattern.match(name)
        if m:
            fmt = "%Y%m%d" if span == "day" else "%Y%m"
            out[str(name)] = datetime.strptime(m[1], fmt).replace(tzinfo=UTC)
    return dict(sorted(out.items(), key=lambda kv: kv[1]))


def ensure_ahead(
    db: psycopg.Connection[Any], table: str, span: Span, *, ahead: int, now: datetime
) -> list[str]:
    """Make the partitions of ``table`` from the one holding ``now`` to ``ahead`` spans later;
    returns the names made (those that existed are left alone)."""
    made = []
    start = _start(now, span)
    with db.transaction():
        have = partitions(db, table, span)
        for _ in range(ahead + 1):
            end = _next(start, span)
            name = _name(table, start, span)
            if name not in have:
                db.execute(
                    sql.SQL(
                        "CREATE TABLE IF NOT EXISTS {} PARTITION OF {} FOR VALUES FROM ({}) TO ({})"
                    ).format(
                        sql.Identifier(name),
                        sql.Identifier(table),
                        sql.Literal(start),
                        sql.Literal(end),
                    )
                )
                made.append(name)
            start = end
    return made


def drop_before(db: psycopg.Connection[Any], table: str, span: Span, cutoff: datetime) -> list[str]:
    """Detach and drop every partition of ``table`` that ends at or before ``cutoff``; returns
    their names. ``db`` must be in autocommit mode: ``DETACH … CONCURRENTLY`` lets writers and
    readers of the other partitions carry on meanwhile."""
    if not db.autocommit:
        raise ValueError("drop_before needs an autocommit connection (DETACH CONCURRENTLY)")
    dropped = []
    for name, start in partitions(db, table, span).items():
        if _next(start, span) <= cutoff:
            db.execute(
                sql.SQL("ALTER TABLE {} DETACH PARTITION {} CONCURRENTLY").format(
                    sql.Identifier(table), sql.Identifier(name)
                )
            )
            db.execute(sql.SQL("DROP TABLE {}").format(sql.Identifier(name)))
            dropped.append(name)
    return dropped
