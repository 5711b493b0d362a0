"""The time-series store's benchmark, on a journal built directly with ``Journal.write_batch``:
30 days of one-minute wearable readings for ``devices`` devices (24: about a million readings).

1. the InfluxDB sink's drain rate: the whole journal as a backlog, written into a local
   VictoriaMetrics through the InfluxDB v2 write API, in points (readings) per second;
2. disk use per million readings: the raw journal, and the rollups the worker adds;
3. history: a 30-day chart of one device at step 1m (43,200 buckets) and 1h (720), p50 of
   repeated runs, from ``Journal.readings`` and through the HTTP API (whose ``limit`` stops at
   10,000 buckets).

``python -m bench.sink --drain-only`` builds the journal and measures the drain alone;
``--library-batching`` adds, on the same journal, influxdb-client's own batching write API
(``WriteOptions(batch_size=…)``, success callbacks counted) for comparison: the sink does not
use it, because ``write()`` there returns before the server has answered and a batch that
runs out of retries is dropped, so the cursor could not wait for the server (see
:mod:`ingest.influx_writer`).
"""

from __future__ import annotations

import argparse
import functools
import shutil
import statistics
import tempfile
import threading
import time
from collections.abc import Callable
from contextlib import closing
from pathlib import Path
from typing import Any

from base.sqlite import connect
from devtools.victoria import Victoria
from ingest.influx import InfluxSink
from ingest.influx_writer import InfluxWriter
from ingest.journal import Journal
from ingest.payloads import Reading
from ingest.rollups import RollupWorker

MINUTES = 30 * 24 * 60
CHART_DEVICE = "bench-w-0"


def build(path: Path, devices: int, *, now: float) -> int:
    """Journal ``devices`` × 30 days of one reading a minute; returns the number of readings."""
    journal = Journal(path, synchronous="NORMAL")
    start = now - MINUTES * 60
    batch: list[Reading] = []
    total = 0
    for m in range(MINUTES):
        for d in range(devices):
            ts = start + m * 60 + d * 0.5
            ms = int(ts * 1000)
            hr = 60 + (m * 7 + d * 13) % 45
            payload = (
                f'{{"seq": {m}, "ts": {ms}, "heart_rate": {hr}, "spo2": {94 + m % 5},'
                f' "battery": {100 - m % 100}, "worn": {"true" if m % 9 else "false"},'
                f' "steps": {m * 3}}}'
            ).encode()
            values: dict[str, float | bool] = {"heart_rate": float(hr)}
            batch.append(
                Reading(
                    "y",
                    "wearable",
                    f"bench-w-{d}",
                    "telemetry",
                    ms / 1000,
                    ts + 1,
                    m,
                    values,
                    payload=payload,
                )
            )
        if len(batch) >= 10_000:
            journal.write_batch(batch, [])
            total += len(batch)
            batch = []
    if batch:
        journal.write_batch(batch, [])
        total += len(batch)
    journal.close()
    return total


def disk_bytes(path: Path) -> int:
    with closing(connect(path, wal=False)) as db:
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    return sum(p.stat().st_size for p in path.parent.glob(path.name + "*"))


def drain(path: Path, work: Path, batch: int) -> tuple[int, float]:
    """Write the whole journal into a fresh VictoriaMetrics; (points, seconds)."""
    vm = Victoria(work / "victoria").start()
    try:
        writer = InfluxWriter(vm.url, "", "bench", "bench", 60.0)
        sink = InfluxSink(path, writer, community="y", batch=batch, backoff_max_s=1.0)
        sink.start()
        points = sink.backlog_rows
        t0 = time.perf_counter()
        while sink.backlog_rows > 0 or sink.position == 0:
            time.sleep(0.01)
        elapsed = time.perf_counter() - t0
        sink.stop()
        if sink.rejected or sink.down_since is not None:
            raise RuntimeError(f"the drain did not go cleanly: {sink.health()}")
        return points, elapsed
    finally:
        vm.stop()


