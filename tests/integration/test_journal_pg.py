"""What only the PostgreSQL journal has: day partitions (a reading whose day has none is stored
and counted, never a failed batch), its store-trouble names, a writer connection opened again
after the server dropped it."""

from __future__ import annotations

import json
import math
import threading
import time
from typing import Any

import msgspec
import psycopg
import pytest
from prometheus_client import REGISTRY

from district import timeparts
from district.pg import open_pool
from ingest.journal_pg import _INSERT, _STAGING, PgJournal
from ingest.payloads import MAX_AGE_S, Reading, decode

DAY = 86_400.0
MIDNIGHT = math.floor(time.time() / DAY) * DAY


def msg(device: str, received: float, ts: float, seq: int) -> Reading:
    body = {"ts": round(ts * 1000), "seq": seq, "heart_rate": 70}
    r = decode(f"community/y/wearable/{device}/telemetry", json.dumps(body).encode(), received)
    assert isinstance(r, Reading), r
    return r


def _untimed(device: str, received: float, seq: int) -> Reading:
    """A message without the device's time: stored on its receive time, a repeat by key."""
    body = {"seq": seq, "heart_rate": 70}
    r = decode(f"community/y/wearable/{device}/telemetry", json.dumps(body).encode(), received)
    assert isinstance(r, Reading), r
    return r


def days(url: str) -> list[str]:
    with psycopg.connect(url) as db:
        return list(timeparts.partitions(db, "readings", "day"))


def test_partitions_are_made_ahead_and_for_a_day_that_lacks_one(pg_url: str) -> None:
    journal = PgJournal(pg_url, ahead_days=2)
    try:
        made = days(pg_url)
        assert len(made) == 4  # yesterday (decode believes a day-old ts), today, two ahead
        # a journal started three days ago, or a backfill: the day is made when needed
        old = MIDNIGHT - 3 * DAY + 60
        r = msg("w-1", old + 5, old, 1)
        assert journal.write_batch([r], []).new == [r]
        assert journal.counters["partitions_made"] == 1 and journal.counters["pts_fallbacks"] == 0
        assert len(days(pg_url)) == 5
        # its redelivery the next morning still lands on its day, and is dropped
        assert journal.write_batch([msg("w-1", old + DAY - 60, old, 1)], []).duplicates == 1
        # a second journal (another instance) opening finds them all there, and so does the
        # maintenance job
        PgJournal(pg_url, ahead_days=2).close()
        assert journal.make_ahead() == []
        assert len(days(pg_url)) == 5
        assert journal.counters == {
            "partitions_made": 1,
            "pts_fallbacks": 0,
            "partition_retries": 0,
            "deadlock_retries": 0,
        }
    finally:
        journal.close()


def test_a_reading_of_a_day_retention_dropped_is_stored_on_its_receive_time(
    pg_url: str,
) -> None:
    writer, other = PgJournal(pg_url), PgJournal(pg_url)
    try:
        day = MIDNIGHT - 2 * DAY
        first = msg("w-1", day + 100, day + 100, 1)
        writer.write_batch([first], [])
        # another instance drops that day while this one still counts on it
        assert other.prune(day + DAY) == 1
        late = msg("w-1", day + DAY + 3600, day + DAY - 60, 2)  # believed: a day old at most
        assert late.ts_flag is None
        result = writer.write_batch([late], [])
        assert result.new == [late]
        assert (writer.counters["partition_retries"], writer.counters["pts_fallbacks"]) == (1, 1)
        assert writer.readings("w-1", since=day + DAY - 60, until=day + DAY)[0]["ts"] is not None
        assert writer.count_readings("w-1") == 1
        # nothing remade the dropped day
        assert not any(
            name.endswith(time.strftime("%Y%m%d", time.gmtime(day))) for name in days(pg_url)
        )
        # a reading whose time decode would not believe (a caller that did not decode)
        odd = msgspec.structs.replace(late, ts=day - 30 * DAY, received=MIDNIGHT + 10, seq=3)
        assert writer.write_batch([odd], []).new == [odd]
        assert writer.counters["pts_fallbacks"] == 2
    finally:
        writer.close()
        other.close()


