"""Partition leases and claimable work on the real throwaway PostgreSQL (district/leases.py,
district/claims.py), in one process: several keepers and queues, each with its own pool, as
instances would have."""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator

import psycopg
import pytest
from psycopg_pool import ConnectionPool

from district.claims import Claim, WorkQueue, add
from district.leases import LeaseKeeper, LeaseLost, counts, ensure_partitions, fence, holders
from district.partitions import partition_of
from district.pg import open_pool
from tests.clock import FakeClock

PARTITIONS = 8


def wait_for(check: Callable[[], bool], what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout}s: {what}")
        time.sleep(0.05)


@pytest.fixture
def pools(pg_url: str) -> Iterator[Callable[[str], ConnectionPool]]:
    """``pools(name)``: a migrated pool of its own per instance name."""
    made: list[ConnectionPool] = []

    def make(name: str) -> ConnectionPool:
        pool = open_pool(pg_url, name=name, max_size=4)
        made.append(pool)
        return pool

    first = make("setup")
    with first.connection() as db:
        ensure_partitions(db, PARTITIONS)
    try:
        yield make
    finally:
        for p in made:
            p.close()


def tick_until(keeper: LeaseKeeper, check: Callable[[], bool], what: str) -> None:
    """Tick ``keeper`` (as its heartbeat would) until ``check()``."""

    def ticked() -> bool:
        keeper.tick()
        return check()

    wait_for(ticked, what)


def held_by(pool: ConnectionPool) -> dict[str, int]:
    with pool.connection() as db:
        return counts(holders(db).values())


def test_partitions_are_stable_and_spread() -> None:
    ids = [f"wr-{i:04d}" for i in range(4000)]
    spread = Counter(partition_of(d, 64) for d in ids)
    assert partition_of("wr-0001", 64) == partition_of("wr-0001", 64)
    assert set(spread) == set(range(64))
    assert max(spread.values()) < 2 * 4000 / 64  # no partition twice its fair share


def test_instances_share_the_partitions_evenly(
    pools: Callable[[str], ConnectionPool],
) -> None:
    a = LeaseKeeper(pools("a"), "a", count=PARTITIONS, ttl_s=30)
    a.tick()
    assert len(a.owned()) == PARTITIONS
    assert {lease.epoch for lease in a.owned().values()} == {1}
    b = LeaseKeeper(pools("b"), "b", count=PARTITIONS, ttl_s=30)
    c = LeaseKeeper(pools("c"), "c", count=PARTITIONS, ttl_s=30)
    observer = pools("observer")
    for _ in range(4):  # a gives up what is over its share, the newcomers take it
        for k in (b, c, a):
            k.tick()
    assert sorted(held_by(observer).values()) == [2, 3, 3]
    owned = [set(k.owned()) for k in (a, b, c)]
    assert set().union(*owned) == set(range(PARTITIONS))
    assert sum(len(o) for o in owned) == PARTITIONS  # nobody holds a partition twice


def test_a_silent_instance_loses_its_partitions_to_the_others(
    pools: Callable[[str], ConnectionPool],
) -> None:
    a = LeaseKeeper(pools("a"), "a", count=PARTITIONS, ttl_s=2.0)
    b = LeaseKeeper(pools("b"), "b", count=PARTITIONS, ttl_s=2.0)
    for _ in range(3):
        a.tick()
        b.tick()
    old = a.owned()
    assert len(old) == PARTITIONS // 2
    # a stops renewing (killed, frozen, cut off); b keeps ticking and takes its share over
    tick_until(b, lambda: len(b.owned()) == PARTITIONS, "b takes a's partitions over")
    for p, lease in old.items():
        assert b.owned()[p].epoch == lease.epoch + 1
    # a's late writes are refused: its epoch is gone
    with pools("late").connection() as db, db.transaction(), pytest.raises(LeaseLost):
        fence(db, "a", next(iter(old.values())))


def test_an_instance_stops_working_when_it_cannot_renew(
    pools: Callable[[str], ConnectionPool],
) -> None:
    clock = FakeClock(100.0)
    pool = pools("a")
    k = LeaseKeeper(pool, "a", count=PARTITIONS, ttl_s=10, clock=clock)
    k.tick()
    clock.advance(9)
    assert len(k.owned()) == PARTITIONS
    pool.close()  # the database is out of reach from here on
    with pytest.raises(psycopg.OperationalError):
        k.tick()
    clock.advance(1)  # ttl since the last renewal was sent: another may take them now
    assert k.owned() == {}


def test_a_clean_stop_hands_over_at_once(pools: Callable[[str], ConnectionPool]) -> None:
    a = LeaseKeeper(pools("a"), "a", count=PARTITIONS, ttl_s=300)
    b = LeaseKeeper(pools("b"), "b", count=PARTITIONS, ttl_s=300)
    a.tick()
    b.tick()
    a.release_all()
    b.tick()  # no five-minute wait for a's leases to lapse
    assert len(b.owned()) == PARTITIONS


def test_balancing_lets_the_work_commit_before_a_release(
    pools: Callable[[str], ConnectionPool],
) -> None:
    released: list[list[int]] = []
    a = LeaseKeeper(pools("a"), "a", count=PARTITIONS, ttl_s=300, before_release=released.append)
    a.tick()
    LeaseKeeper(pools("b"), "b", count=PARTITIONS, ttl_s=300).tick()
    a.tick()
    assert released == [[4, 5, 6, 7]]
    assert sorted(a.owned()) == [0, 1, 2, 3]


