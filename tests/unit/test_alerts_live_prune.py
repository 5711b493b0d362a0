"""``live_changes`` is pruned: each instance's feed deletes what it has been past for its keep
time, and a console reconnecting from a pruned entry gets ``resync`` (list the alerts again),
never a replay with a silent gap. Two stores on one PostgreSQL as two instances; the feeds'
clocks are fake, so nothing waits for the keep time."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from alerts import AlertStore
from alerts.db import PgDatabase
from alerts.live import CommitOrderFeed, PositionGone
from ingest.journal import Journal
from jiayuan.api import create_app
from registry import Registry
from tests.alerting import sse
from tests.clock import FakeClock
from tests.staff import ADMIN, app_context
from tests.unit.test_alerts_lifecycle import fire
from tests.unit.test_alerts_live import Heard, two

__all__ = ["two"]  # the fixture: instance A's store and instance B's, on one database


def pg(store: AlertStore) -> PgDatabase:
    assert isinstance(store.database, PgDatabase)
    return store.database


def kept(store: AlertStore) -> int:
    return int(store.query("SELECT count(*) FROM live_changes")[0][0])


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(0.0)


def test_a_feed_prunes_what_it_has_been_past_for_its_keep_time(
    two: tuple[AlertStore, AlertStore], clock: FakeClock
) -> None:
    a, b = two
    first = [a.apply(fire(f"w-{i}")) for i in range(3)]
    assert all(c is not None for c in first)
    feed = CommitOrderFeed(pg(b), poll_s=600, keep_s=100, prune_every_s=10, clock=clock).start()
    try:
        heard = Heard(feed)
        assert feed.prune() == 0  # notes where it is: past the three
        clock.advance(60)
        assert feed.prune() == 0 and kept(a) == 3  # not past them for 100 s yet
        clock.advance(40)
        assert feed.prune() == 2 and kept(a) == 1  # all but the newest: it is always kept
        # the live stream goes on after pruning, and a later entry is a position again
        later = a.apply(fire("w-9"))
        assert later is not None
        (got,) = heard.next()
        assert got.change.entry.id == later.entry.id
        assert feed.since(later.entry.id) == []
        again = a.apply(fire("w-8"))
        assert again is not None
        assert [c.change.entry.id for c in feed.since(later.entry.id)] == [again.entry.id]
        # a pruned entry is gone, not "replay from the oldest kept"
        for c in first[:2]:
            assert c is not None
            with pytest.raises(PositionGone):
                feed.since(c.entry.id)
        kept_one = first[2]
        assert kept_one is not None
        assert [c.change.entry.id for c in feed.since(kept_one.entry.id)] == [
            later.entry.id,
            again.entry.id,
        ]
        assert [c.change.entry.id for c in feed.since(0)] == [
            kept_one.entry.id,
            later.entry.id,
            again.entry.id,
        ]
    finally:
        feed.close()


def test_a_console_reconnecting_from_a_pruned_entry_is_told_to_resync(
    two: tuple[AlertStore, AlertStore], clock: FakeClock, tmp_path: Path
) -> None:
    """The console on B reconnects with the ``Last-Event-ID`` of a change A pruned meanwhile:
    ``resync``, then the live changes. From an entry still kept: the replay, as before."""
    a, b = two
    first = a.apply(fire("w-1"))
    second = a.apply(fire("w-2"))
    assert first is not None and second is not None
    pruner = CommitOrderFeed(pg(a), poll_s=600, keep_s=10, prune_every_s=1, clock=clock).start()
    try:
        pruner.prune()
        clock.advance(10)
        assert pruner.prune() == 1  # instance A's feed pruned the first (the newest is kept)
    finally:
        pruner.close()
    third = a.apply(fire("w-3"))
    fourth = a.apply(fire("w-4"))
    assert third is not None and fourth is not None
    journal = Journal(tmp_path / "journal.db", synchronous="NORMAL")
    with (
        app_context(tmp_path, journal, b, Registry()) as ctx,
        TestClient(create_app(ctx), headers=ADMIN) as client,
    ):
        with client.stream(
            "GET", "/api/stream", headers={"Last-Event-ID": str(first.entry.id)}
        ) as r:
            events = sse(r.iter_lines())
            assert next(e for e in events if "event" in e)["event"] == "resync"
        with client.stream(
            "GET", "/api/stream", headers={"Last-Event-ID": str(third.entry.id)}
        ) as r:
            events = sse(r.iter_lines())
            e = next(e for e in events if "event" in e)
            assert e["event"] == "alert"
            assert str(fourth.entry.id) == e["id"]


def test_a_feed_that_fell_behind_past_a_prune_marks_the_gap_and_consoles_resync(
    two: tuple[AlertStore, AlertStore], clock: FakeClock, tmp_path: Path
) -> None:
    """Instance B's feed hears nothing for a while (its listener stopped stands for a database
    it could not reach) while A commits and A's feed prunes: when B reads again, the first
    change it hands on (the newest A pruned up to, which is kept) is marked ``after_gap``, and
    B's live stream tells its consoles to list the alerts again (``resync``) before that
    change — not a silent gap."""
    a, b = two
    journal = Journal(tmp_path / "journal.db", synchronous="NORMAL")
    with (
        app_context(tmp_path, journal, b, Registry()) as ctx,
        TestClient(app := create_app(ctx), headers=ADMIN) as client,
        client.stream("GET", "/api/stream") as r,
    ):
        events = sse(r.iter_lines())
        next(e for e in events if e.get("comment") == "connected")
        feed = app.state.broadcaster.feed
        assert isinstance(feed, CommitOrderFeed), feed
        feed.listener.stop()  # B hears no more wake-ups; it reads every 600 s at most
        feed.poll_s = 600
        missed = [a.apply(fire(f"w-{i}")) for i in range(2)]
        assert all(c is not None for c in missed)
        pruner = CommitOrderFeed(pg(a), poll_s=600, keep_s=10, prune_every_s=1, clock=clock)
        pruner.start()
        try:
            pruner.prune()
            clock.advance(10)
            assert pruner.prune() == 1  # the first missed; the second, the newest, is kept
        finally:
            pruner.close()
        after = a.apply(fire("w-9"))
        assert after is not None and missed[1] is not None
        feed._wake.set()  # B reads again, as when its database is back
        e = next(e for e in events if "event" in e)
        assert e["event"] == "resync" and "missed" in e["data"]
        e = next(e for e in events if "event" in e)
        assert e["event"] == "alert" and e["id"] == str(missed[1].entry.id)
        e = next(e for e in events if "event" in e)
        assert e["event"] == "alert" and e["id"] == str(after.entry.id)


def test_positions_a_failover_skipped_are_no_gap_to_resync_for(
    two: tuple[AlertStore, AlertStore], clock: FakeClock
) -> None:
    """``seq`` is an identity column: a database that crashed or failed over skips values
    (PostgreSQL logs a sequence 32 ahead; test_pg_failover.py met it). With the changes before
    the skip still kept, the feed hands the next change on as it is, its consoles not told to
    list the alerts again."""
    a, b = two
    first = a.apply(fire("w-1"))
    assert first is not None
    feed = CommitOrderFeed(pg(b), poll_s=600, keep_s=10, prune_every_s=1, clock=clock).start()
    try:
        heard = Heard(feed)
        seq = "pg_get_serial_sequence('live_changes', 'seq')"
        skip = f"SELECT setval({seq}, nextval({seq}) + 30)"
        a.query(skip)  # as after a crash: 31 positions never given
        after = a.apply(fire("w-2"))
        assert after is not None
        (got,) = heard.next()
        assert got.change.entry.id == after.entry.id
        assert got.position == feed.position and got.position > first.entry.id + 31
        assert not got.after_gap  # nothing missed: no resync
    finally:
        feed.close()


def test_the_newest_change_is_kept_so_a_quiet_feed_tells_a_skip_from_a_prune(
    two: tuple[AlertStore, AlertStore], clock: FakeClock
) -> None:
    """No alert changed for longer than the keep time: every feed has long been past every
    change, and pruning deletes all of them but the newest. A feed at that change finds its
    own position still kept, so when the next change comes after positions a failover skipped
    it hands it on as it is: its consoles are not told to list the alerts again."""
    a, b = two
    changes = [a.apply(fire(f"w-{i}")) for i in range(3)]
    assert all(c is not None for c in changes)
    newest = changes[-1]
    assert newest is not None
    feed = CommitOrderFeed(pg(b), poll_s=600, keep_s=10, prune_every_s=1, clock=clock).start()
    try:
        heard = Heard(feed)
        at = feed.position  # the newest change
        feed.prune()
        clock.advance(10)
        assert feed.prune() == 2  # everything is old: all but the newest are deleted
        clock.advance(10)
        assert feed.prune() == 0  # and the newest is kept however long nothing comes after it
        assert [r[0] for r in a.query("SELECT seq FROM live_changes")] == [at]
        assert [c.change.entry.id for c in feed.since(0)] == [newest.entry.id]
        assert feed.since(newest.entry.id) == []  # a console there resumes, no resync

        seq = "pg_get_serial_sequence('live_changes', 'seq')"
        a.query(f"SELECT setval({seq}, nextval({seq}) + 30)")  # as after a crash
        after = a.apply(fire("w-9"))
        assert after is not None
        (got,) = heard.next()
        assert got.change.entry.id == after.entry.id and got.position > at + 31
        assert not got.after_gap  # positions never given, not pruned: no resync
    finally:
        feed.close()
