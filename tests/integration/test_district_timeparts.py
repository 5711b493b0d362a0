"""Time partitions (district/timeparts.py) on the real throwaway PostgreSQL: made ahead,
idempotently; rows land in their day; retention drops whole partitions and their rows only."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import psycopg
import pytest

from district.timeparts import drop_before, ensure_ahead, partitions

NOW = datetime(2026, 12, 30, 15, 0, tzinfo=UTC)


@pytest.fixture
def db(pg_url: str) -> Iterator[psycopg.Connection[tuple[object, ...]]]:
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute(
            "CREATE TABLE readings (device_id text NOT NULL, ts timestamptz NOT NULL,"
            " dedup text NOT NULL) PARTITION BY RANGE (ts)"
        )
        conn.execute("CREATE UNIQUE INDEX readings_dedup ON readings (device_id, dedup, ts)")
        conn.execute(
            "CREATE TABLE audit (at timestamptz NOT NULL, what text) PARTITION BY RANGE (at)"
        )
        yield conn


def test_partitions_are_made_ahead_once(db: psycopg.Connection[tuple[object, ...]]) -> None:
    made = ensure_ahead(db, "readings", "day", ahead=3, now=NOW)
    assert made == [
        "readings_p20261230",
        "readings_p20261231",
        "readings_p20270101",
        "readings_p20270102",
    ]
    assert ensure_ahead(db, "readings", "day", ahead=3, now=NOW) == []
    assert ensure_ahead(db, "readings", "day", ahead=4, now=NOW) == ["readings_p20270103"]
    assert ensure_ahead(db, "audit", "month", ahead=1, now=NOW) == [
        "audit_p202612",
        "audit_p202701",
    ]
    db.execute(
        "INSERT INTO readings VALUES ('wr-1', %s, 'a'), ('wr-1', %s, 'b')",
        (NOW, NOW + timedelta(days=2)),
    )
    where = db.execute("SELECT tableoid::regclass::text FROM readings ORDER BY ts").fetchall()
    assert [w[0] for w in where] == ["readings_p20261230", "readings_p20270101"]
    with pytest.raises(psycopg.errors.UniqueViolation):  # a redelivered reading: same ts, dedup
        db.execute("INSERT INTO readings VALUES ('wr-1', %s, 'a')", (NOW,))
    with pytest.raises(psycopg.errors.CheckViolation):  # no partition that far ahead: loud
        db.execute("INSERT INTO readings VALUES ('wr-1', %s, 'c')", (NOW + timedelta(days=30),))


def test_retention_drops_whole_partitions(db: psycopg.Connection[tuple[object, ...]]) -> None:
    ensure_ahead(db, "readings", "day", ahead=5, now=NOW - timedelta(days=3))
    for d in range(-3, 3):
        db.execute(
            "INSERT INTO readings VALUES ('wr-1', %s, %s)", (NOW + timedelta(days=d), str(d))
        )
    dropped = drop_before(db, "readings", "day", cutoff=NOW - timedelta(days=1, hours=15))
    assert dropped == ["readings_p20261227", "readings_p20261228"]
    left = db.execute("SELECT dedup FROM readings ORDER BY ts").fetchall()
    assert [r[0] for r in left] == ["-1", "0", "1", "2"]
    assert list(partitions(db, "readings", "day")) == [
        "readings_p20261229",
        "readings_p20261230",
        "readings_p20261231",
        "readings_p20270101",
    ]
