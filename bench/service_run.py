"""The whole service measured on one store: ``jiayuan run`` on SQLite files (its default) or on
a throwaway PostgreSQL (``JIAYUAN_DATABASE_URL``: journal, alert store, auth there; one
instance with its default session slots), fed by the same broker as the other store:

1. the ingest rounds (the service's rate for the rounds' messages, publish to commit, and the
   CPU each message cost, stage by stage, until the rules worker — and on SQLite the rollups —
   caught up);
2. the latency phase: falls published during a background load, timed to their alerts on the
   API's live stream;
3. the catch-up (``bench/catchup.py``);
4. on PostgreSQL, the server's side of the ingest rounds (``bench/pgserver.py``): its CPU,
   commits, rows written and WAL per message, and the journal's bytes per reading on disk.

Between stores the service's sessions left on the broker are ended (:func:`end_session`), so
that a stopped store's persistent sessions do not queue the next store's messages.
"""

from __future__ import annotations

import sqlite3
import statistics
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from base.datadir import DataDir
from bench import catchup
from bench.catchup import CatchUp
from bench.cpu import Snapshot, Tally, wait_caught_up, wake_delay, wakes
from bench.journal_head import JournalHead
from bench.load import BackgroundLoad, FallProbe, start_device_publisher
from bench.pgserver import NOTHING, Partition, PgServer, Work
from devtools.broker import Broker
from devtools.launch import ServiceProcess
from ingest.access import BrokerAccess

Files = list[tuple[str, Path]]


def publishers(broker: Broker, files: Files, tls: bool) -> list[subprocess.Popen[bytes]]:
    procs = []
    for topic, path in files:
        with path.open("rb") as lines:
            procs.append(
                start_device_publisher(broker, topic, tls, path.with_suffix(".client"), lines)
            )
    return procs


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    s = sorted(values)
    k = min(len(s) - 1, max(0, round(q / 100 * (len(s) - 1))))
    return s[k]


def say(line: str) -> None:
    print(f"bench: {line}", flush=True)


@dataclass
class StoreRun:
    """One store's figures."""

    store: str
    """``sqlite`` or ``postgres``."""
    messages: int
    """Messages per ingest round."""
    rates: list[float] = field(default_factory=list)
    cpu: Tally = field(default_factory=Tally)
    latencies: list[float] = field(default_factory=list)
    probes: int = 0
    background: float = 0.0
    catchup: CatchUp | None = None
    readings: int = 0
    """Readings in the journal at the end (every phase's)."""
    journal_bytes: int = 0
    """The journal's bytes on disk (SQLite: the file; PostgreSQL: the readings' partitions)."""
    partitions: list[Partition] = field(default_factory=list)
    tables: list[tuple[str, int]] = field(default_factory=list)
    """PostgreSQL's tables with the most rows written over the whole run."""
    server: Work = NOTHING
    """PostgreSQL's work during the ingest rounds (summed over the rounds' windows)."""
    server_version: str = ""
    ingest_processes: int = 1
    ingest_separate: bool = False
    """``JIAYUAN_INGEST_SEPARATE`` (off with ``--ingest-in-main``): with one ingest process,
    that process apart from the main process."""
    note: str = ""
    """What differs from the other store's run (shorter rounds)."""

    @property
    def ingest(self) -> float:
        """The median of the rounds' rates (as the ceiling's: bench/__main__.py; with an even
        number of rounds, the mean of the middle two)."""
        return statistics.median(self.rates) if self.rates else float("nan")

    @property
    def spent_us(self) -> float:
        """CPU a message of the service, and on PostgreSQL of its server too (the same cores)."""
        return self.cpu.us(self.cpu.service + self.server.cpu_s)

    def per_message(self, count: float) -> float:
        return count / self.cpu.messages if self.cpu.messages else float("nan")

    @property
    def bytes_per_reading(self) -> float:
        return self.journal_bytes / self.readings if self.readings else float("nan")


def ingest_layout(count: int, separate: bool) -> str:
    """How a run's telemetry was read, for its headings."""
    if count == 1:
        return (
            "1 telemetry ingest process apart from the main process"
            if separate
            else "1 telemetry ingest process (the main process)"
        )
    return f"{count} telemetry ingest processes"


def service_ingest(
    svc: ServiceProcess,
    broker: Broker,
    files: Files,
    n: int,
    tls: bool,
    cpu: Tally,
    server: PgServer | None = None,
) -> tuple[float, Work]:
    """The service's rate for ``n`` messages (publish to commit); its CPU for them, the rules
    worker's and the rollups' included, is added to ``cpu``. With ``server``: what PostgreSQL
    did in the same window."""
    assert broker.proc is not None
    wait_caught_up(svc, svc.data_dir)
    before = Snapshot.take(svc, broker.proc.pid)
    pg_before = server.snapshot() if server is not None else NOTHING
    with JournalHead(svc.data_dir, server.url if server else None) as journal:
        base = journal.top()
        t0 = time.perf_counter()
        pubs = publishers(broker, files, tls)
        journal.wait(base, n)
        elapsed = time.perf_counter() - t0
    for p in pubs:
        p.wait()
    wait_caught_up(svc, svc.data_dir)
    cpu.add(before, Snapshot.take(svc, broker.proc.pid), n)
    work = server.snapshot().minus(pg_before) if server is not None else NOTHING
    return n / elapsed, work


