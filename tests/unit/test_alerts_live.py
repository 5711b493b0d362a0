"""The live stream across instances (alerts/live.py): two stores on one PostgreSQL database, as
two instances have; what one commits reaches the other's subscribers and console clients, in
commit order, and a catch-up after a disconnect misses nothing. Every wait is for a condition
(generous deadlines); nothing asserts on timing."""

from __future__ import annotations

import json
import queue
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from fastapi.testclient import TestClient

import district.pg
from alerts import AlertStore
from alerts.db import PgDatabase
from alerts.live import CommitOrderFeed, LiveChange, LiveFeed, open_feed
from base.sql import Db
from ingest.journal import Journal
from jiayuan.api import create_app
from registry import Registry
from tests.alerting import sse
from tests.staff import ADMIN, app_context
from tests.unit.test_alerts_lifecycle import fire
from tests.unit.test_alerts_postgres import two

__all__ = ["two"]  # the fixture: instance A's store and instance B's, on one database

DEADLINE_S = 30.0


class Heard:
    """A feed's subscriber that keeps what it hears, for the test thread to wait on."""

    def __init__(self, feed: LiveFeed) -> None:
        self.items: queue.Queue[LiveChange] = queue.Queue()
        self.unsubscribe = feed.subscribe(self.items.put)

    def next(self, n: int = 1) -> list[LiveChange]:
        return [self.items.get(timeout=DEADLINE_S) for _ in range(n)]


def wait_for(what: str, check: Callable[[], bool]) -> None:
    deadline = time.monotonic() + DEADLINE_S
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.02)
    raise AssertionError(f"not within {DEADLINE_S}s: {what}")


def test_a_subscriber_on_b_hears_what_a_commits_in_order(
    two: tuple[AlertStore, AlertStore],
) -> None:
    a, b = two
    feed = open_feed(b)
    try:
        heard = Heard(feed)
        raised = a.apply(fire("w-1"))
        assert raised is not None
        alert_id = raised.alert.id
        a.apply(fire("w-1", at=1_699_999_995.0))
        a.acknowledge(alert_id, "cg-7", "coming")
        a.set_offline("w-1", True, 1_700_000_000.0)
        a.set_offline("w-1", False, 1_700_000_050.0)
        a.resolve(alert_id, "cg-7", "all well")
        got = heard.next(6)
        assert [g.change.action for g in got] == [
            "raised",
            "rematched",
            "acknowledged",
            "offline",
            "online",
            "resolved",
        ]
        assert {g.change.alert.id for g in got} == {alert_id}
        # each with the alert as that change left it, as A's own subscribers see it
        assert [g.change.alert.status for g in got] == [
            "firing",
            "firing",
            "acknowledged",
            "acknowledged",
            "acknowledged",
            "resolved",
        ]
        assert [g.change.alert.offline for g in got] == [False, False, False, True, False, False]
        assert [g.change.alert.match_count for g in got[:2]] == [1, 2]
        assert got[2].change.entry.by == "cg-7" and got[2].change.entry.note == "coming"
        assert got[0].change.alert == raised.alert
        positions = [g.position for g in got]
        assert positions == sorted(positions) and len(set(positions)) == 6
        # a catch-up from any of them replays the rest, the same events
        assert feed.since(got[2].change.entry.id) == got[3:]
    finally:
        feed.close()


def test_a_transaction_held_open_while_a_later_one_commits_is_delivered_after_it(
    tmp_path: Path, two: tuple[AlertStore, AlertStore]
) -> None:
    """A's transaction takes its history id first and commits last: B's own change (a later
    id, committed first) comes first, then A's; a console that saw only B's before it
    disconnected gets A's on reconnecting with ``Last-Event-ID`` (an "id >" catch-up would not:
    A's id is the lower one)."""
    a, b = two
    inserted = threading.Event()
    release = threading.Event()
    done: list[Any] = []

    def hold(db: Db) -> None:
        inserted.set()
        assert release.wait(DEADLINE_S)

    def a_writes() -> None:
        done.extend(a.apply_batch([fire("w-1")], within=hold))

    journal = Journal(tmp_path / "journal.db", synchronous="NORMAL")
    with app_context(tmp_path, journal, b, Registry()) as ctx, TestClient(create_app(ctx)) as web:
        feed = web.app.state.broadcaster.feed  # type: ignore[attr-defined]
        assert isinstance(feed, CommitOrderFeed)
        heard = Heard(feed)  # hears each change after the console's broadcaster has
        writer = threading.Thread(target=a_writes)
        try:
            with web.stream("GET", "/api/stream", headers=ADMIN) as r:
                stream = sse(r.iter_lines())
                _until_connected(stream)
                writer.start()
                assert inserted.wait(DEADLINE_S)
                later = b.apply(fire("w-2"))
                assert later is not None
                event = _next_alert(stream)
                assert event["alert"]["device_id"] == "w-2"
                last_event_id = event["id"]
            # the console is gone; A's transaction commits meanwhile
            release.set()
            writer.join(DEADLINE_S)
            assert len(done) == 1
            held = done[0]
            assert held.entry.id < later.entry.id  # ids are not in commit order
            assert [g.change.alert.device_id for g in heard.next(2)] == ["w-2", "w-1"]
            again = {**ADMIN, "Last-Event-ID": last_event_id}
            with web.stream("GET", "/api/stream", headers=again) as r:
                stream = sse(r.iter_lines())
                _until_connected(stream)
                a.acknowledge(held.alert.id, "cg-7")  # live, after the missed one
                missed = _next_alert(stream)
                assert (missed["action"], missed["alert"]["device_id"]) == ("raised", "w-1")
                assert missed["id"] == str(held.entry.id)
                assert missed["alert"]["status"] == "firing"
                assert _next_alert(stream)["action"] == "acknowledged"
        finally:
            release.set()
            if writer.is_alive():
                writer.join(DEADLINE_S)