def test_the_stores_trouble_is_named_and_the_writer_reconnects(pg_url: str) -> None:
    journal = PgJournal(pg_url)
    try:
        r = msg("w-1", MIDNIGHT + 10, MIDNIGHT + 5, 1)
        journal.write_batch([r], [])
        with psycopg.connect(pg_url, autocommit=True) as admin:
            assert journal._w is not None
            admin.execute("SELECT pg_terminate_backend(%s)", (journal._w.info.backend_pid,))
        with pytest.raises(psycopg.Error) as raised:
            journal.write_batch([msg("w-1", MIDNIGHT + 20, MIDNIGHT + 15, 2)], [])
        assert journal.trouble(raised.value) is not None  # the store's: messages wait
        journal.probe()  # a new connection: it takes writes again
        assert len(journal.write_batch([msg("w-1", MIDNIGHT + 20, MIDNIGHT + 15, 2)], []).new) == 1
        # what the message holds: PostgreSQL keeps no NUL in text
        bad = msgspec.structs.replace(r, event="a\x00b", seq=9, ts=MIDNIGHT + 6)
        with pytest.raises(Exception) as refused:
            journal.write_batch([bad], [])
        assert journal.trouble(refused.value) is None  # the message's: a dead letter
        assert journal.count_readings() == 2
    finally:
        journal.close()


def test_a_day_old_believable_reading_has_its_partition_at_open(pg_url: str) -> None:
    journal = PgJournal(pg_url, ahead_days=0)
    try:
        now = time.time()
        r = msg("w-1", now, now - MAX_AGE_S + 60, 1)
        assert r.ts_flag is None
        journal.write_batch([r], [])
        assert journal.counters["partitions_made"] == 0 and journal.counters["pts_fallbacks"] == 0
    finally:
        journal.close()


