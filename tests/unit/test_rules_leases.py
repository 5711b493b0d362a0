"""Two rules workers on one PostgreSQL sharing the device partitions by lease (rules/worker.py
``leases``, district/leases.py): every fall alerted once while they balance, a dead worker's
partitions evaluated by the other from the committed cursors, a zombie's late commit refused.

One process, one database, two "instances" (an alert store, a lease keeper and a worker each);
the keepers tick when the test says, on a fake clock, so the zombie still believes it holds
its leases. A lapse is made by moving the dead instance's expiry into the past (what ``ttl``
seconds of silence would do), not by waiting."""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from psycopg_pool import ConnectionPool

from alerts import AlertStore
from district.leases import LeaseKeeper, LeaseLost, ensure_partitions, holders
from district.partitions import partition_of
from district.pg import open_pool
from ingest.journal_pg import PgJournal
from ingest.payloads import Reading, decode
from ingest.topics import topic_for
from registry.models import Device, Registry
from rules.engine import RuleEngine
from rules.model import builtin_pack, load_rules
from rules.sources import PgRows
from rules.worker import UNEVALUATED_GRACE_S, RulesWorker
from tests.clock import FakeClock
from tests.mqtt import wait_for

T0 = 1_700_000_000.0
RULES = load_rules([builtin_pack()])
PARTITIONS = 8
DEVICES = [f"w{i:02d}" for i in range(24)]


def registry() -> Registry:
    return Registry(
        "y",
        devices=[
            Device(device_id=d, kind="wearable", compound="c3", building="b12", unit="3-12-501")
            for d in DEVICES
        ],
    )


class Instance:
    """An alert store, a partition lease keeper and a rules worker, as one instance has."""

    def __init__(self, url: str, name: str, clock: FakeClock) -> None:
        self.name = name
        self.store = AlertStore(url, clock=clock)
        self.pool: ConnectionPool = open_pool(url, name=name, max_size=2)
        self.keeper = LeaseKeeper(
            self.pool,
            name,
            count=PARTITIONS,
            ttl_s=10.0,
            clock=clock,
            before_release=lambda numbers: self.worker.release(numbers),
        )
        self.worker = RulesWorker(
            PgRows(url, (), fence=(name, {})),
            self.store,
            lambda: RuleEngine(RULES, registry(), clock=clock),
            community="y",
            clock=clock,
            batch_rows=7,
            leases=self.keeper,
        )

    def tick(self) -> None:
        """A heartbeat, then the worker follows (between its batches) what it holds."""
        self.keeper.tick()
        self.worker.follow_leases()

    def close(self) -> None:
        self.worker.source.close()
        self.pool.close()
        self.store.close()


@pytest.fixture
def world(pg_url: str) -> Iterator[tuple[PgJournal, Instance, Instance, FakeClock]]:
    clock = FakeClock(T0)
    journal = PgJournal(pg_url, partitions=PARTITIONS)
    with psycopg.connect(pg_url) as db:
        ensure_partitions(db, PARTITIONS)
    a, b = Instance(pg_url, "a", clock), Instance(pg_url, "b", clock)
    try:
        yield journal, a, b, clock
    finally:
        a.close()
        b.close()
        journal.close()


def send(journal: PgJournal, device: str, stream: str, ts: float, **body: Any) -> None:
    payload = json.dumps({"ts": round(ts * 1000), **body}).encode()
    r = decode(topic_for("y", "wearable", device, stream), payload, ts + 1)
    assert isinstance(r, Reading), r
    journal.write_batch([r], [])


def falls(store: AlertStore) -> Counter[str]:
    items, _ = store.find(rule_id="wearable_fall", limit=500)
    return Counter(a.device_id for a in items)


def telemetry(journal: PgJournal, t: float, seq: int) -> None:
    for d in DEVICES:
        send(journal, d, "telemetry", t, heart_rate=70, seq=seq)


def stream(journal: PgJournal, t: float, seq: int) -> None:
    """Telemetry of every device, then a fall of every device."""
    telemetry(journal, t, seq)
    for d in DEVICES:
        send(journal, d, "event", t + 1, event="fall", seq=seq + 1)


def share(a: Instance, b: Instance) -> None:
    a.tick()  # alone: takes every partition
    b.tick()  # two alive: its share is half, none free yet
    a.tick()  # gives half back (committing what it holds of them first)
    b.tick()  # takes them
    assert len(a.worker.partitions or []) == len(b.worker.partitions or []) == PARTITIONS // 2


