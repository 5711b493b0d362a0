"""The alert store on PostgreSQL where it differs from one SQLite file: several instances write
to one database at once, and "one open alert per fingerprint" must hold across them."""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg
import pytest

from alerts import AlertChange, AlertStore, InvalidTransition
from base.sql import Db
from rules.worker import SCHEMA as WORKER_SCHEMA
from tests.clock import FakeClock as Clock
from tests.schemas import columns
from tests.unit.test_alerts_lifecycle import fire


def wait_for(what: str, check: Callable[[], bool], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.02)
    raise AssertionError(f"not within {timeout}s: {what}")


@pytest.fixture
def two(pg_url: str) -> Iterator[tuple[AlertStore, AlertStore]]:
    """Two stores on one database, as two instances would have."""
    a = AlertStore.open(pg_url, clock=Clock())
    b = AlertStore.open(pg_url, clock=Clock())
    yield a, b
    a.close()
    b.close()


def waiting_on_a_lock(url: str, n: int = 1) -> bool:
    with psycopg.connect(url, autocommit=True) as db:
        row = db.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
            " AND wait_event_type = 'Lock'"
        ).fetchone()
        return row is not None and int(row[0]) >= n


def test_two_instances_raising_one_fingerprint_at_once_get_one_open_alert(
    pg_url: str, two: tuple[AlertStore, AlertStore]
) -> None:
    a, b = two
    inserted = threading.Event()
    release = threading.Event()

    def hold(db: Db) -> None:  # a's transaction stays open after its insert
        inserted.set()
        assert release.wait(30)

    first: list[AlertChange] = []
    second: list[AlertChange | None] = []
    ta = threading.Thread(target=lambda: first.extend(a.apply_batch([fire()], within=hold)))
    ta.start()
    assert inserted.wait(30)
    tb = threading.Thread(target=lambda: second.append(b.apply(fire(at=1_700_000_000.0))))
    tb.start()
    # b's insert of the same fingerprint waits for a's transaction (the partial unique index)
    wait_for("b's insert waiting for a's transaction", lambda: waiting_on_a_lock(pg_url))
    release.set()
    ta.join(30)
    tb.join(30)

    assert [c.action for c in first] == ["raised"]
    assert second and second[0] is not None and second[0].action == "rematched"
    assert second[0].alert.id == first[0].alert.id
    opened = a.open_alerts()
    assert len(opened) == 1 and opened[0].match_count == 2
    history = [e.action for e in a.get(opened[0].id).history]
    assert history == ["raised", "rematched"]


def test_two_instances_firing_many_fingerprints_together_never_open_one_twice(
    two: tuple[AlertStore, AlertStore],
) -> None:
    a, b = two
    devices = [f"w-{i}" for i in range(40)]
    errors: list[BaseException] = []

    def run(store: AlertStore, order: list[str]) -> None:
        try:
            for d in order:
                store.apply(fire(device=d))
        except BaseException as e:
            errors.append(e)

    threads = [
        threading.Thread(target=run, args=(a, devices)),
        threading.Thread(target=run, args=(b, devices[::-1])),
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == []
    opened = a.open_alerts()
    assert sorted(x.device_id for x in opened) == sorted(devices)
    assert {x.match_count for x in opened} == {2}


def test_a_path_opens_sqlite_and_a_url_postgresql(tmp_path: Path, pg_url: str) -> None:
    on_file = AlertStore.open(tmp_path / "alerts.db")
    on_pg = AlertStore.open(pg_url)
    try:
        assert on_file.path == tmp_path / "alerts.db" and (tmp_path / "alerts.db").exists()
        assert on_pg.path == pg_url
        with on_pg.connection() as db:
            assert db.execute("SELECT count(*) FROM alerts").fetchone()[0] == 0
    finally:
        on_file.close()
        on_pg.close()


def test_both_schemas_have_the_same_tables_and_columns(tmp_path: Path, pg_url: str) -> None:
    """The two DDLs (alerts/db.py and rules/worker.py for SQLite, district/migrations/
    0004_alerts.sql for PostgreSQL) are kept apart on purpose; this keeps them in step."""
    on_file = AlertStore.open(tmp_path / "alerts.db")
    on_pg = AlertStore.open(pg_url)
    try:
        with on_file.connection() as db, on_pg.connection() as pg:
            assert isinstance(db, sqlite3.Connection)
            db.executescript(WORKER_SCHEMA)
            lite = columns(db)
            on_both = columns(pg, lite)
        assert {"alerts", "alert_history", "escalations", "deliveries", "rule_state"} <= set(lite)
        assert on_both == lite
    finally:
        on_file.close()
        on_pg.close()


def test_two_instances_acknowledging_at_once_one_owns_it_and_the_other_is_told_who(
    pg_url: str, two: tuple[AlertStore, AlertStore]
) -> None:
    a, b = two
    raised = a.apply(fire())
    assert raised is not None
    alert_id = raised.alert.id
    outcomes: dict[str, str] = {}

    def ack(store: AlertStore, by: str) -> None:
        try:
            store.acknowledge(alert_id, by)
            outcomes[by] = "acknowledged"
        except InvalidTransition as e:
            outcomes[by] = f"refused: {e.by}"

    # hold the alert's row so that both acknowledgements read it at the same moment
    with psycopg.connect(pg_url) as holder:
        holder.execute("SELECT id FROM alerts WHERE id = %s FOR UPDATE", (alert_id,))
        threads = [
            threading.Thread(target=ack, args=(a, "cg-7")),
            threading.Thread(target=ack, args=(b, "guard-2")),
        ]
        for t in threads:
            t.start()
        wait_for("both waiting for the row", lambda: waiting_on_a_lock(pg_url, 2))
        holder.rollback()
    for t in threads:
        t.join(30)
    winners = [by for by, outcome in outcomes.items() if outcome == "acknowledged"]
    assert len(outcomes) == 2 and len(winners) == 1
    (loser,) = set(outcomes) - set(winners)
    assert outcomes[loser] == f"refused: {winners[0]}"  # told who has it
    (kept,) = a.open_alerts()
    assert kept.status == "acknowledged" and kept.acknowledged_by == winners[0]
    assert [e.action for e in a.get(alert_id).history] == ["raised", "acknowledged"]
