"""A killed instance's partitions and claims are taken over: real processes
(devtools/standin.py) on the real throwaway PostgreSQL, one of them SIGKILLed or SIGSTOPped."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg
import pytest

from devtools import children
from devtools.standin import SENT_TABLE
from district.claims import add
from district.leases import counts, ensure_partitions, holders
from district.pg import connect, open_pool

PARTITIONS = 8
ROOT = Path(__file__).resolve().parents[2]


def wait_for(check: Callable[[], bool], what: str, timeout: float = 90.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout}s: {what}")
        time.sleep(0.1)


class World:
    """The database of one test, and the stand-in instances it started."""

    def __init__(self, url: str, logs: Path) -> None:
        self.url = url
        self.logs = logs
        self.procs: list[subprocess.Popen[bytes]] = []
        pool = open_pool(url, name="setup", max_size=1)
        with pool.connection() as db:
            ensure_partitions(db, PARTITIONS)
            db.execute(SENT_TABLE)
        pool.close()
        self.db = connect(url, name="observer", autocommit=True)

    def start(self, name: str, *args: str) -> subprocess.Popen[bytes]:
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        proc = children.spawn(
            [
                *(sys.executable, "-m", "devtools.standin", self.url, name),
                *("--ttl", "2", "--claim", "3", "--partitions", str(PARTITIONS), *args),
            ],
            self.logs / f"{name}.log",
            env,
        )
        self.procs.append(proc)
        return proc

    def add(self, keys: list[str]) -> None:
        with self.db.transaction():
            for k in keys:
                add(self.db, "notification", k, {})

    def held(self) -> dict[str, int]:
        return counts(holders(self.db).values())

    def claimed_by(self, name: str) -> list[str]:
        rows = self.db.execute(
            "SELECT key FROM work_items WHERE claimed_by = %s AND state = 'pending'", (name,)
        ).fetchall()
        return sorted(r[0] for r in rows)

    def sent(self) -> list[tuple[str, str]]:
        return [(r[0], r[1]) for r in self.db.execute("SELECT key, by_instance FROM sent")]

    def epochs(self) -> dict[int, int]:
        rows = self.db.execute(
            "SELECT number, epoch FROM leases WHERE kind = 'partition'"
        ).fetchall()
        return {int(p): int(e) for p, e in rows}

    def done(self) -> int:
        row = self.db.execute("SELECT count(*) FROM work_items WHERE state = 'done'").fetchone()
        return int(row[0]) if row else 0

    def close(self) -> None:
        for p in self.procs:
            children.stop(p, kill=True)
            p.wait()
        self.db.close()


@pytest.fixture
def world(pg_url: str, tmp_path: Path) -> Iterator[World]:
    w = World(pg_url, tmp_path)
    try:
        yield w
    finally:
        w.close()


def test_a_killed_instance_strands_no_partition_and_no_claim(world: World) -> None:
    held_keys = [f"held-{i}" for i in range(5)]
    world.add(held_keys)
    victim = world.start("victim", "--hold", "5")
    wait_for(lambda: world.claimed_by("victim") == held_keys, "the victim claims 5 items")
    wait_for(lambda: world.held() == {"victim": PARTITIONS}, "the victim holds every partition")
    epochs_before = world.epochs()

    world.start("survivor")
    wait_for(lambda: world.held() == {"victim": 4, "survivor": 4}, "the two share the partitions")
    more = [f"n-{i}" for i in range(60)]
    world.add(more)
    wait_for(lambda: world.done() == 60, "the survivor sends the 60 new items")
    assert world.claimed_by("victim") == held_keys  # still holding, heartbeat going

    victim.send_signal(signal.SIGKILL)
    victim.wait()
    killed_at = time.monotonic()
    wait_for(lambda: world.held() == {"survivor": PARTITIONS}, "the survivor takes all over")
    partitions_s = time.monotonic() - killed_at
    wait_for(lambda: world.done() == 65, "the victim's claimed items are sent")
    claims_s = time.monotonic() - killed_at
    print(f"takeover after SIGKILL: partitions {partitions_s:.1f} s, claims {claims_s:.1f} s")

    sent = world.sent()
    assert sorted(k for k, _ in sent) == sorted(held_keys + more)  # each once, none lost
    assert {k: by for k, by in sent if k in held_keys} == dict.fromkeys(held_keys, "survivor")
    epochs_after = world.epochs()
    assert all(epochs_after[p] > epochs_before[p] for p in range(PARTITIONS))


def test_a_frozen_holder_keeps_an_advisory_lock_but_loses_its_leases(world: World) -> None:
    """Why leases and not session advisory locks: a holder that stops answering (SIGSTOP: a
    hung process, a VM paused, a host cut off without a FIN) keeps its session, and with it its
    advisory lock, while its leases lapse and are taken over. A SIGKILLed holder loses both."""
    key = 4242
    frozen = world.start("frozen", "--advisory", str(key))
    wait_for(lambda: world.held() == {"frozen": PARTITIONS}, "frozen holds every partition")

    def advisory_free() -> bool:
        with psycopg.connect(world.url, autocommit=True) as probe:
            row = probe.execute("SELECT pg_try_advisory_lock(%s)", (key,)).fetchone()
            return bool(row and row[0])  # released with the probe's session

    assert not advisory_free()
    world.start("other")
    wait_for(lambda: world.held() == {"frozen": 4, "other": 4}, "the two share the partitions")
    frozen.send_signal(signal.SIGSTOP)
    try:
        wait_for(lambda: world.held() == {"other": PARTITIONS}, "other takes the leases over")
        assert not advisory_free()  # the frozen session still holds the lock
    finally:
        frozen.send_signal(signal.SIGKILL)
        frozen.send_signal(signal.SIGCONT)
        frozen.wait()
    wait_for(advisory_free, "the advisory lock goes with the killed session")