def test_two_workers_share_the_partitions_and_alert_every_fall_once(
    world: tuple[PgJournal, Instance, Instance, FakeClock],
) -> None:
    journal, a, b, _clock = world
    a.tick()
    assert a.worker.partitions == list(range(PARTITIONS))
    telemetry(journal, T0 - 10, 0)
    a.worker.step(hold=True)  # telemetry evaluated, its commit held
    assert a.worker.source.dirty
    stream(journal, T0, 1)
    share(a, b)  # the release committed what a held of the partitions it gave up:
    assert b.worker.position > 0  # b starts after the telemetry a evaluated, not from 0
    a.worker.run_until_idle()
    b.worker.run_until_idle()
    mine = {d for d in DEVICES if partition_of(d, PARTITIONS) in (b.worker.partitions or [])}
    assert mine and mine != set(DEVICES)
    assert falls(a.store) == Counter(DEVICES)  # every fall once, whichever evaluated it
    stream(journal, T0 + 100, 10)  # open already: no second alert either
    a.worker.run_until_idle()
    b.worker.run_until_idle()
    assert falls(a.store) == Counter(DEVICES)
    with a.pool.connection() as db:
        assert set(holders(db).values()) == {"a", "b"}


def test_a_dead_workers_partitions_are_evaluated_by_the_other_from_the_committed_cursors(
    world: tuple[PgJournal, Instance, Instance, FakeClock],
) -> None:
    journal, a, b, _clock = world
    share(a, b)
    stream(journal, T0, 0)
    b.worker.run_until_idle()
    a.worker.source.read(1000)  # a reads its rows, commits nothing, and dies
    assert a.worker.source.dirty
    a_had = set(a.worker.partitions or [])
    with a.pool.connection() as db:  # ttl seconds without a heartbeat from a
        db.execute("UPDATE leases SET expires_at = now() - interval '1 second' WHERE holder = 'a'")
        db.execute("UPDATE instances SET expires_at = now() - interval '1 second'"
                   " WHERE instance_id = 'a'")  # fmt: skip
    b.tick()
    assert b.worker.partitions == list(range(PARTITIONS))
    b.worker.run_until_idle()
    assert falls(b.store) == Counter(DEVICES)  # a's devices too, none doubled
    assert a_had <= set(b.worker.partitions or [])

    # the zombie wakes up believing (by its own clock) it still holds its leases
    assert set(a.keeper.owned()) == a_had
    stream(journal, T0 + 100, 10)
    with pytest.raises(LeaseLost):
        a.worker.run_until_idle()
    assert falls(b.store) == Counter(DEVICES)  # refused and rolled back: nothing doubled
    a.worker.start()  # its thread drops what the fence refused
    try:
        deadline = time.monotonic() + 30
        while a.worker.partitions and time.monotonic() < deadline:
            time.sleep(0.05)
        assert a.worker.partitions == []
    finally:
        a.worker.stop()
    b.worker.run_until_idle()
    assert falls(b.store) == Counter(DEVICES)


def test_after_an_outage_longer_than_the_ttl_the_worker_evaluates_again_and_health_says_when_not(
    world: tuple[PgJournal, Instance, Instance, FakeClock],
) -> None:
    """One instance, the database away for longer than the lease ttl: its held commit is
    refused by the fence (the leases lapsed), and once its heartbeat comes back it takes them
    again and alerts the next falls. Before, the heartbeat renewed the lapsed leases under
    their old epoch, which the worker keeps refused: nothing was evaluated until a restart.
    Meanwhile /healthz names the partitions held but not evaluated."""
    journal, a, _b, clock = world
    a.tick()
    telemetry(journal, T0 - 10, 0)
    a.worker.step(hold=True)  # evaluated, its commit held when the database goes away
    with a.pool.connection() as db:  # the outage: a's leases lapse in the database
        db.execute("UPDATE leases SET expires_at = now() - interval '1 second' WHERE holder = 'a'")
    with pytest.raises(LeaseLost):
        a.worker.run_until_idle()  # the held commit, refused
    a.worker.start()  # its thread drops what the fence refused
    try:
        wait_for(lambda: a.worker.partitions == [])  # the refused partitions dropped
        # the keeper's own clock has not reached the ttl: it holds what the worker refused,
        # and health says so once that has lasted (a moment is ordinary: a balancing release)
        assert a.worker.health().unevaluated == ()
        clock.advance(UNEVALUATED_GRACE_S)
        assert a.worker.health().unevaluated == tuple(range(PARTITIONS))
        clock.advance(11 - UNEVALUATED_GRACE_S)  # past the ttl: the database is back, a tick
        a.keeper.tick()
        wait_for(lambda: a.worker.partitions == list(range(PARTITIONS)))  # taken up
        assert a.worker.health().unevaluated == ()
        stream(journal, T0, 1)
        wait_for(lambda: falls(a.store) == Counter(DEVICES))  # every fall alerted
    finally:
        a.worker.stop()
