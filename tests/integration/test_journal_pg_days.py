"""The followers' reads of the PostgreSQL journal look only in the day partitions near the moments
their unread rows were written (:class:`ingest.journal_pg.DayBound`), and still give every row:
a device's reading nearly a day old, those of a batch held through an outage, stored days back,
and those of an instance whose clock runs days ahead, which the table's trigger records in
``journal_outliers`` whoever writes them."""

from __future__ import annotations

import json
import math
import time
from typing import Any

import psycopg

from district import follow, timeparts
from ingest.journal_pg import (
    _EACH,
    DAY,
    EARLY_S,
    LATE_S,
    STEP_S,
    DayBound,
    JournalFollower,
    PgJournal,
    _day,
    each_params,
)
from ingest.payloads import MAX_AGE_S, Reading, decode
from tests.integration.test_journal_pg_follow import drain

PAST_DAYS = 20


def reading(device: str, seq: int, received: float, ts: float | None = None) -> Reading:
    """A wearable's reading, received at ``received`` by the instance's clock (and taken then,
    unless ``ts``)."""
    body = {"ts": round((received if ts is None else ts) * 1000), "seq": seq, "heart_rate": 70}
    r = decode(f"community/y/wearable/{device}/telemetry", json.dumps(body).encode(), received)
    assert isinstance(r, Reading), r
    return r


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
    there = len(timeparts.partitions(db, "readings", "day"))
    return sum("never executed" not in line for line in scans), there


def journal(url: str) -> PgJournal:
    """A journal keeping PAST_DAYS days before today (and the days made ahead)."""
    j = PgJournal(url, partitions=8)
    for k in range(1, PAST_DAYS + 1):
        j._make_day(_day(time.time()) - k * DAY)
    return j


def commit(follower: JournalFollower, url: str) -> None:
    """The follower's cursors committed, as the rules worker commits them with its effects."""
    with psycopg.connect(url) as db:
        follower.save(db)
    follower.saved()


def outliers(db: psycopg.Connection[Any]) -> int:
    row = db.execute("SELECT count(*) FROM journal_outliers").fetchone()
    return int(row[0]) if row else 0


def test_a_follower_reads_only_the_days_near_the_moments_its_unread_rows_were_written(
    pg_url: str,
) -> None:
    j = journal(pg_url)
    db = psycopg.connect(pg_url, autocommit=True)
    try:
        follower = JournalFollower(db, "rules", range(8))
        j.write_batch([reading(f"w-{i}", 1, time.time()) for i in range(8)], [])
        looked, there = days_read(db, follower)
        assert there == PAST_DAYS + 1 + 7  # the past days, today, the days made ahead
        assert looked == there  # a follower just started: every day
        assert len(drain(follower, db)) == 8
        commit(follower, pg_url)  # (its transaction notes when it took its id)
        assert drain(follower, db) == []  # (a read whose horizon is past that id)
        j.write_batch([reading(f"w-{i}", 2, time.time()) for i in range(8)], [])
        looked, _ = days_read(db, follower)
        # from a day and two hours before that transaction began to a day and an hour after
        # now: five days at most, of the 28 there are
        assert 3 <= looked <= 5, looked
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
        commit(follower, pg_url)
        j.write_batch([reading("w-1", 2, time.time())], [])
        assert len(drain(follower, db)) == 1
        floor = follower.days.floor(follower.days.since(follower.position))
        assert floor is not None and floor > now - LATE_S - STEP_S - 60  # bounded now

        # a wearable's reading from nearly a day ago (the oldest decode believes), kept while it
        # was out of reach, and one from an instance whose clock is 20 hours ahead: no
        # outliers, and read
        late = reading("w-5", 3, time.time(), ts=time.time() - MAX_AGE_S + 120)
        early = reading("w-6", 3, time.time() + 20 * 3600)
        j.write_batch([late, early, reading("w-1", 3, time.time())], [])
        got = drain(follower, db)
        assert sorted((r[1], r[6]) for r in got) == [("w-1", 3), ("w-5", 3), ("w-6", 3)]
        assert outliers(db) == 0

        held = [reading("w-2", 4, now - 3 * DAY), reading("w-3", 4, now - 3 * DAY + 5)]
        ahead = [reading("w-4", 4, now + 2 * DAY)]  # an instance two days ahead
        j.write_batch(held, [])  # a batch held through an outage, written now
        j.write_batch(ahead, [])
        j.write_batch([reading("w-1", 4, time.time())], [])
        assert outliers(db) == 2
        got = drain(follower, db)
        assert sorted((r[1], r[6]) for r in got) == [("w-1", 4), ("w-2", 4), ("w-3", 4), ("w-4", 4)]
        assert drain(follower, db) == []
    finally:
        db.close()
        j.close()


