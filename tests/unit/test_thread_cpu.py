"""Where the service's CPU goes, as /metrics shows it to the benchmark: per thread (by name,
read from /proc at scrape time) and, within the ingest thread, per stage of a batch."""

from __future__ import annotations

import json
import queue
import threading
import time
from collections.abc import Iterable
from pathlib import Path

from prometheus_client import REGISTRY

from ingest.journal import Journal
from ingest.listener import Inbound
from ingest.pipeline import Pipeline
from ingest.threadcpu import label


def metric(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def test_threads_are_labelled_by_name_without_their_numbers() -> None:
    assert label("paho-mqtt-client-jiayuan-urgent") == "mqtt"
    assert label("notify-3") == "notify"
    assert label("journal-rollup") == "journal-rollup"
    assert label("ingest") == "ingest"
    assert label("Thread-7 (process_request_thread)") == "other"
    assert label("AnyIO worker thread") == "other"


def test_a_busy_thread_shows_its_cpu_under_its_name() -> None:
    stop = threading.Event()
    spun = threading.Event()

    def spin() -> None:
        t0 = time.thread_time()
        while not stop.is_set():
            if time.thread_time() - t0 > 0.05:
                spun.set()

    t = threading.Thread(target=spin, name="spin-test", daemon=True)
    t.start()
    try:
        assert spun.wait(60)
        assert metric("jiayuan_thread_cpu_seconds_total", thread="spin-test") > 0
    finally:
        stop.set()
        t.join()
    assert metric("jiayuan_thread_cpu_seconds_total", thread="spin-test") == 0  # ended: gone


def test_the_ingest_thread_counts_decode_and_journal_cpu_per_batch(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "journal.db", synchronous="NORMAL")
    acked: list[int] = []

    def ack(batch: Iterable[Inbound]) -> None:
        acked.extend(m.mid for m in batch)

    before = {s: metric("jiayuan_ingest_cpu_seconds_total", stage=s) for s in ("decode", "journal")}
    pipeline = Pipeline(queue.Queue(), journal, ack)
    n = 0
    try:
        while any(
            metric("jiayuan_ingest_cpu_seconds_total", stage=s) == before[s] for s in before
        ):  # CPU clocks may tick coarsely: batches until both stages have counted some
            batch = [
                Inbound(
                    f"community/y/wearable/w-{i % 5}/telemetry",
                    json.dumps({"seq": i, "heart_rate": 70 + i % 9}).encode(),
                    i,
                    1,
                    False,
                    1_795_777_822.0 + i,
                )
                for i in range(n, n + 500)
            ]
            pipeline.process(batch)
            n += 500
            assert n < 2_000_000
    finally:
        journal.close()
    assert acked == list(range(n))
