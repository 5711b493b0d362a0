"""Session slots strand nothing: two stand-in instances (devtools/standin.py, real processes)
share four persistent MQTT 5 sessions on ``$share/jiayuan/exp/#`` of the real Mosquitto by lease
in the real throwaway PostgreSQL; one is SIGKILLed mid-stream, the other takes its slots over and
resumes their sessions, and every message is stored once (docs/district.md, "session slots")."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from devtools import children
from devtools.broker import Broker
from devtools.standin import SENT_TABLE, SLOT_TABLES
from district.leases import SLOT, counts, ensure_leases, ensure_partitions, holders
from district.pg import Connection, connect, open_pool
from tests.mqtt import Publisher

pytestmark = pytest.mark.network

SLOTS = 4
MESSAGES = 600
ROOT = Path(__file__).resolve().parents[2]


def wait_for(check: Callable[[], bool], what: str, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout}s: {what}")
        time.sleep(0.1)


def one(db: Connection, query: str) -> int:
    row = db.execute(query.encode()).fetchone()
    return int(row[0]) if row and row[0] is not None else 0


@pytest.fixture
def db(pg_url: str) -> Iterator[Connection]:
    pool = open_pool(pg_url, name="setup", max_size=1)
    with pool.connection() as setup:
        ensure_partitions(setup, 8)
        ensure_leases(setup, SLOT, SLOTS)
        setup.execute(SENT_TABLE)
        setup.execute(SLOT_TABLES)
    pool.close()
    with connect(pg_url, name="observer", autocommit=True) as conn:
        yield conn


def test_a_killed_instances_sessions_are_resumed_and_nothing_is_lost(
    broker: Broker, db: Connection, pg_url: str, tmp_path: Path
) -> None:
    accounts = {}
    for i in range(SLOTS):
        a = broker.test_access(f"slot-{i}")
        accounts[str(i)] = [a.username, a.password]
    accounts_file = tmp_path / "slots.json"
    accounts_file.write_text(json.dumps(accounts))
    procs: list[subprocess.Popen[bytes]] = []

    def start(name: str) -> subprocess.Popen[bytes]:
        proc = children.spawn(
            [
                *(sys.executable, "-m", "devtools.standin", pg_url, name, "--ttl", "2"),
                *("--slots", str(SLOTS), "--mqtt-port", str(broker.port)),
                *("--slot-accounts", str(accounts_file)),
            ],
            tmp_path / f"{name}.log",
            {**os.environ, "PYTHONPATH": str(ROOT)},
        )
        procs.append(proc)
        return proc

    def slots() -> dict[str, int]:
        return counts(holders(db, SLOT).values())

    def connected(name: str) -> int:
        return one(
            db, f"SELECT count(DISTINCT slot) FROM slot_connects WHERE by_instance = '{name}'"
        )

    pub = Publisher(broker, "pub")
    try:
        victim = start("victim")
        wait_for(lambda: slots() == {"victim": SLOTS} and connected("victim") == SLOTS, "victim up")
        start("survivor")
        wait_for(lambda: slots() == {"victim": 2, "survivor": 2}, "the two share the slots")
        wait_for(lambda: connected("survivor") == 2, "the survivor's sessions connected")

        def publish() -> None:
            for i in range(MESSAGES):
                pub.publish(f"exp/m/{i}", f"m{i:04d}")
                if i % 20 == 19:
                    time.sleep(0.05)

        publisher = threading.Thread(target=publish)
        publisher.start()
        wait_for(lambda: one(db, "SELECT count(*) FROM stored WHERE by_instance = 'victim'") >= 50,
                 "the victim stores its share")  # fmt: skip
        orphaned = sorted(n for n, who in holders(db, SLOT).items() if who == "victim")
        victim.send_signal(signal.SIGKILL)
        victim.wait()
        publisher.join()
        pub.wait_acked()

        wait_for(lambda: slots() == {"survivor": SLOTS}, "the survivor takes every slot")
        wait_for(lambda: one(db, "SELECT count(*) FROM stored") == MESSAGES, "all stored")
        stored = {r[0] for r in db.execute("SELECT payload FROM stored")}
        assert stored == {f"m{i:04d}" for i in range(MESSAGES)}  # none lost, none twice
        slots_in = f"slot IN ({', '.join(map(str, orphaned))})"
        resumed = one(
            db,
            "SELECT count(DISTINCT slot) FROM slot_connects"
            f" WHERE by_instance = 'survivor' AND session_present AND {slots_in}",
        )
        assert resumed == len(orphaned) == 2  # the victim's sessions resumed, not started afresh
        adopted = one(
            db,
            "SELECT count(*) FROM standin_deliveries"
            f" WHERE by_instance = 'survivor' AND {slots_in}",
        )
        assert adopted > 0  # what waited in them reached the survivor
        deliveries = one(db, "SELECT count(*) FROM standin_deliveries")
        dups = one(db, "SELECT count(*) FROM standin_deliveries WHERE dup")
        print(
            f"stored {len(stored)} of {MESSAGES}; {adopted} through the victim's resumed"
            f" sessions; deliveries {deliveries}, DUP-flagged {dups}"
        )
    finally:
        pub.close()
        for p in procs:
            children.stop(p, kill=True)
