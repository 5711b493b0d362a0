"""A fall on PostgreSQL is evaluated as soon as its own transaction commits, not once every older
transaction in the cluster has ended (district/follow.py's horizon), and still exactly once: not
again when the horizon passes it, not lost when the worker dies between the read ahead and the
ordered read. The rules worker in this process over a real PostgreSQL (a "crash" is a worker
thrown away without a stop, as in tests/unit/test_rules_worker.py); the whole service with a
real Mosquitto in tests/integration/test_pg_fall_held.py."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from alerts import AlertStore
from district.pg import connect
from ingest.journal_pg import JournalFollower, urgent_ahead
from tests.clock import FakeClock
from tests.mqtt import wait_for
from tests.unit.test_rules_worker import T0, CrashingStore, World

HOLD = """
INSERT INTO readings (partition, pts, device_id, shape, ts, received, seq, dedup, event,
                      ts_flag, payload)
SELECT partition, pts + interval '1 ms', device_id, shape, ts + 0.001, received, seq + 1000,
       NULL, event, ts_flag, payload
FROM readings WHERE device_id = %s AND shape & 3 = 0 ORDER BY id DESC LIMIT 1
"""
"""One more telemetry row of a device, in the caller's (open) transaction."""


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(T0)


@pytest.fixture
def world(pg_url: str, tmp_path: Path, clock: FakeClock) -> Iterator[World]:
    yield World(tmp_path, clock, alerts=pg_url)
    while World.opened:
        World.opened.pop().close()


@pytest.fixture
def held(pg_url: str) -> Iterator[psycopg.Connection[Any]]:
    """A connection whose transaction the test keeps open (an ingest batch stuck mid-way)."""
    db = connect(pg_url)
    try:
        yield db
    finally:
        db.close()


def hold_telemetry(held: psycopg.Connection[Any], device: str) -> None:
    """A telemetry row of ``device`` written in ``held``'s transaction, left open."""
    assert held.execute(HOLD, (device,)).rowcount == 1


def fall(world: World, ts: float, seq: int) -> None:
    """A fall journaled, and the worker told so as the pipeline tells it after its commit
    (:meth:`RulesWorker.committed`; from another instance, the journal's notification)."""
    world.send("wearable", "w1", "event", ts, event="fall", seq=seq)
    world.worker.urgent()


def ordered_read(url: str) -> list[Any]:
    """What the ordered read alone gives a new follower after the rules worker's cursors."""
    with connect(url, autocommit=True) as db:
        return JournalFollower(db, "rules", range(64)).next_rows(db)


def ahead_rows(url: str) -> int:
    with connect(url, autocommit=True) as db:
        row = db.execute("SELECT count(*) FROM follower_ahead").fetchone()
    return int(row[0]) if row else 0


def fall_matches(world: World) -> list[int]:
    items, _ = world.real.find(rule_id="wearable_fall", limit=50)
    return [a.match_count for a in items]


def test_a_fall_is_raised_while_an_older_telemetry_transaction_is_open_and_once_only(
    world: World, held: psycopg.Connection[Any], pg_url: str
) -> None:
    for i in range(3):
        world.send("wearable", "w1", "telemetry", T0 + i, heart_rate=70, seq=i)
    world.worker.run_until_idle()
    hold_telemetry(held, "w1")
    world.send("wearable", "w1", "telemetry", T0 + 3, heart_rate=71, seq=3)  # committed
    fall(world, T0 + 4, seq=4)  # committed

    assert ordered_read(pg_url) == []  # behind the open transaction: nothing in order
    world.worker.run_until_idle()
    assert fall_matches(world) == [1]  # raised while the older transaction is still open
    assert ahead_rows(pg_url) == 2  # the device's telemetry before the fall, and the fall
    assert world.worker.source.lag()[0] == 0  # (the rows read ahead are evaluated)

    held.commit()  # the horizon passes the fall
    assert world.worker.source.lag()[0] == 1  # the held row
    world.worker.run_until_idle()
    assert fall_matches(world) == [1]  # not evaluated again
    assert world.worker.source.lag()[0] == 0  # the held row evaluated, in order
    assert ahead_rows(pg_url) == 0  # forgotten once the cursor passed them
    assert ordered_read(pg_url) == []
    fall(world, T0 + 900, seq=5)
    world.worker.run_until_idle()
    assert fall_matches(world) == [2]  # the next fall is matched as before


