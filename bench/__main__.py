"""The benchmark, measured in one run on this machine against its own Mosquitto:

1. the broker's QoS 1 ceiling with Mosquitto's C clients (mosquitto_pub → mosquitto_sub);
2. the whole service on each store (``--stores sqlite|postgres|both``, default both; see
   ``bench/service_run.py``): ``jiayuan run`` on SQLite files, then on a throwaway PostgreSQL
   (``JIAYUAN_DATABASE_URL``, durable defaults), each against the same broker and its ceiling:
   a. sustained durable ingestion: the same kind of messages from the same mosquitto_pub
      processes (QoS 1, validated, committed before PUBACK, rules evaluated), counted in the
      service's journal (``bench/journal_head.py``: read by the bench, not asked of the
      service), and the CPU each message cost by stage (on PostgreSQL the server's too, with
      its commits, rows and WAL per message);
   b. publish-to-alert latency: falls published while a background load of 5,000 messages/s
      flows, timed from the publish to the alert arriving on the API's live stream;
   c. catch-up (``bench/catchup.py``, skipped with ``--catchup 0``): the service stopped while
      100,000 readings are queued for it, then started: its drain rate against mosquitto_sub's
      for the same backlog, and publish-to-alert latency of falls published during the drain;
   then both stores side by side in one table (``bench/sidebyside.py``), and issue 11's
   targets for each store, each figure beside the broker's in the same run and met or not
   (``bench/targets.py``);
3. the time-series store (``bench/sink.py``, skipped with ``--no-sink``): the InfluxDB sink's
   drain rate into a local VictoriaMetrics for a backlog of a million readings, disk use per
   million readings, and the history query for a 30-day chart of one device.
4. the journal on each store (``bench/store_writes.py``, skipped with ``--no-stores``): the
   SQLite and the PostgreSQL journal classes' ``write_batch`` for the same decoded readings,
   rows per second and bytes per row on disk, side by side (PostgreSQL on a throwaway cluster
   with its durable defaults).

Every client connects with its own account over the TLS listener, as in production (each
mosquitto_pub as one device, the service with its account, the probe through a gateway), and
every device is in the service's registry (``JIAYUAN_REGISTRY``), as the broker's accounts are;
``--plain`` uses the loopback development listener instead, to see what TLS costs.

The ``key=value`` lines come last: PostgreSQL's (prefixed ``pg_``), then SQLite's:
``cpu_us_…=``, ``catchup_msgs_per_s=N catchup_sub_msgs_per_s=N ...``, and last of all
``ingest_msgs_per_s=N broker_msgs_per_s=N ratio=R p50_ms=X p99_ms=Y``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench import sink, store_writes, targets
from bench.cpu import Ceiling, process_cpu, wait_cpu
from bench.cpu import table as cpu_table
from bench.load import bench_registry, client_env, service_registry, write_message_files
from bench.service_run import Files, StoreRun, ingest_layout, publishers, run_store, say
from bench.sidebyside import PREFIX, key_lines, table
from devtools.broker import Broker
from ingest.topics import SUBSCRIPTION
from jiayuan.settings import Settings

STORES = {"sqlite": ["sqlite"], "postgres": ["postgres"], "both": ["sqlite", "postgres"]}


CEILING_TIMEOUT_S = 60.0
"""How long a ceiling round may take beyond a tenth of a second a thousand messages: with
``--messages 300000`` Mosquitto disconnected the publishers (``out of memory``, 2026-12-04) and
the round waited for ever."""


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
    pubs = publishers(broker, files, tls)
    try:
        cpu.sub += wait_cpu(sub, timeout=CEILING_TIMEOUT_S + n / 10_000)
    except subprocess.TimeoutExpired:
        for p in pubs:
            p.kill()
        raise RuntimeError(
            f"the broker's ceiling round did not end: mosquitto_sub received fewer than {n:,}"
            f" messages in time. The broker's log says why ({broker.data_dir / 'mosquitto.log'},"
            " kept with --keep), e.g. clients disconnected out of memory; try fewer --messages"
        ) from None
    elapsed = time.perf_counter() - t0
    cpu.broker += process_cpu(broker.proc.pid) - broker_cpu
    cpu.publishers += sum(wait_cpu(p) for p in pubs)
    cpu.messages += n
    return n / elapsed


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="python -m bench",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ap.add_argument("--messages", type=int, default=100_000)
    ap.add_argument("--publishers", type=int, default=4)
    ap.add_argument(
        "--rounds", type=int, default=3, help="ceiling and ingest: the median of N rounds"
    )
    ap.add_argument(
        "--stores",
        choices=sorted(STORES),
        default="both",
        help="the whole service on SQLite, on PostgreSQL, or both in turn (default)",
    )
    ap.add_argument(
        "--pg-messages",
        type=int,
        default=None,
        help="messages per ingest round on PostgreSQL (default: --messages)",
    )
    ap.add_argument(
        "--pg-catchup",
        type=int,
        default=None,
        help="readings queued for the catch-up on PostgreSQL (default: --catchup)",
    )
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
        dest="stores_writes",
        action="store_false",
        help="skip the journal's write rate on SQLite and PostgreSQL",
    )
    ap.add_argument(
        "--ingest-processes",
        type=int,
        default=None,
        help="JIAYUAN_INGEST_PROCESSES for the service on SQLite (default: the setting's"
        " default; PostgreSQL refuses more than 1: its session slots run as processes)",
    )
    ap.add_argument(
        "--ingest-in-main",
        dest="ingest_separate",
        action="store_false",
        help="JIAYUAN_INGEST_SEPARATE=false for the service on SQLite: with one ingest process,"
        " telemetry read and journaled by the main process, not by a process of its own",
    )
    ap.add_argument(
        "--pg-session-slots",
        type=int,
        default=None,
        help="JIAYUAN_SESSION_SLOTS for the service on PostgreSQL (default: the setting's"
        " default): its telemetry sessions, each an ingest process while one instance holds"
        " them all",
    )
    ap.add_argument(
        "--plain",
        dest="tls",
        action="store_false",
        help="connect over the plain loopback listener instead of TLS",
    )
    return ap


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    procs = (
        args.ingest_processes
        if args.ingest_processes is not None
        else Settings.model_fields["ingest_processes"].default
    )
    slots = (
        args.pg_session_slots
        if args.pg_session_slots is not None
        else Settings.model_fields["session_slots"].default
    )
    stores = STORES[args.stores]
    sizes = {
        "sqlite": (args.messages, args.catchup),
        "postgres": (
            args.messages if args.pg_messages is None else args.pg_messages,
            args.catchup if args.pg_catchup is None else args.pg_catchup,
        ),
    }

    work = Path(tempfile.mkdtemp(prefix="jiayuan-bench-"))
    ceiling_files = [
        write_message_files(work / f"ceiling{r}", args.messages, args.publishers, f"c{r}")
        for r in range(args.rounds)
    ]
    ingest_files: dict[str, list[Files]] = {}
    catchup_files: dict[str, Files] = {}
    for store in stores:
        n, k = sizes[store]
        s = store[0]  # s…: SQLite's devices, p…: PostgreSQL's
        ingest_files[store] = [
            write_message_files(work / f"{store}{r}", n, args.publishers, f"{s}s{r}")
            for r in range(args.rounds)
        ]
        catchup_files[store] = (
            write_message_files(work / f"{store}-catchup", k, args.publishers, f"{s}k") if k else []
        )
    every: list[Files] = [*ceiling_files, *catchup_files.values()]
    every += [files for rounds in ingest_files.values() for files in rounds]
    topics = [t for files in every for t, _ in files]
    registry = bench_registry(topics, args.probes + args.catchup_probes)
    conf = dict(o.split("=", 1) for o in args.broker_set)
    broker = Broker(work / "mosquitto", registry=registry, conf=conf).start()
    known: dict[str, Any] = {"registry": service_registry(registry, work / "registry")}
    tls = args.tls
    try:
        say(
            f"mosquitto on port {broker.port_for(broker.service_access(tls=tls))}"
            f" ({'TLS' if tls else 'plain'}, every client with its account), data in {work}"
        )
        ceilings: list[float] = []
        ceiling_cpu = Ceiling()
        for i, files in enumerate(ceiling_files):
            ceilings.append(broker_ceiling(broker, files, args.messages, tls, ceiling_cpu))
            say(f"broker ceiling round {i + 1}: {ceilings[-1]:,.0f} msg/s")
        ceiling = statistics.median(ceilings)
        runs: list[StoreRun] = []
        for store in stores:
            n, k = sizes[store]
            settings: dict[str, Any] = known | (
                {"ingest_processes": procs, "ingest_separate": args.ingest_separate}
                if store == "sqlite"
                else {"session_slots": slots}
            )
            what = (
                ingest_layout(procs, args.ingest_separate)
                if store == "sqlite"
                else "a throwaway PostgreSQL (durable defaults), one instance, its"
                f" {slots} telemetry session slots"
                + (" (the default)" if args.pg_session_slots is None else "")
            )
            note = (
                f"; shorter than SQLite's: {n:,} messages a round, catch-up of {k:,}"
                if store == "postgres" and "sqlite" in stores and (n, k) != sizes["sqlite"]
                else ""
            )
            say(f"{store}: the service on {what}{note}")
            run = run_store(
                store,
                broker,
                work,
                ingest_files[store],
                catchup_files[store],
                args,
                settings,
                messages=n,
                catchup_n=k,
            )
            # (on PostgreSQL each session slot this one instance holds is an ingest process)
            run.ingest_processes = procs if store == "sqlite" else slots
            run.ingest_separate = args.ingest_separate if store == "sqlite" else True
            run.note = note.removeprefix("; ")
            runs.append(run)
            say(f"{store}: " + cpu_table(run.cpu, ceiling_cpu).removeprefix("bench: "))
        print(
            json.dumps(
                {
                    "broker_rounds": ceilings,
                    **{f"{PREFIX[r.store]}ingest_rounds": r.rates for r in runs},
                }
            ),
            flush=True,
        )
        print(table(runs, ceiling, ceiling_cpu), flush=True)
        print(targets.report(runs, ceiling, ceiling_cpu, ceilings), flush=True)
        for r in runs:
            if r.note:
                say(f"{r.store}: {r.note}")
            if r.partitions:
                say(
                    f"{r.store}: journal partitions: "
                    + ", ".join(
                        f"{p.name} {p.rows:,} readings {p.bytes / 1e6:.1f} MB"
                        f" ({p.bytes / p.rows:.0f} B each)"
                        for p in r.partitions
                    )
                )
            if r.tables:
                say(
                    f"{r.store}: rows written by table over the whole run (most first): "
                    + ", ".join(f"{name} {n:,}" for name, n in r.tables)
                )
        if args.sink:
            print(sink.run(devices=args.sink_devices, keep=args.keep), flush=True)
        if args.stores_writes:
            for line in store_writes.journals():
                say(line)
        for r in sorted(runs, key=lambda r: r.store != "postgres"):  # SQLite's lines last
            for line in key_lines(r, ceiling):
                print(line, flush=True)
        return 0
    finally:
        broker.stop()
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
