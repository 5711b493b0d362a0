"""The benchmark, measured in one run on this machine against its own Mosquitto:

1. the broker's QoS 1 ceiling with Mosquitto's C clients (mosquitto_pub → mosquitto_sub);
2. the service's sustained durable ingestion: the same messages from the same mosquitto_pub
   processes into ``jiayuan run`` (QoS 1, validated, committed with fsync before PUBACK, rules
   evaluated), counted by the service itself;
3. publish-to-alert latency: falls published while a background load of 5,000 messages/s flows,
   timed from the publish to the alert arriving on the API's live stream;
4. catch-up (``bench/catchup.py``, skipped with ``--catchup 0``): the service stopped while
   100,000 readings are queued for it, then started: its drain rate against mosquitto_sub's
   for the same backlog, and publish-to-alert latency of falls published during the drain;
5. the time-series store (``bench/sink.py``, skipped with ``--no-sink``): the InfluxDB sink's
   drain rate into a local VictoriaMetrics for a backlog of a million readings, disk use per
   million readings, and the history query for a 30-day chart of one device.
6. the journal on each store (``bench/store_writes.py``, skipped with ``--no-stores``): the
   SQLite and the PostgreSQL journal classes' ``write_batch`` for the same decoded readings,
   rows per second and bytes per row on disk, side by side (PostgreSQL on a throwaway cluster
   with its durable defaults).

Every client connects with its own account over the TLS listener, as in production (each
mosquitto_pub as one device, the service with its account, the probe through a gateway);
``--plain`` uses the loopback development listener instead, to see what TLS costs.

The catch-up phase prints ``catchup_msgs_per_s=N catchup_sub_msgs_per_s=N ...``; the last line
is ``ingest_msgs_per_s=N broker_msgs_per_s=N ratio=R p50_ms=X p99_ms=Y``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from base.datadir import DataDir
from bench import catchup, sink, store_writes
from bench.cpu import (
    Ceiling,
    Snapshot,
    Tally,
    process_cpu,
    wait_caught_up,
    wait_cpu,
    wake_delay,
    wakes,
)
from bench.cpu import summary as cpu_summary
from bench.cpu import table as cpu_table
from bench.load import (
    BackgroundLoad,
    FallProbe,
    bench_registry,
    client_env,
    start_device_publisher,
    write_message_files,
)
from devtools.broker import Broker
from devtools.launch import ServiceProcess
from ingest.topics import SUBSCRIPTION
from jiayuan.settings import Settings

Files = list[tuple[str, Path]]


def _publishers(broker: Broker, files: Files, tls: bool) -> list[subprocess.Popen[bytes]]:
    procs = []
    for topic, path in files:
        with path.open("rb") as lines:
            procs.append(
                start_device_publisher(broker, topic, tls, path.with_suffix(".client"), lines)
            )
    return procs


def broker_ceiling(broker: Broker, files: Files, n: int, tls: bool, cpu: Ceiling) -> float:
    # Received as the service would: its account, its subscription (it is not running yet).
    access = broker.service_access(tls=tls)
    sub = subprocess.Popen(
        [
            "mosquitto_sub",
            "-h",
            broker.host,
            "-p",
            str(broker.port_for(access)),
            "-q",
            "1",
            "-t",
            SUBSCRIPTION,
            "-C",
            str(n),
        ],
        stdout=subprocess.DEVNULL,
        env=client_env(access, files[0][1].parent / "sub.client", "mosquitto_sub"),
    )
    time.sleep(0.5)  # subscribed before anything is published
    assert broker.proc is not None
    broker_cpu = process_cpu(broker.proc.pid)
    t0 = time.perf_counter()
    pubs = _publishers(broker, files, tls)
    cpu.sub += wait_cpu(sub)
    elapsed = time.perf_counter() - t0
    cpu.broker += process_cpu(broker.proc.pid) - broker_cpu
    cpu.publishers += sum(wait_cpu(p) for p in pubs)
    cpu.messages += n
    return n / elapsed


def service_ingest(
    svc: ServiceProcess, broker: Broker, files: Files, n: int, tls: bool, cpu: Tally
) -> float:
    """The service's rate for ``n`` messages (publish to commit); its CPU for them, the rules
    worker's and the rollups' included, is added to ``cpu``."""
    assert broker.proc is not None
    wait_caught_up(svc, svc.data_dir)
    before = Snapshot.take(svc, broker.proc.pid)
    base = svc.health()["messages_committed"]
    t0 = time.perf_counter()
    pubs = _publishers(broker, files, tls)
    while svc.health()["messages_committed"] < base + n:
        time.sleep(0.05)
    elapsed = time.perf_counter() - t0
    for p in pubs:
        p.wait()
    wait_caught_up(svc, svc.data_dir)
    cpu.add(before, Snapshot.take(svc, broker.proc.pid), n)
    return n / elapsed


def percentile(values: list[float], q: float) -> float:
    s = sorted(values)
    k = min(len(s) - 1, max(0, round(q / 100 * (len(s) - 1))))
    return s[k]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m bench",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ap.add_argument("--messages", type=int, default=100_000)
    ap.add_argument("--publishers", type=int, default=4)
    ap.add_argument("--rounds", type=int, default=2, help="ceiling and ingest: best of N")
    ap.add_argument("--background-rate", type=int, default=5_000)
    ap.add_argument("--probes", type=int, default=200)
    ap.add_argument(
        "--catchup",
        type=int,
        default=100_000,
        help="readings queued while the service is down, then drained (0: skip the phase)",
    )
    ap.add_argument("--catchup-probes", type=int, default=20)
    ap.add_argument(
        "--broker-set",
        action="append",
        default=[],
        metavar="OPTION=VALUE",
        help="set a mosquitto.conf option otherwise, e.g. autosave_on_changes=false",
    )
    ap.add_argument("--keep", action="store_true", help="keep the temporary data directory")
    ap.add_argument(
        "--no-sink",
        dest="sink",
        action="store_false",
        help="skip the time-series store's part (sink drain, history, disk)",
    )
    ap.add_argument(
        "--sink-devices",
        type=int,
        default=24,
        help="devices × 30 days of one-minute readings for the sink's part",
    )
    ap.add_argument(
        "--no-stores",
        dest="stores",
        action="store_false",
        help="skip the journal's write rate on SQLite and PostgreSQL",
    )
    ap.add_argument(
        "--ingest-processes",
        type=int,
        default=None,
        help="JIAYUAN_INGEST_PROCESSES for the service (default: the setting's default)",
    )
    ap.add_argument(
        "--plain",
        dest="tls",
        action="store_false",
        help="connect over the plain loopback listener instead of TLS",
    )
    args = ap.parse_args(argv)
    procs = (
        args.ingest_processes
        if args.ingest_processes is not None
        else Settings.model_fields["ingest_processes"].default
    )
    service_settings = {"ingest_processes": procs}

    work = Path(tempfile.mkdtemp(prefix="jiayuan-bench-"))
    ceiling_files, ingest_files = (
        [
            write_message_files(
                work / f"{part}{r}", args.messages, args.publishers, device_prefix=f"{part[0]}{r}"
            )
            for r in range(args.rounds)
        ]
        for part in ("ceiling", "service")
    )
    catchup_files = (
        write_message_files(work / "catchup", args.catchup, args.publishers, device_prefix="k")
        if args.catchup
        else []
    )
    topics = [t for files in [*ceiling_files, *ingest_files, catchup_files] for t, _ in files]
    registry = bench_registry(topics, args.probes + args.catchup_probes)
    conf = dict(o.split("=", 1) for o in args.broker_set)
    broker = Broker(work / "mosquitto", registry=registry, conf=conf).start()
    tls = args.tls
    svc: ServiceProcess | None = None
    try:
        print(
            f"bench: mosquitto on port {broker.port_for(broker.service_access(tls=tls))}"
            f" ({'TLS' if tls else 'plain'}, every client with its account), data in {work}",
            flush=True,
        )
        ceilings, rates = [], []
        ceiling_cpu, service_cpu = Ceiling(), Tally()
        for r, files in enumerate(ceiling_files):
            ceilings.append(broker_ceiling(broker, files, args.messages, tls, ceiling_cpu))
            print(f"bench: broker ceiling round {r + 1}: {ceilings[-1]:,.0f} msg/s", flush=True)
        print(f"bench: the service with {procs} telemetry ingest process(es)", flush=True)
        svc = ServiceProcess(work / "service", broker, tls=tls, **service_settings).start()
        for r, files in enumerate(ingest_files):
            rates.append(service_ingest(svc, broker, files, args.messages, tls, service_cpu))
            print(f"bench: service ingest round {r + 1}: {rates[-1]:,.0f} msg/s", flush=True)
        print(cpu_table(service_cpu, ceiling_cpu), flush=True)
        woken = wake_delay(svc, None, "ingest rounds")
        if woken is not None:
            print(woken, flush=True)

        stream_ready = threading.Event()
        probe = FallProbe(svc.url, svc.token, broker, stream_ready, tls)
        probe.start()
        if not stream_ready.wait(10):
            raise RuntimeError("the live stream did not answer")
        # the latency phase starts with nothing left of the ingest rounds (the rules worker and
        # the rollups at the journal's head), and the background load settled
        waited = wait_caught_up(svc, svc.data_dir)
        load = BackgroundLoad(broker, args.background_rate, work / "background", tls)
        load.start()
        time.sleep(2.0)
        print(
            f"bench: latency phase from a caught-up service (the rules worker and rollups"
            f" reached the journal's head {waited:.1f} s after the last round)",
            flush=True,
        )
        woken_before = wakes(svc)
        latencies = probe.run(args.probes, interval=0.1)
        achieved = load.stop()
        woken = wake_delay(svc, woken_before, f"at {args.background_rate:,} msg/s")
        if woken is not None:
            print(woken, flush=True)
        probe.stop()
        print(
            f"bench: background load {achieved:,.0f} msg/s during {len(latencies)} probes",
            flush=True,
        )
        if len(latencies) < args.probes:
            print(
                f"bench: {args.probes - len(latencies)} probe alerts never arrived", file=sys.stderr
            )
        ceiling, ingest = max(ceilings), max(rates)
        p50, p99 = percentile(latencies, 50), percentile(latencies, 99)
        db = DataDir(work / "service").journal
        rows = svc.get("/healthz")["messages_committed"]
        print(
            f"bench: journal {db.stat().st_size / 1e6:.1f} MB after {rows:,} messages", flush=True
        )
        print(json.dumps({"broker_rounds": ceilings, "ingest_rounds": rates}), flush=True)
        print(cpu_summary(service_cpu), flush=True)
        if args.catchup:
            result, svc = catchup.run(
                broker,
                svc,
                catchup_files,
                args.catchup,
                tls,
                first_probe=args.probes,
                probes=args.catchup_probes,
                settings=service_settings,
            )
            print(
                f"bench: catch-up of {args.catchup:,} queued readings: the service drained"
                f" {result.service_msgs_per_s:,.0f} msg/s once up ({result.service_total_s:.1f} s"
                f" from start), mosquitto_sub {result.sub_msgs_per_s:,.0f} msg/s",
                flush=True,
            )
            print(result.line(), flush=True)
        if args.sink:
            svc.stop()  # idle, but its threads need not share the machine with the drain
            svc = None
            print(sink.run(devices=args.sink_devices, keep=args.keep), flush=True)
        if args.stores:
            if svc is not None:
                svc.stop()
                svc = None
            for line in store_writes.journals():
                print(f"bench: {line}", flush=True)
        print(
            f"ingest_msgs_per_s={ingest:.0f} broker_msgs_per_s={ceiling:.0f} "
            f"ratio={ingest / ceiling:.2f} p50_ms={p50 * 1000:.1f} p99_ms={p99 * 1000:.1f}"
            f" ingest_processes={procs}",
            flush=True,
        )
        return 0
    finally:
        try:
            if svc is not None:
                svc.stop()  # raises if the service counted errors: its figures are not to be kept
        finally:
            broker.stop()
            if not args.keep:
                shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