def test_two_instances_given_the_same_messages_at_once_store_each_once(pg_url: str) -> None:
    """A dead instance's session resumed by another while it was still writing: the same
    messages (redelivered: later receive times) reach two journals at the same moment."""
    pool = open_pool(pg_url, name="instance", max_size=2)
    journals = [PgJournal(pg_url, pool=pool), PgJournal(pg_url, pool=pool)]
    new: list[int] = []
    errors: list[BaseException] = []

    def deliver(n: int, journal: PgJournal) -> None:
        try:
            for b in range(10):
                batch = [
                    msg(f"w-{k}", MIDNIGHT + 100 + n + b, MIDNIGHT + 10 * b + k, b)
                    for k in range(20)
                ]
                if n:
                    batch.reverse()  # delivered in another order
                new.append(len(journal.write_batch(batch, []).new))
        except BaseException as e:
            errors.append(e)

    try:
        threads = [threading.Thread(target=deliver, args=(n, j)) for n, j in enumerate(journals)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert errors == []
        assert sum(new) == 200 == journals[0].count_readings()
    finally:
        for j in journals:
            j.close()
        assert not pool.closed  # the instance's pool is the instance's to close
        pool.close()


def test_two_instances_given_the_same_untimed_messages_at_once_store_each_once(
    pg_url: str,
) -> None:
    """As above for messages without the device's time (stored on their receive time, so the
    partitioned unique index cannot see a repeat): a zombie instance and the survivor that
    resumed its session write the same redelivered messages in transactions at the same
    moment. Each is stored once."""
    pool = open_pool(pg_url, name="instance", max_size=2)
    journals = [PgJournal(pg_url, pool=pool), PgJournal(pg_url, pool=pool)]
    errors: list[BaseException] = []
    rounds = 30
    barrier = threading.Barrier(2)

    def deliver(n: int, journal: PgJournal) -> None:
        try:
            for b in range(rounds):
                batch = [_untimed(f"w-{k}", time.time() + n, b) for k in range(5)]
                barrier.wait(timeout=30)  # both transactions at the same moment
                journal.write_batch(batch, [])
        except BaseException as e:
            errors.append(e)
            barrier.abort()

    try:
        threads = [threading.Thread(target=deliver, args=(n, j)) for n, j in enumerate(journals)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert errors == []
        assert journals[0].count_readings() == rounds * 5  # none twice
    finally:
        for j in journals:
            j.close()
        pool.close()


def _read_from_readings(node: dict[str, Any]) -> float:
    """Rows the scans of ``readings``' partitions under ``node`` read, over all loops: those
    they returned and those their filters threw away (EXPLAIN gives both per loop)."""
    n = 0.0
    if (
        node.get("Relation Name", "").startswith("readings_p")
        and node["Node Type"] != "ModifyTable"
    ):
        read = node["Actual Rows"] + node.get("Rows Removed by Filter", 0)
        n += (read + node.get("Rows Removed by Index Recheck", 0)) * node["Actual Loops"]
    return n + sum(_read_from_readings(child) for child in node.get("Plans", []))


def test_the_repeat_check_of_untimed_messages_reads_their_keys_not_the_whole_journal(
    pg_url: str,
) -> None:
    """A writer keeps its statement's plan for the connection's life, and the plan made while
    the journal was young (every table nearly empty) once hashed every untimed row there is
    to check a batch's few keys: on the bench's fresh database an insert of 30 readings took
    10 ms after a few seconds at 5,000 msg/s, growing with the journal. Checked here with
    that plan: a batch of 20 repeats of stored untimed messages reads its 20 keys' rows (by
    the untimed index), not the 3,000 rows stored, and every one is found a repeat."""
    journal = PgJournal(pg_url)
    now = time.time()
    try:
        with psycopg.connect(pg_url) as db:
            db.execute(_STAGING)
            db.execute(f"PREPARE write AS {_INSERT}")
            # planned now, over an empty journal, and kept (a statement without parameters is
            # planned once, at its first execution, until a table it reads changes)
            db.execute("EXECUTE write")
            db.commit()
            for b in range(10):
                journal.write_batch(
                    [_untimed(f"w-{k}", now + b, b * 300 + k) for k in range(300)], []
                )
            assert journal.count_readings() == 3_000
            db.execute(
                "INSERT INTO journal_staging SELECT row_number() OVER (), partition,"
                " extract(epoch FROM pts), device_id, shape, ts, received, seq, dedup, event,"
                " ts_flag, payload FROM readings ORDER BY id LIMIT 20"
            )
            row = db.execute("EXPLAIN (ANALYZE, FORMAT JSON) EXECUTE write").fetchone()
            db.rollback()
        assert row is not None
        plan = row[0][0]["Plan"]
        assert plan["Actual Rows"] == 0  # all 20 are repeats
        assert _read_from_readings(plan) <= 20, json.dumps(plan, indent=1)
    finally:
        journal.close()


def test_what_the_journal_counts_is_on_metrics(pg_url: str) -> None:
    """The four counts of ``counters`` (health: this journal's) are counters on /metrics too
    (the process's, every journal summed; an ingest process's added into the main one's)."""

    def metrics() -> dict[str, float]:
        return {
            k: REGISTRY.get_sample_value(f"jiayuan_journal_{k}_total") or 0.0
            for k in ("partitions_made", "pts_fallbacks", "partition_retries", "deadlock_retries")
        }

    before = metrics()
    writer, other = PgJournal(pg_url), PgJournal(pg_url)
    try:
        day = MIDNIGHT - 2 * DAY  # before yesterday: not made at open
        writer.write_batch([msg("w-1", day + 100, day + 100, 1)], [])  # its day is made
        assert other.prune(day + DAY) == 1  # and dropped by another instance
        late = msg("w-1", day + DAY + 3600, day + DAY - 60, 2)  # its own day dropped
        writer.write_batch([late], [])
        moved = {k: v - before[k] for k, v in metrics().items()}
        assert (
            moved
            == writer.counters
            == {
                "partitions_made": 1,
                "pts_fallbacks": 1,
                "partition_retries": 1,
                "deadlock_retries": 0,
            }
        )
        assert set(other.counters.values()) == {0}
        # a fallback counts a reading stored, not each attempt to write one: the same reading
        # written again (a batch retried after its commit failed) is a duplicate, not counted
        assert writer.write_batch([late], []).duplicates == 1
        assert metrics()["pts_fallbacks"] - before["pts_fallbacks"] == 1
        assert writer.counters["pts_fallbacks"] == 1
    finally:
        writer.close()
        other.close()