def drain_library_batching(path: Path, work: Path, batch: int) -> tuple[int, float]:
    """The same drain through influxdb-client's batching write API instead of the sink: rows
    read and formatted as the sink does, handed to ``write()`` (which returns at once), timed
    until the success callbacks have counted every point. (points, seconds)"""
    import sqlite3

    from influxdb_client.client.influxdb_client import InfluxDBClient
    from influxdb_client.client.write_api import WriteOptions
    from influxdb_client.domain.write_precision import WritePrecision

    from ingest.lineproto import COLUMNS, PRECISION, LineFormatter

    vm = Victoria(work / "victoria-batching").start()
    acked = [0]
    failed: list[BaseException] = []
    done = threading.Event()
    sent = -1

    def success(_conf: object, data: bytes) -> None:
        acked[0] += data.count(b"\n") + 1
        if acked[0] == sent:
            done.set()

    def error(_conf: object, _data: bytes, e: BaseException) -> None:
        failed.append(e)
        done.set()

    try:
        client = InfluxDBClient(url=vm.url, token="", org="bench", timeout=60_000)
        options = WriteOptions(batch_size=batch, flush_interval=1000, max_retries=0)
        api = client.write_api(
            write_options=options, success_callback=success, error_callback=error
        )
        db = sqlite3.connect(path)
        lines_of = LineFormatter("y")
        lines_of.set_devices(
            db.execute("SELECT device_id, community, compound, building FROM devices")
        )
        precision = getattr(WritePrecision, PRECISION.upper())
        t0 = time.perf_counter()
        position, total = 0, 0
        while rows := db.execute(
            f"SELECT {COLUMNS} FROM readings WHERE id > ? ORDER BY id LIMIT ?", (position, batch)
        ).fetchall():
            _ids, lines = lines_of.lines(rows)
            api.write("bench", "bench", "\n".join(lines), write_precision=precision)
            total += len(lines)
            position = rows[-1][0]
        sent = total
        if acked[0] == sent:
            done.set()
        done.wait(600)
        elapsed = time.perf_counter() - t0
        db.close()
        api.close()  # type: ignore[no-untyped-call]
        client.close()  # type: ignore[no-untyped-call]
        if failed or acked[0] != sent:
            raise RuntimeError(
                f"the batching drain did not go cleanly: {failed[:1]}, {acked[0]}/{sent}"
            )
        return sent, elapsed
    finally:
        vm.stop()


def p50_ms(fn: Callable[[], Any], runs: int) -> tuple[float, Any]:
    times = []
    out = None
    for _ in range(runs):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1000, out


def history(path: Path, now: float, runs: int) -> dict[str, float]:
    from fastapi.testclient import TestClient

    from alerts import AlertStore
    from jiayuan.api import create_app
    from jiayuan.api.times import rfc3339
    from jiayuan.auth.store import AuthStore
    from jiayuan.context import AppContext
    from jiayuan.settings import Settings
    from registry import Device, Registry, Resident, Staff

    journal = Journal(path, synchronous="NORMAL")
    since = now - MINUTES * 60
    out: dict[str, float] = {}
    for step in ("1m", "1h"):
        query = functools.partial(
            journal.readings,
            CHART_DEVICE,
            metric="heart_rate",
            step=step,
            since=since,
            limit=100_000,
        )
        ms, rows = p50_ms(query, runs)
        out[f"journal_{step}"] = ms
        out[f"journal_{step}_buckets"] = len(rows)
    store = AlertStore(path.parent / "alerts.db")
    # The chart is a caretaker's view of their resident's heart rate: only the wearer's
    # caretakers may read it, so the API is timed with a caretaker's token.
    registry = Registry(
        "y",
        devices=[
            Device(
                device_id=CHART_DEVICE,
                kind="wearable",
                compound="C01",
                building="B01",
                unit="1-1-101",
                resident_id="r-bench",
            )
        ],
        residents=[
            Resident(
                resident_id="r-bench", building="B01", unit="1-1-101", caretakers=("cg-bench",)
            )
        ],
        staff=[Staff(staff_id="cg-bench", name="Bench caretaker", role="caretaker")],
    )
    auth = AuthStore(path.parent / "auth.db")
    token, _ = auth.create_token("cg-bench", "bench", 3600.0, "bench")
    ctx = AppContext(
        settings=Settings(data_dir=path.parent),
        journal=journal,
        alerts=store,
        registry=registry,
        auth=auth,
    )
    with TestClient(create_app(ctx), headers={"Authorization": f"Bearer {token}"}) as client:
        for step in ("1m", "1h"):
            params = {
                "metric": "heart_rate",
                "step": step,
                "since": rfc3339(since),
                "limit": "10000",
            }
            url = f"/api/devices/{CHART_DEVICE}/readings"
            ms, r = p50_ms(functools.partial(client.get, url, params=params), runs)
            out[f"api_{step}"] = ms
            out[f"api_{step}_buckets"] = len(r.json()["items"])
    store.close()
    journal.close()
    return out


