"""The followers' reads of the PostgreSQL journal look only in the day partitions near the moments
their unread rows were written (:class:`ingest.journal_pg.DayBound`), and still give every row:
those of a batch held through an outage, stored days back, and those of an instance whose
clock runs days ahead, which the writer records in ``journal_outliers``."""

from __future__ import annotations

import json
import time
from typing import Any

import psycopg

from district import follow
from ingest import rows
from ingest.journal_pg import (
    _EACH,
    DAY,
    LATE_S,
    DayBound,
    JournalFollower,
    PgJournal,
    _day,
    each_params,
)
from ingest.payloads import MAX_AGE_S, Reading, decode

PAST_DAYS = 20


def reading(device: str, seq: int, received: float, ts: float | None = None) -> Reading:
    """A wearable's reading, received at ``received`` by the instance's clock (and taken then,
    unless ``ts``)."""
    body = {"ts": round((received if ts is None else ts) * 1000), "seq": seq, "heart_rate": 70}
    r = decode(f"community/y/wearable/{device}/telemetry", json.dumps(body).encode(), received)
    assert isinstance(r, Reading), r
    return r


def drain(follower: JournalFollower, db: psycopg.Connection[Any]) -> list[rows.Row]:
    out: list[rows.Row] = []
    while got := follower.next_rows(db, limit=50):
        out += [row for _, row in got]
    return out


def days_read(db: psycopg.Connection[Any], follower: JournalFollower) -> tuple[int, int]:
    """(day partitions the follower's next read looks in, day partitions there are)."""
    params = each_params(follower.position, 50, follower.days)
    plan = "\n".join(
        r[0]
        for r in db.execute(
            "EXPLAIN (ANALYZE, COSTS OFF, TIMING OFF, SUMMARY OFF) " + _EACH, params
        )
    )
    scans = [line for line in plan.splitlines() if "on readings_p" in line]
    assert scans, plan
    (there,) = db.execute(
        "SELECT count(*) FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhparent"
        " WHERE c.relname = 'readings'"
    ).fetchone() or (0,)
    return sum("never executed" not in line for line in scans), int(there)


def journal(url: str) -> PgJournal:
    """A journal keeping PAST_DAYS days before today (and the days made ahead)."""
    j = PgJournal(url, partitions=8)
    for k in range(1, PAST_DAYS + 1):
        j._make_day(_day(time.time()) - k * DAY)
    return j


def test_a_follower_reads_only_the_days_near_the_moments_its_unread_rows_were_written(
    pg_url: str,
) -> None:
    j = journal(pg_url)
    db = psycopg.connect(pg_url, autocommit=True)
    try:
        follower = JournalFollower(db, "rules", range(8))
        now = time.time()
        j.write_batch([reading(f"w-{i}", 1, now) for i in range(8)], [])
        looked, there = days_read(db, follower)
        assert there == PAST_DAYS + 1 + 7  # the past days, today, the days made ahead
        # a follower just started: every day to an hour from now (not the days ahead)
        assert PAST_DAYS + 1 <= looked <= PAST_DAYS + 2, looked
        assert len(drain(follower, db)) == 8
        j.write_batch([reading(f"w-{i}", 2, time.time()) for i in range(8)], [])
        looked, _ = days_read(db, follower)
        # from a day and an hour before its last read began to an hour after now: three
        # days at most (four an hour before midnight), of the 28 there are
        assert 1 <= looked <= 4, looked
        assert len(drain(follower, db)) == 8
    finally:
        db.close()
        j.close()


def test_rows_written_far_from_their_moment_are_read_all_the_same(pg_url: str) -> None:
    j = journal(pg_url)
    db = psycopg.connect(pg_url, autocommit=True)
    try:
        follower = JournalFollower(db, "rules", range(8))
        now = time.time()
        j.write_batch([reading("w-1", 1, now)], [])
        assert len(drain(follower, db)) == 1
        j.write_batch([reading("w-1", 2, time.time())], [])
        assert len(drain(follower, db)) == 1
        since = follower.days.since(follower.position)
        floor = follower.days.floor(since)
        assert floor is not None and floor > now - LATE_S - DayBound.STEP_S - 60  # bounded now

        # a wearable's reading from nearly a day ago (the oldest decode believes), kept while it
        # was out of reach: not an outlier, and read
        late = reading("w-5", 3, time.time(), ts=time.time() - MAX_AGE_S + 120)
        j.write_batch([late, reading("w-1", 3, time.time())], [])
        got = drain(follower, db)
        assert sorted((r[1], r[6]) for r in got) == [("w-1", 3), ("w-5", 3)]
        assert db.execute("SELECT count(*) FROM journal_outliers").fetchone() == (0,)

        held = [reading("w-2", 4, now - 3 * DAY), reading("w-3", 4, now - 3 * DAY + 5)]
        ahead = [reading("w-4", 4, now + 2 * DAY)]  # an instance two days ahead
        j.write_batch(held, [])  # a batch held through an outage, written now
        j.write_batch(ahead, [])
        j.write_batch([reading("w-1", 4, time.time())], [])
        assert db.execute("SELECT count(*) FROM journal_outliers").fetchone() == (2,)
        got = drain(follower, db)
        assert sorted((r[1], r[6]) for r in got) == [("w-1", 4), ("w-2", 4), ("w-3", 4), ("w-4", 4)]
        assert drain(follower, db) == []
    finally:
        db.close()
        j.close()


def test_a_batch_near_its_moment_records_no_outlier(pg_url: str) -> None:
    j = journal(pg_url)
    try:
        now = time.time()
        j.write_batch([reading("w-1", 1, now), reading("w-1", 2, now - 23 * 3600)], [])
        with psycopg.connect(pg_url) as db:
            assert db.execute("SELECT count(*) FROM journal_outliers").fetchone() == (0,)
    finally:
        j.close()


def test_the_bound_forgets_what_was_read_when_the_rows_are_given_again() -> None:
    bound = DayBound()
    at = {0: follow.Position(10, 1), 1: follow.Position(0, 0)}
    assert bound.since(at) == 0 and bound.floor(0) is None  # nothing read yet: every day
    bound.read(horizon=50, xmax=50, start=1000.0, done=[0, 1])
    assert bound.since(at) == 50  # both read to the horizon
    assert bound.floor(50) == 1000.0 - LATE_S - DayBound.STEP_S
    bound.read(horizon=60, xmax=70, start=2000.0, done=[1])  # partition 0 gave its limit
    assert bound.since(at) == 50
    assert (
        bound.floor(50) == 1000.0 - LATE_S - DayBound.STEP_S
    )  # (ids 50-69 may be older than the later read)
    bound.forget()  # rewound: from the cursors again
    assert bound.since(at) == 0 and bound.floor(0) is None
