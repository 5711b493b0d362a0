"""The journal follower's mechanism, shared by the rollups and the InfluxDB sink: a commit wakes
it, a step that fails is taken again from the cursor (the connection kept after a
:class:`Retry`, opened again after any other error), and the pause before it follows
base.retry's backoff or a longer wait the other side asked for."""

from __future__ import annotations

import contextlib
import gc
import json
import os
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from base.retry import Backoff
from ingest.follower import Follower, Retry, save_cursor, write_lock
from ingest.journal import Journal
from ingest.payloads import Reading, decode
from tests.mqtt import wait_for

T0 = 1_700_000_000.0


def fill(journal: Journal, n: int, start: int = 0) -> None:
    readings = []
    for i in range(start, start + n):
        body = {"seq": i, "ts": int((T0 + i) * 1000), "heart_rate": 70}
        r = decode("community/y/wearable/w-1/telemetry", json.dumps(body).encode(), T0 + i)
        assert isinstance(r, Reading)
        readings.append(r)
    journal.write_batch(readings, [])


class Counting(Follower):
    """Counts the rows it passes, ten a step; ``failing`` steps fail first, in order."""

    name = "counting"

    def __init__(self, path: Path, failing: list[Exception] | None = None, **kw: float) -> None:
        super().__init__(path, backoff=Backoff(first_s=0.01, max_s=0.02), **kw)
        self.failing = failing or []
        self.seen: list[int] = []
        self.opened = 0

    def open(self) -> sqlite3.Connection:
        self.opened += 1
        return super().open()

    def step(self, db: sqlite3.Connection) -> bool:
        if self.failing:
            raise self.failing.pop(0)
        ids = [
            r[0]
            for r in db.execute(
                "SELECT id FROM readings WHERE id > ? ORDER BY id LIMIT 10", (self.position,)
            )
        ]
        if not ids:
            return False
        with write_lock(self.path):
            save_cursor(db, self.name, ids[-1])
        self.seen += ids
        self.position = ids[-1]
        return len(ids) == 10


@pytest.fixture
def journal(tmp_path: Path) -> Iterator[Journal]:
    j = Journal(tmp_path / "journal.db", synchronous="NORMAL")
    yield j
    j.close()


def test_a_commit_wakes_a_resting_follower(journal: Journal) -> None:
    fill(journal, 5)
    f = Counting(journal.path, idle_s=3600.0)  # without the wake-up: an hour's rest
    f.start()
    try:
        wait_for(lambda: f.position == 5, timeout=20)
        fill(journal, 25, start=5)
        f.wake()
        wait_for(lambda: f.position == 30, timeout=20)
    finally:
        f.stop()
    assert f.seen == list(range(1, 31))


@pytest.mark.expect_errors('jiayuan_log_errors_total{logger="ingest.follower"}')
def test_a_failed_step_is_taken_again_from_the_cursor(journal: Journal) -> None:
    fill(journal, 30)
    failing: list[Exception] = [Retry("server away"), Retry("still away"), OSError("disk")]
    f = Counting(journal.path, failing=failing, idle_s=0.02)
    f.start()
    try:
        wait_for(lambda: f.position == 30, timeout=20)
    finally:
        f.stop()
    assert f.seen == list(range(1, 31))  # each row once, in order
    assert f.opened == 2  # the two Retry kept the connection; the OSError opened a new one
    assert f.failures == 0
    db = sqlite3.connect(journal.path)
    assert db.execute("SELECT last_id FROM cursors WHERE name = 'counting'").fetchone() == (30,)


def test_the_pause_before_a_retry_follows_the_backoff_or_what_was_asked(
    journal: Journal,
) -> None:
    f = Follower(journal.path, backoff=Backoff(first_s=1.0, max_s=8.0))
    f.failures = 1
    assert f.retry_delay() == 1.0
    f.failures = 3
    assert f.retry_delay() == 4.0 and f.retry_delay(2.5) == 4.0
    assert f.retry_delay(20.0) == 20.0  # a server's Retry-After beyond the backoff
    f.failures = 10
    assert f.retry_delay() == 8.0


def test_a_journal_done_with_leaves_no_descriptor_open(tmp_path: Path) -> None:
    """Each journal's write lock holds a descriptor of its lock file; a process that opens
    many journals over its life (the test suite: one a test) must not keep them all."""

    def open_fds() -> set[str]:
        found = set()
        for fd in os.listdir("/proc/self/fd"):
            with contextlib.suppress(OSError):  # listdir's own, closed by now
                found.add(os.readlink(f"/proc/self/fd/{fd}"))
        return found

    paths = [tmp_path / f"j{i}" / "journal.db" for i in range(20)]
    for path in paths:
        j = Journal(path, synchronous="NORMAL")
        fill(j, 3)
        j.close()
        del j
    gc.collect()
    assert not {p for p in open_fds() if p.startswith(str(tmp_path))}
    # a writer still holding the file shares one lock with every other writer of it
    kept = Journal(paths[0], synchronous="NORMAL")
    try:
        assert write_lock(paths[0]) is write_lock(paths[0])
        fill(kept, 3, start=3)
        assert sum(p.endswith("journal.db-writelock") for p in open_fds()) >= 1
    finally:
        kept.close()