def test_a_write_fenced_by_its_lease_holds_off_a_takeover(
    pools: Callable[[str], ConnectionPool],
) -> None:
    a = LeaseKeeper(pools("a"), "a", count=PARTITIONS, ttl_s=2.0)
    a.tick()
    lease = a.owned()[0]
    b = LeaseKeeper(pools("b"), "b", count=PARTITIONS, ttl_s=2.0)
    writer = pools("writer")
    took: list[int] = []
    with writer.connection() as db, db.transaction():
        fence(db, "a", lease)  # a's cursor commit is under way
        time.sleep(2.2)  # meanwhile a's lease lapses
        t = threading.Thread(target=lambda: took.extend(g.number for g in b.tick().gained))
        t.start()
        t.join(60)  # b's tick skips the row a's transaction holds; it does not wait for it
        assert not t.is_alive()
        assert 0 not in took
        assert set(took) == set(range(1, PARTITIONS))  # the others had lapsed: b has them
    tick_until(b, lambda: 0 in b.owned(), "b takes partition 0 once a's write committed")
    assert b.owned()[0].epoch == lease.epoch + 1


def test_a_lease_that_lapsed_is_taken_again_under_a_new_epoch_not_renewed(
    pools: Callable[[str], ConnectionPool],
) -> None:
    """A database outage longer than the ttl: the holder's leases lapsed and nobody took them.
    Its next heartbeat takes them again as new leases (a new epoch, reported gained), so that
    work fenced under the old epoch stays refused and the new epoch's is not: before, the rows
    were renewed under the old epoch, which the rules worker had refused, and it evaluated
    nothing again until restarted."""
    pool = pools("a")
    a = LeaseKeeper(pool, "a", count=PARTITIONS, ttl_s=30)
    a.tick()
    old = a.owned()
    assert set(old) == set(range(PARTITIONS))
    with pool.connection() as db:  # the outage: a's heartbeats did not come for over the ttl
        db.execute("UPDATE leases SET expires_at = now() - interval '1 second'")
    changes = a.tick()
    assert {g.number for g in changes.gained} == set(range(PARTITIONS))
    new = a.owned()
    assert {n: lease.epoch for n, lease in new.items()} == {
        n: lease.epoch + 1 for n, lease in old.items()
    }
    with pool.connection() as db, db.transaction(), pytest.raises(LeaseLost):
        fence(db, "a", old[0])
    with pool.connection() as db, db.transaction():
        fence(db, "a", new[0])  # the new epoch's work commits
    assert a.tick().gained == ()  # and from then on it is renewed, not taken again


# ---------------------------------------------------------------------- claims


def test_work_is_added_once_and_claimed_only_when_due(
    pools: Callable[[str], ConnectionPool],
) -> None:
    pool = pools("a")
    with pool.connection() as db, db.transaction():
        assert add(db, "escalation", "alert-1/step-1", {"alert": 1}, due_in_s=0)
        assert not add(db, "escalation", "alert-1/step-1", {"alert": 1}, due_in_s=0)
        assert add(db, "escalation", "alert-1/step-2", {"alert": 1}, due_in_s=3600)
    q = WorkQueue(pool, "a")
    claims = q.claim(["escalation"])
    assert [c.key for c in claims] == ["alert-1/step-1"]
    assert claims[0].payload == {"alert": 1}
    assert q.claim(["escalation"]) == []  # claimed already, and step 2 is not due
    assert q.complete(claims[0])
    assert not q.complete(claims[0])


def test_concurrent_claimers_never_take_the_same_item(
    pools: Callable[[str], ConnectionPool],
) -> None:
    with pools("setup2").connection() as db, db.transaction():
        for i in range(200):
            add(db, "notification", f"n-{i}", {"i": i})
    done: list[str] = []
    lock = threading.Lock()

    def work(name: str) -> None:
        q = WorkQueue(pools(name), name)
        while claims := q.claim(["notification"], limit=7):
            for c in claims:
                if q.complete(c):
                    with lock:
                        done.append(c.key)

    threads = [threading.Thread(target=work, args=(f"w{i}",)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(done) == sorted(f"n-{i}" for i in range(200))
    assert len(done) == len(set(done))


def test_a_dead_holders_claim_is_taken_and_its_late_completion_refused(
    pools: Callable[[str], ConnectionPool],
) -> None:
    pool = pools("a")
    with pool.connection() as db, db.transaction():
        add(db, "notification", "n-1", {})
    dead = WorkQueue(pool, "dead", claim_s=0.5)
    (first,) = dead.claim(["notification"])
    alive = WorkQueue(pools("b"), "alive", claim_s=30)
    assert alive.claim(["notification"]) == []  # held, not yet expired
    claims: list[Claim] = []

    def reclaimed() -> bool:
        claims.extend(alive.claim(["notification"]))
        return bool(claims)

    wait_for(reclaimed, "the expired claim is taken")
    (second,) = claims
    assert second.attempt == first.attempt + 1
    assert not dead.complete(first)  # too late: the item is alive's now
    assert not dead.extend(first)
    assert alive.complete(second)


def test_a_failed_send_is_retried_later_then_given_up(
    pools: Callable[[str], ConnectionPool],
) -> None:
    pool = pools("a")
    with pool.connection() as db, db.transaction():
        add(db, "notification", "n-1", {})
    q = WorkQueue(pool, "a")
    (c,) = q.claim(["notification"])
    assert q.retry(c, 3600, "smtp: 451 try later")
    assert q.claim(["notification"]) == []
    with pool.connection() as db, db.transaction():
        db.execute("UPDATE work_items SET due_at = now()")  # an hour later
    (again,) = q.claim(["notification"])
    assert again.attempt == 2
    assert q.fail(again, "smtp: 550 no such user")
    with pool.connection() as db:
        assert db.execute("SELECT state, last_error FROM work_items").fetchone() == (
            "failed",
            "smtp: 550 no such user",
        )
