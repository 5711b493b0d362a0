"""A full disk, then freed: the service stops acknowledging, says so, and once space is freed
goes on by itself — no restart, nothing lost, nothing twice. The real broker, the real
service process; the journal is made "full" without root by a page limit on its writer
(``JIAYUAN_JOURNAL_MAX_PAGES``, SQLite's ``max_page_count``), the rest of the "disk" being a
filler table that the test deletes to free space."""

from __future__ import annotations

import json
import re
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from base.datadir import DataDir
from devtools.broker import Broker
from devtools.launch import ServiceProcess
from ingest.journal import Journal
from tests.mqtt import Publisher, wait_for

pytestmark = pytest.mark.network

N = 3000


def metric(svc: ServiceProcess, name: str) -> float | None:
    m = re.search(rf"^{name} (\S+)$", svc.get_text("/metrics"), re.MULTILINE)
    return float(m.group(1)) if m else None


def counts(data: Path) -> tuple[int, int]:
    """(rows, distinct seq) of the test device's readings, straight from SQLite."""
    db = sqlite3.connect(f"file:{DataDir(data).journal}?mode=ro", uri=True, timeout=30)
    try:
        rows, distinct = db.execute(
            "SELECT count(*), count(DISTINCT seq) FROM readings WHERE device_id = 'wr-9'"
        ).fetchone()
        return int(rows), int(distinct)
    finally:
        db.close()


@pytest.fixture
def data(tmp_path: Path) -> Path:
    """A journal with 8 MB of filler: the part of the disk the test will free."""
    d = tmp_path / "service"
    d.mkdir()
    Journal(DataDir(d).journal, synchronous="NORMAL").close()
    with sqlite3.connect(DataDir(d).journal) as db:
        db.execute("CREATE TABLE filler (b BLOB)")
        db.execute("INSERT INTO filler VALUES (zeroblob(8000000))")
    return d


@pytest.fixture
def service(broker: Broker, data: Path) -> Iterator[ServiceProcess]:
    with sqlite3.connect(DataDir(data).journal) as db:
        pages = int(db.execute("PRAGMA page_count").fetchone()[0])
    svc = ServiceProcess(
        data,
        broker,
        journal_max_pages=pages + 40,  # room for ~1,000
        expect_errors={  # the full disk the test brings about
            "jiayuan_journal_write_failures_total",
            'jiayuan_log_errors_total{logger="ingest.pipeline"}',
        },
    )
    svc.start()
    yield svc
    svc.stop()


def test_a_full_journal_holds_acknowledgements_and_resumes_without_restart_losing_nothing(
    broker: Broker, service: ServiceProcess, data: Path
) -> None:
    assert metric(service, "jiayuan_journal_writable") == 1.0
    pub = Publisher(broker)
    for i in range(N):
        body = {"seq": i, "heart_rate": 60 + i % 40, "steps": i, "note": "n" * 40}
        pub.publish("community/y/wearable/wr-9/telemetry", json.dumps(body))
    pub.wait_acked(120)  # the broker has them all; the service cannot store them all

    wait_for(lambda: metric(service, "jiayuan_journal_writable") == 0.0, timeout=60)
    stuck = counts(data)
    assert stuck[0] == stuck[1] < N
    assert (metric(service, "jiayuan_ingest_oldest_unacked_seconds") or 0.0) > 0
    assert service.get("/api/dead-letters/counts")["total"] == 0  # not the messages' fault
    assert service.proc is not None and service.proc.poll() is None  # still running
    health = service.health()  # 503, and why
    assert health["status"] == "degraded"
    assert any(p.startswith("journal refuses writes") and "full" in p for p in health["problems"])

    with sqlite3.connect(DataDir(data).journal, timeout=30) as db:  # space is freed
        db.execute("DELETE FROM filler")
    wait_for(lambda: counts(data) == (N, N), timeout=120)  # all, each once
    wait_for(lambda: metric(service, "jiayuan_journal_writable") == 1.0, timeout=30)
    wait_for(lambda: metric(service, "jiayuan_ingest_oldest_unacked_seconds") == 0.0)
    wait_for(lambda: service.health()["status"] == "ok", timeout=30)
    assert service.get("/api/dead-letters/counts")["total"] == 0
    log = service.log.read_text(errors="replace")
    assert log.count("journal refuses writes") == 1  # said once, not once per batch
    assert log.count("journal takes writes again") == 1
    pub.close()
