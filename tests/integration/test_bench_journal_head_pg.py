"""bench/journal_head.py on PostgreSQL: the newest id is the identity's last value (a look that
reads no rows), and a round still ends only when its rows are committed: an id a rolled-back
insert took moves the newest id on, not the count."""

from __future__ import annotations

import json
import time
from pathlib import Path

import psycopg

from bench.journal_head import JournalHead
from ingest.journal_pg import PgJournal
from ingest.payloads import Reading, decode


def _reading(n: int) -> Reading:
    body = {"ts": round(time.time() * 1000), "seq": n, "heart_rate": 70}
    r = decode("community/y/wearable/w-1/telemetry", json.dumps(body).encode(), time.time())
    assert isinstance(r, Reading), r
    return r


def test_the_head_follows_the_identity_and_counts_only_committed_rows(
    pg_url: str, tmp_path: Path
) -> None:
    journal = PgJournal(pg_url)
    try:
        with JournalHead(tmp_path, pg_url) as head:
            assert head.top() == 0  # nothing handed out yet
            journal.write_batch([_reading(n) for n in range(3)], [])
            base = head.top()
            assert base == 3
            journal.write_batch([_reading(n) for n in range(3, 5)], [])
            assert head.top() == base + 2 and head.count_after(base) == 2
            assert head.reached(base, 2) and not head.reached(base, 3)
            with psycopg.connect(pg_url) as db:  # an insert rolled back: its id is skipped
                db.execute(
                    "INSERT INTO readings (partition, pts, device_id, shape, ts, received,"
                    " payload) VALUES (0, now(), 'w-2', 0, 1, 1, '')"
                )
                db.rollback()
            assert head.top() == base + 3
            assert not head.reached(base, 3)
    finally:
        journal.close()