def end_session(broker: Broker, access: BrokerAccess, client_id: str) -> None:
    """End the persistent session ``client_id`` on the broker: connect with a clean start (the
    old session and its queue dropped) and leave with no session expiry."""
    done = threading.Event()
    refused: list[str] = []
    c = mqtt.Client(
        callback_api_version=CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5
    )

    def on_connect(_c: mqtt.Client, _u: Any, _f: Any, reason: Any, _p: Any) -> None:
        if reason.is_failure:
            refused.append(str(reason))
        done.set()

    c.on_connect = on_connect
    access.apply(c)
    c.connect(broker.host, broker.port_for(access), clean_start=True)
    c.loop_start()
    try:
        if not done.wait(10) or refused:
            raise RuntimeError(f"could not connect as {client_id} to end its session: {refused}")
    finally:
        c.disconnect()
        c.loop_stop()


def end_service_sessions(broker: Broker, env: dict[str, str]) -> None:
    """The SQLite service's two sessions (its telemetry and urgent client ids) and the
    catch-up's subscriber: ended, so that nothing queues for them while the next store runs."""
    end_session(
        broker,
        broker.service_access(tls=False),
        env.get("JIAYUAN_MQTT_CLIENT_ID", "jiayuan-ingest"),
    )
    end_session(
        broker,
        broker.urgent_access(tls=False),
        env.get("JIAYUAN_MQTT_URGENT_CLIENT_ID", "jiayuan-urgent"),
    )
    sub = broker.test_access(catchup.SUBSCRIBER)
    end_session(broker, sub, sub.username or catchup.SUBSCRIBER)


def _sqlite_readings(data_dir: Path) -> tuple[int, int]:
    """Readings in the SQLite journal and the file's bytes (read after the service stopped)."""
    path = DataDir(data_dir).journal
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        (n,) = db.execute("SELECT count(*) FROM readings").fetchone()
    finally:
        db.close()
    return int(n), path.stat().st_size


def run_store(
    store: str,
    broker: Broker,
    work: Path,
    rounds: list[Files],
    catchup_files: Files,
    args: Any,
    settings: dict[str, Any],
    *,
    messages: int,
    catchup_n: int,
) -> StoreRun:
    """Start the service on ``store`` and run the ingest rounds, the latency phase and the
    catch-up; stop it (and PostgreSQL). ``args``: the benchmark's options."""
    tls: bool = args.tls
    server = PgServer() if store == "postgres" else None
    run = StoreRun(store, messages)
    if server is not None:
        settings = {**settings, "database_url": server.url}
        run.server_version = server.version
    data = work / f"{store}-service"
    svc: ServiceProcess | None = None
    try:
        svc = ServiceProcess(data, broker, tls=tls, **settings).start()
        for r, files in enumerate(rounds):
            rate, did = service_ingest(svc, broker, files, messages, tls, run.cpu, server)
            run.rates.append(rate)
            run.server = run.server.plus(did)
            say(f"{store}: service ingest round {r + 1}: {rate:,.0f} msg/s")
        woken = wake_delay(svc, None, "ingest rounds")
        if woken is not None:
            say(f"{store}: {woken.removeprefix('bench: ')}")
        _latency(svc, broker, work / f"{store}-background", args, run)
        if catchup_n:
            result, svc = catchup.run(
                broker,
                svc,
                catchup_files,
                catchup_n,
                tls,
                first_probe=args.probes,
                probes=args.catchup_probes,
                settings=settings,
            )
            run.catchup = result
            say(
                f"{store}: catch-up of {catchup_n:,} queued readings: the service drained"
                f" {result.service_msgs_per_s:,.0f} msg/s once up ({result.service_total_s:.1f} s"
                f" from start), mosquitto_sub {result.sub_msgs_per_s:,.0f} msg/s"
            )
        if server is not None:
            run.partitions = server.partitions()
            run.tables = server.tables()
            run.readings = sum(p.rows for p in run.partitions)
            run.journal_bytes = sum(p.bytes for p in run.partitions)
        env = svc.env
        svc.stop()  # raises if the service counted errors: its figures are not to be kept
        svc = None
        if server is None:
            run.readings, run.journal_bytes = _sqlite_readings(data)
        end_service_sessions(broker, env)
        return run
    finally:
        try:
            if svc is not None:
                svc.stop()
        finally:
            if server is not None:
                server.stop()


def _latency(svc: ServiceProcess, broker: Broker, folder: Path, args: Any, run: StoreRun) -> None:
    stream_ready = threading.Event()
    probe = FallProbe(svc.url, svc.token, broker, stream_ready, args.tls)
    probe.start()
    if not stream_ready.wait(10):
        raise RuntimeError("the live stream did not answer")
    # the latency phase starts with nothing left of the ingest rounds (the rules worker and
    # the rollups at the journal's head), and the background load settled
    waited = wait_caught_up(svc, svc.data_dir)
    load = BackgroundLoad(broker, args.background_rate, folder, args.tls)
    load.start()
    time.sleep(2.0)
    say(
        f"{run.store}: latency phase from a caught-up service (the followers reached the"
        f" journal's head {waited:.1f} s after the last round)"
    )
    woken_before = wakes(svc)
    run.latencies = probe.run(args.probes, interval=0.1)
    run.probes = args.probes
    run.background = load.stop()
    woken = wake_delay(svc, woken_before, f"at {args.background_rate:,} msg/s")
    if woken is not None:
        say(f"{run.store}: {woken.removeprefix('bench: ')}")
    probe.stop()
    alerted = len(run.latencies)
    say(f"{run.store}: background load {run.background:,.0f} msg/s during {alerted} probes")
    known = alerted - len(probe.unregistered())
    say(f"{run.store}: probe alerts from devices in the service's registry: {known}/{alerted}")
    if len(run.latencies) < args.probes:
        print(
            f"bench: {run.store}: {args.probes - len(run.latencies)} probe alerts never arrived",
            file=sys.stderr,
        )