def run(devices: int = 24, batch: int = 5000, runs: int = 9, keep: bool = False) -> str:
    """Run it all; prints progress and returns the summary line."""
    work = Path(tempfile.mkdtemp(prefix="jiayuan-bench-sink-"))
    try:
        return _run(work, devices, batch, runs)
    finally:
        if not keep:
            shutil.rmtree(work, ignore_errors=True)


def _run(work: Path, devices: int, batch: int, runs: int) -> str:
    path = work / "journal.db"
    now = time.time()
    t0 = time.perf_counter()
    n = build(path, devices, now=now)
    raw = disk_bytes(path)
    print(
        f"bench: sink: journal of {n:,} readings ({devices} devices × 30 days × 1/min)"
        f" built in {time.perf_counter() - t0:.0f} s",
        flush=True,
    )
    points, seconds = drain(path, work, batch)
    rate = points / seconds
    print(
        f"bench: sink: drained {points:,} readings into victoria-metrics in {seconds:.1f} s:"
        f" {rate:,.0f} points/s",
        flush=True,
    )
    t0 = time.perf_counter()
    RollupWorker(path, batch_rows=20_000, duty=1.0).run_until_idle()
    rolled = disk_bytes(path)
    print(
        f"bench: rollups built for {n:,} readings in {time.perf_counter() - t0:.0f} s",
        flush=True,
    )
    raw_mb, rollup_mb = raw / n, (rolled - raw) / n  # bytes a reading = MB a million
    print(
        f"bench: disk per million readings: raw journal {raw_mb:.0f} MB,"
        f" rollups (1m + 1h) {rollup_mb:.0f} MB",
        flush=True,
    )
    h = history(path, now, runs)
    print(
        f"bench: history, 30 days of one device (p50 of {runs}): journal 1m"
        f" {h['journal_1m']:.1f} ms ({h['journal_1m_buckets']:.0f} buckets), 1h"
        f" {h['journal_1h']:.1f} ms ({h['journal_1h_buckets']:.0f}); API 1m"
        f" {h['api_1m']:.1f} ms ({h['api_1m_buckets']:.0f}, its limit),"
        f" 1h {h['api_1h']:.1f} ms",
        flush=True,
    )
    return (
        f"sink_points_per_s={rate:.0f} history_1m_ms={h['journal_1m']:.1f}"
        f" history_1h_ms={h['journal_1h']:.1f} api_1m_ms={h['api_1m']:.1f}"
        f" api_1h_ms={h['api_1h']:.1f} raw_mb_per_million={raw_mb:.0f}"
        f" rollup_mb_per_million={rollup_mb:.0f}"
    )


def drain_only(devices: int, batch: int, library_batching: bool) -> str:
    """Build the journal and measure the drain alone (and influxdb-client's batching mode)."""
    work = Path(tempfile.mkdtemp(prefix="jiayuan-bench-sink-"))
    try:
        path = work / "journal.db"
        n = build(path, devices, now=time.time())
        print(f"bench: sink: journal of {n:,} readings built", flush=True)
        points, seconds = drain(path, work, batch)
        out = f"sink_points_per_s={points / seconds:.0f}"
        if library_batching:
            points, seconds = drain_library_batching(path, work, batch)
            out += f" library_batching_points_per_s={points / seconds:.0f}"
        return out
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python -m bench.sink", description=__doc__)
    parser.add_argument("--devices", type=int, default=24)
    parser.add_argument("--batch", type=int, default=5000)
    parser.add_argument("--drain-only", action="store_true", help="build and drain, nothing else")
    parser.add_argument(
        "--library-batching",
        action="store_true",
        help="with --drain-only: also drain through influxdb-client's batching write API",
    )
    args = parser.parse_args()
    if args.drain_only:
        print(drain_only(args.devices, args.batch, args.library_batching))
    else:
        print(run(devices=args.devices, batch=args.batch))