def test_every_writer_records_its_outliers(pg_url: str) -> None:
    """The trigger, not the journal's statement: a row written by other means (the previous
    release's instance in a rolling upgrade, a bulk load) is recorded and read as well."""
    j = journal(pg_url)
    db = psycopg.connect(pg_url, autocommit=True)
    try:
        follower = JournalFollower(db, "rules", range(8))
        j.write_batch([reading("w-1", 1, time.time())], [])
        assert len(drain(follower, db)) == 1
        commit(follower, pg_url)
        j.write_batch([reading("w-1", 2, time.time())], [])
        assert len(drain(follower, db)) == 1
        assert follower.days.floor(follower.days.since(follower.position)) is not None
        db.execute(
            "INSERT INTO readings (partition, pts, device_id, shape, ts, received, payload)"
            " SELECT partition, pts - interval '3 days', 'w-9', shape, ts - 3 * 86400,"
            " received - 3 * 86400, payload FROM readings WHERE device_id = 'w-1' LIMIT 1"
        )
        assert outliers(db) == 1
        assert [r[1] for r in drain(follower, db)] == ["w-9"]
        # the trigger's margins are the follower's
        found = db.execute("SELECT pg_get_functiondef('journal_outliers'::regproc)").fetchone()
        body = found[0] if found else ""
        assert f"interval '{LATE_S:.0f} seconds'" in body
        assert f"interval '{EARLY_S:.0f} seconds'" in body
    finally:
        db.close()
        j.close()


def test_a_transaction_open_across_an_anchor_holds_the_floor_to_an_earlier_one(
    pg_url: str,
) -> None:
    """A writer that took its id before the follower's latest anchor and commits after it: the
    floor comes from an anchor taken before that id, so its rows are read."""
    j = journal(pg_url)
    db = psycopg.connect(pg_url, autocommit=True)
    held = psycopg.connect(pg_url)
    try:
        follower = JournalFollower(db, "rules", range(8))
        j.write_batch([reading("w-1", 1, time.time())], [])
        assert len(drain(follower, db)) == 1
        commit(follower, pg_url)  # the first anchor
        first = follower.days.latest()
        held.execute(
            "INSERT INTO readings (partition, pts, device_id, shape, ts, received, payload)"
            " SELECT partition, pts - interval '23 hours', 'w-7', shape, ts - 23 * 3600,"
            " received, payload FROM readings WHERE device_id = 'w-1' LIMIT 1"
        )
        (xid,) = held.execute("SELECT pg_current_xact_id()::text::bigint").fetchone() or (0,)
        j.write_batch([reading("w-1", 2, time.time())], [])
        assert drain(follower, db) == []  # behind the open transaction
        time.sleep(DayBound.EVERY_S)
        commit(follower, pg_url)  # a later anchor, above the open transaction's id
        assert follower.days.latest() > first
        since = follower.days.since(follower.position)
        assert since <= int(xid)
        assert follower.days.floor(since) == first - LATE_S - STEP_S
        held.commit()
        got = drain(follower, db)
        assert sorted((r[1], r[6]) for r in got) == [("w-1", 2), ("w-7", None)]
    finally:
        held.close()
        db.close()
        j.close()


def test_a_batch_near_its_moment_records_no_outlier(pg_url: str) -> None:
    j = journal(pg_url)
    try:
        now = time.time()
        j.write_batch([reading("w-1", 1, now), reading("w-1", 2, now - 23 * 3600)], [])
        with psycopg.connect(pg_url) as db:
            assert outliers(db) == 0
    finally:
        j.close()


def test_the_bound_forgets_what_was_read_when_the_rows_are_given_again() -> None:
    bound = DayBound()
    at = {0: follow.Position(10, 1), 1: follow.Position(0, 0)}
    assert bound.since(at) == 0 and bound.floor(0) is None  # nothing read yet: every day
    bound.anchor(40, 1000.0)  # a transaction began at 1000 and took id 40
    bound.read(horizon=50, now=1001.0, done=[0, 1])
    assert bound.since(at) == 50  # both read to the horizon
    assert bound.floor(50) == 1000.0 - LATE_S - STEP_S
    bound.anchor(60, 2000.0)
    bound.read(horizon=55, now=2001.0, done=[1])  # partition 0 gave its limit: from its cursor
    assert bound.since(at) == 50
    assert bound.floor(50) == 1000.0 - LATE_S - STEP_S  # (id 60 is not below 50)
    bound.forget()  # rewound: from the cursors again
    assert bound.since(at) == 0 and bound.floor(0) is None


def test_a_clock_set_back_drops_the_anchors() -> None:
    bound = DayBound()
    bound.anchor(40, 1000.0)
    bound.read(horizon=50, now=1001.0, done=[0])
    assert bound.floor(50) == 1000.0 - LATE_S - STEP_S
    bound.read(horizon=50, now=999.0, done=[0])  # the server's clock is behind the anchor
    assert bound.latest() == -math.inf and bound.floor(50) is None