def test_the_device_rows_read_ahead_come_in_its_order_before_its_fall(
    world: World, held: psycopg.Connection[Any], pg_url: str
) -> None:
    world.send("wearable", "w1", "telemetry", T0, heart_rate=70, seq=0)
    world.worker.run_until_idle()
    hold_telemetry(held, "w1")
    for i in range(1, 4):
        world.send("wearable", "w1", "telemetry", T0 + i, heart_rate=70, seq=i)
    fall(world, T0 + 4, seq=4)
    world.send("wearable", "w2", "telemetry", T0 + 5, heart_rate=70, seq=5)  # not urgent
    batch, _ = world.worker.source.read(100)
    assert [(r[1], r[6]) for r in batch] == [("w1", 1), ("w1", 2), ("w1", 3), ("w1", 4)]
    assert world.worker.source.read(100) == ([], False)  # given once
    with world.real.connection() as db:  # rewound: none of it was committed
        world.worker.source.load(db)
    again, _ = world.worker.source.read(100)
    assert again == batch
    held.commit()
    rest, _ = world.worker.source.read(100)
    assert sorted((r[1], r[6]) for r in rest) == [("w1", 1000), ("w2", 5)]


@pytest.mark.parametrize("committed", [True, False], ids=["after-commit", "before-commit"])
def test_a_fall_read_ahead_is_neither_lost_nor_doubled_by_a_crash_before_the_ordered_read(
    pg_url: str,
    held: psycopg.Connection[Any],
    tmp_path: Path,
    clock: FakeClock,
    committed: bool,
) -> None:
    crashing = CrashingStore(AlertStore(pg_url, clock=clock))
    world = World(tmp_path, clock, store=crashing)
    try:
        world.send("wearable", "w1", "telemetry", T0, heart_rate=70, seq=0)
        world.worker.run_until_idle()
        hold_telemetry(held, "w1")
        fall(world, T0 + 4, seq=4)
        if committed:  # raised and committed, then killed before the ordered read
            world.worker.run_until_idle()
            assert fall_matches(world) == [1]
        else:  # read and evaluated ahead, then killed in its commit
            crashing.fail = RuntimeError("killed mid-transaction")
            with pytest.raises(RuntimeError):
                world.worker.step()
            assert fall_matches(world) == []
            crashing.fail = None
        # a new worker on the same database, loaded from what is committed
        again = World(tmp_path, clock, store=crashing)
        again.worker.run_until_idle()
        assert fall_matches(again) == [1]  # raised while the older transaction is open
        held.commit()
        again.worker.run_until_idle()
        assert fall_matches(again) == [1]  # once, whichever read took it
        assert again.worker.source.lag()[0] == 0 and ahead_rows(pg_url) == 0
    finally:
        while World.opened:
            World.opened.pop().close()


def test_a_fall_another_instance_journals_wakes_the_worker_at_once(
    world: World, held: psycopg.Connection[Any]
) -> None:
    world.send("wearable", "w1", "telemetry", T0, heart_rate=70, seq=0)
    world.worker.tick_s = 3600.0  # no wake-up of its own: only the notification wakes it
    world.worker.start()
    try:
        wait_for(lambda: world.worker.source.lag()[0] == 0)  # idle now, for the tick's hour
        hold_telemetry(held, "w1")
        # journaled by another writer (World.send tells this worker nothing)
        world.send("wearable", "w1", "event", T0 + 4, event="fall", seq=4)
        wait_for(lambda: fall_matches(world) == [1])
    finally:
        world.worker.stop()


def test_the_read_ahead_limit_is_never_spent_on_rows_read_ahead_already(
    world: World, held: psycopg.Connection[Any], pg_url: str
) -> None:
    for device in ("w1", "w2"):
        world.send("wearable", device, "telemetry", T0, heart_rate=70, seq=0)
    world.worker.run_until_idle()
    hold_telemetry(held, "w1")
    for n, device in enumerate(("w1", "w2")):
        world.send("wearable", device, "event", T0 + 4 + n, event="fall", seq=4 + n)
    with connect(pg_url, autocommit=True) as db:
        follower = JournalFollower(db, "rules", range(64), ahead=True)
        got = []
        for _ in range(2):  # one at a time: the second is not starved by the first
            rows_ = urgent_ahead(db, follower.position, follower.read_ahead, limit=1)
            for p, pos, _row in rows_:
                follower.read_ahead.setdefault(p, set()).add(pos)
            got += [row[1] for _, _, row in rows_]
    assert got == ["w1", "w2"]
