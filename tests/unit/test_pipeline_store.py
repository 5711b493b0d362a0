"""The pipeline against a real SQLite journal that refuses: one message it will not store is
isolated and kept as a dead letter; a store that cannot write (full, locked) holds the
acknowledgements, says so once, and ingestion goes on by itself when the store recovers."""

from __future__ import annotations

import json
import logging
import queue
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator
from pathlib import Path

import pytest
from prometheus_client import REGISTRY

from base.retry import Backoff
from district.pg import connect as pg_connect
from ingest.journal import Journal, store_trouble
from ingest.journal_pg import PgJournal
from ingest.listener import Inbound
from ingest.payloads import Reading, decode
from ingest.pipeline import Pipeline
from registry import Device, Registry
from tests.mqtt import wait_for


def inbound(seq: int, device: str = "wr-1", pad: int = 0) -> Inbound:
    body = {"seq": seq, "heart_rate": 70, "note": "x" * pad}
    return Inbound(
        topic=f"community/y/wearable/{device}/telemetry",
        payload=json.dumps(body).encode(),
        mid=seq + 1,
        qos=1,
        retain=False,
        received=time.time(),
    )


class Acks:
    def __init__(self) -> None:
        self.mids: list[int] = []
        self._lock = threading.Lock()

    def __call__(self, messages: Iterable[Inbound]) -> None:
        with self._lock:
            self.mids.extend(m.mid for m in messages)

    def count(self) -> int:
        with self._lock:
            return len(self.mids)