def test_a_rolled_back_change_is_never_delivered(two: tuple[AlertStore, AlertStore]) -> None:
    a, b = two
    feed = open_feed(b)
    try:
        heard = Heard(feed)

        def fail(db: Db) -> None:
            raise RuntimeError("the worker crashed before its commit")

        with pytest.raises(RuntimeError):
            a.apply_batch([fire("w-1")], within=fail)
        after = a.apply(fire("w-2"))
        assert after is not None
        (got,) = heard.next()
        assert got.change.alert.device_id == "w-2"
        assert [c.change.alert.device_id for c in feed.since(0)] == ["w-2"]
        assert heard.items.empty()
    finally:
        feed.close()


def test_a_listener_whose_connection_is_killed_reconnects_and_catches_up(
    monkeypatch: pytest.MonkeyPatch, pg_url: str, two: tuple[AlertStore, AlertStore]
) -> None:
    """The listener's backend is terminated; A commits while it is away (its reconnection is
    held back until then, and the feed never polls): it comes back, reads from its position
    and delivers every change, in order, then goes on hearing new ones."""
    a, b = two
    connections = 0
    may_reconnect = threading.Event()
    real_connect = district.pg.connect

    def gated(url: str, **kw: Any) -> Any:
        nonlocal connections
        connections += 1
        if connections > 1:
            assert may_reconnect.wait(DEADLINE_S)
        return real_connect(url, **kw)

    monkeypatch.setattr("district.live.connect", gated)
    feed = CommitOrderFeed(_pg(b), poll_s=3600.0).start()
    try:
        heard = Heard(feed)
        first = a.apply(fire("w-0"))
        assert first is not None
        assert heard.next()[0].change.entry.id == first.entry.id
        pid = feed.listener.backend_pid
        with psycopg.connect(pg_url, autocommit=True) as admin:
            assert admin.execute("SELECT pg_terminate_backend(%s)", (pid,)).fetchone() == (True,)
        wait_for("the listener to notice", lambda: not feed.listener.connected.is_set())
        meanwhile = [a.apply(fire(f"w-{i}")) for i in range(1, 4)]
        with psycopg.connect(pg_url, autocommit=True) as admin:
            listening = admin.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'jiayuan-live'"
                " AND datname = current_database()"
            ).fetchone()
        assert listening == (0,)  # nobody of B's was listening when A committed them
        may_reconnect.set()
        got = heard.next(3)
        assert [g.change.entry.id for g in got] == [c.entry.id for c in meanwhile if c]
        assert feed.listener.backend_pid != pid
        later = a.apply(fire("w-9"))
        assert later is not None
        assert heard.next()[0].change.entry.id == later.entry.id
        assert heard.items.empty()
    finally:
        may_reconnect.set()
        feed.close()


def test_a_console_on_b_sees_a_s_changes_of_its_community_only(
    tmp_path: Path, two: tuple[AlertStore, AlertStore]
) -> None:
    a, b = two
    registry = Registry.combine({"y": Registry("y"), "h": Registry("h")})
    journal = Journal(tmp_path / "journal.db", synchronous="NORMAL")
    with (
        app_context(tmp_path, journal, b, registry) as ctx,
        TestClient(create_app(ctx)) as web,
        web.stream("GET", "/api/stream", params={"community": "h"}, headers=ADMIN) as r,
    ):
        stream = sse(r.iter_lines())
        _until_connected(stream)
        a.apply(fire("w-1"))  # community y
        h = fire("h-1", labels={"community": "h", "building": "hB01"})
        raised = a.apply(h)
        assert raised is not None
        a.acknowledge(raised.alert.id, "h-care-1")
        first, second = _next_alert(stream), _next_alert(stream)
        assert (first["action"], first["alert"]["device_id"]) == ("raised", "h-1")
        assert (second["action"], second["alert"]["device_id"]) == ("acknowledged", "h-1")


def _pg(store: AlertStore) -> PgDatabase:
    assert isinstance(store.database, PgDatabase)
    return store.database


def _until_connected(stream: Iterator[dict[str, str]]) -> None:
    for e in stream:
        if e.get("comment") == "connected":
            return
    raise AssertionError("stream ended before it connected")


def _next_alert(stream: Iterator[dict[str, str]]) -> dict[str, Any]:
    for e in stream:
        if e.get("event") == "alert":
            data: dict[str, Any] = json.loads(e["data"])
            assert e["id"] == str(data["change"]["id"])
            return {**data, "id": e["id"]}
    raise AssertionError("stream ended without an alert event")