def metric(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


@pytest.fixture
def path(tmp_path: Path) -> Path:
    p = tmp_path / "journal.db"
    Journal(p, synchronous="NORMAL").close()  # the schema
    return p


@pytest.fixture
def running() -> Iterator[list[Pipeline]]:
    started: list[Pipeline] = []
    yield started
    for p in started:
        p.stop()


@pytest.mark.expect_errors("jiayuan_journal_refused_total")
def test_a_message_the_journal_refuses_is_a_dead_letter_and_the_rest_go_through(
    path: Path,
) -> None:
    with sqlite3.connect(path) as db:  # a refusal about one row, as SQLite gives it
        db.execute(
            "CREATE TRIGGER refuse BEFORE INSERT ON readings WHEN NEW.device_id = 'poison'"
            " BEGIN SELECT RAISE(ABORT, 'refused'); END"
        )
    journal = Journal(path, synchronous="NORMAL")
    acks = Acks()
    before = metric("jiayuan_journal_refused_total")
    batch = [inbound(i) for i in range(100)]
    batch[37] = inbound(37, device="poison")
    new = Pipeline(queue.Queue(), journal, acks).process(batch)
    assert len(new) == 99 and journal.count_readings() == 99
    assert sorted(acks.mids) == [m.mid for m in batch]  # every one acknowledged
    items, total = journal.dead_letters(reason="journal_refused")
    assert total == 1 and items[0]["topic"] == "community/y/wearable/poison/telemetry"
    assert "IntegrityError" in items[0]["detail"]
    assert metric("jiayuan_journal_refused_total") == before + 1
    journal.close()


@pytest.mark.expect_errors("jiayuan_journal_refused_total")
def test_on_postgresql_too_a_refused_message_is_a_dead_letter_not_a_failing_store(
    pg_url: str,
) -> None:
    """The pipeline asks the journal it has (``journal.trouble``) what an error means: a
    constraint PostgreSQL enforces is about one message, not the store."""
    journal = PgJournal(pg_url)
    try:
        with pg_connect(pg_url) as db:
            db.execute("ALTER TABLE readings ADD CONSTRAINT refuse CHECK (device_id <> 'poison')")
        acks = Acks()
        batch = [inbound(i) for i in range(100)]
        batch[37] = inbound(37, device="poison")
        new = Pipeline(queue.Queue(), journal, acks).process(batch)
        assert len(new) == 99 and journal.count_readings() == 99
        assert sorted(acks.mids) == [m.mid for m in batch]  # every one acknowledged
        items, total = journal.dead_letters(reason="journal_refused")
        assert total == 1 and items[0]["topic"] == "community/y/wearable/poison/telemetry"
        assert "CheckViolation" in items[0]["detail"]
    finally:
        journal.close()


@pytest.mark.expect_errors(
    "jiayuan_journal_write_failures_total", 'jiayuan_log_errors_total{logger="ingest.pipeline"}'
)
def test_a_full_store_holds_the_acknowledgements_and_ingestion_resumes_once_space_is_freed(
    path: Path, running: list[Pipeline], caplog: pytest.LogCaptureFixture
) -> None:
    with sqlite3.connect(path) as db:  # the rest of the "disk"
        db.execute("CREATE TABLE filler (b BLOB)")
        db.execute("INSERT INTO filler VALUES (zeroblob(4000000))")
        pages = db.execute("PRAGMA page_count").fetchone()[0]
    journal = Journal(path, synchronous="NORMAL", max_pages=pages + 4)
    inbox: queue.Queue[Inbound] = queue.Queue()
    acks = Acks()
    p = Pipeline(inbox, journal, acks, batch_max=100, retry=Backoff(0.05, 0.2))
    running.append(p)
    p.start()
    caplog.set_level(logging.INFO, logger="ingest.pipeline")
    n = 2000
    for i in range(n):
        inbox.put(inbound(i, pad=60))
    wait_for(lambda: not p.store_health().ok)
    health = p.store_health()
    assert health.reason is not None and "SQLITE_FULL" in health.reason
    assert health.since is not None and health.since <= time.time()
    assert metric("jiayuan_journal_writable") == 0.0
    assert metric("jiayuan_journal_write_failures_total", error="SQLITE_FULL") >= 1
    time.sleep(0.5)  # several retries, still full
    held = n - acks.count()
    assert held > 0 and journal.count_readings() == acks.count()
    assert (p.oldest_unacked_age(time.time()) or 0.0) > 0
    assert journal.dead_letters()[1] == 0  # not the messages' fault

    with sqlite3.connect(path, timeout=30) as db:  # space is freed
        db.execute("DELETE FROM filler")
    wait_for(lambda: acks.count() == n, timeout=60)
    assert p.store_health().ok and metric("jiayuan_journal_writable") == 1.0
    assert journal.count_readings() == n  # nothing lost, nothing twice
    assert sorted(acks.mids) == list(range(1, n + 1))
    assert p.oldest_unacked_age(time.time()) is None
    said = [r.getMessage() for r in caplog.records if r.name == "ingest.pipeline"]
    assert sum("journal refuses writes" in m for m in said) == 1  # once per outage
    assert sum("journal takes writes again" in m for m in said) == 1


@pytest.mark.expect_errors(
    "jiayuan_journal_write_failures_total", 'jiayuan_log_errors_total{logger="ingest.pipeline"}'
)
def test_a_locked_store_holds_the_acknowledgements_until_the_lock_is_gone(
    path: Path, running: list[Pipeline]
) -> None:
    journal = Journal(path, synchronous="NORMAL", busy_timeout_s=0.05)
    inbox: queue.Queue[Inbound] = queue.Queue()
    acks = Acks()
    p = Pipeline(inbox, journal, acks, retry=Backoff(0.05, 0.2))
    running.append(p)
    blocker = sqlite3.connect(path, isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")  # another process holds the write lock
    p.start()
    for i in range(10):
        inbox.put(inbound(i))
    wait_for(lambda: not p.store_health().ok)
    reason = p.store_health().reason
    assert reason is not None and "SQLITE_BUSY" in reason
    assert acks.count() == 0
    blocker.execute("ROLLBACK")
    blocker.close()
    wait_for(lambda: acks.count() == 10)
    assert p.store_health().ok and journal.count_readings() == 10


def test_store_trouble_tells_a_failing_store_from_a_refused_message(
    path: Path, tmp_path: Path
) -> None:
    def raised(db: sqlite3.Connection, sql: str, *args: object) -> BaseException:
        with pytest.raises(Exception) as e:
            db.execute(sql, args)
        return e.value

    ro = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    assert store_trouble(raised(ro, "DELETE FROM readings")) == "SQLITE_READONLY"
    with pytest.raises(sqlite3.Error) as cannot:
        sqlite3.connect(tmp_path)  # a directory
    assert store_trouble(cannot.value) == "SQLITE_CANTOPEN"
    db = sqlite3.connect(path)
    assert store_trouble(raised(db, "SELECT ?", 2**64)) is None  # OverflowError
    db.execute("CREATE TABLE t (x INTEGER NOT NULL)")
    assert store_trouble(raised(db, "INSERT INTO t VALUES (NULL)")) is None
    assert store_trouble(raised(db, "SELECT ?", object())) is None  # cannot bind


def _reading(device: str, received: float) -> Reading:
    r = decode(f"community/y/wearable/{device}/telemetry", b'{"heart_rate": 70}', received)
    assert isinstance(r, Reading)
    return r


def test_devices_waiting_in_memory_are_bounded(path: Path) -> None:
    journal = Journal(path, synchronous="NORMAL", seen_max=500)
    now = time.time()
    most = 0
    for b in range(20):  # 20,000 devices never seen before, faster than the 1 s flush
        journal.write_batch([_reading(f"stray-{b}-{i}", now) for i in range(1000)], [])
        most = max(most, journal.pending_devices)
    assert most < 500
    assert journal.list_devices(registered=False)[1] == 20_000
    journal.close()


def test_unregistered_devices_silent_for_a_day_are_forgotten(path: Path) -> None:
    journal = Journal(path, synchronous="NORMAL")
    journal.sync_registry(
        Registry("y", devices=[Device(device_id="wr-1", kind="wearable", compound="C01")])
    )
    now = time.time()
    journal.write_batch([_reading("stray-old", now - 2 * 86_400)], [])
    journal.write_batch([_reading("stray-new", now - 3600)], [])
    journal.write_batch([_reading("wr-1", now - 2 * 86_400)], [])
    journal.flush()
    journal.prune(before=0)
    ids = [d["device_id"] for d in journal.list_devices()[0]]
    assert ids == ["stray-new", "wr-1"]
    assert journal.count_readings("stray-old") == 1  # its readings age out with the rest
    journal.close()


@pytest.mark.expect_errors(
    "jiayuan_journal_write_failures_total", 'jiayuan_log_errors_total{logger="ingest.pipeline"}'
)
def test_an_outage_found_while_idle_clears_without_a_new_message(
    path: Path, running: list[Pipeline]
) -> None:
    journal = Journal(path, synchronous="NORMAL", busy_timeout_s=0.05)
    inbox: queue.Queue[Inbound] = queue.Queue()
    acks = Acks()
    p = Pipeline(inbox, journal, acks, retry=Backoff(0.05, 0.2))
    running.append(p)
    p.start()
    inbox.put(inbound(1))
    wait_for(lambda: acks.count() == 1)  # its last-seen time waits for the idle flush
    blocker = sqlite3.connect(path, isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")
    wait_for(lambda: not p.store_health().ok)  # found by the flush, no message in hand
    blocker.execute("ROLLBACK")
    blocker.close()
    wait_for(lambda: p.store_health().ok)  # found by the probe, no message needed
    assert metric("jiayuan_journal_writable") == 1.0
