"""What Mosquitto's persistence settings cost, and what they lose (issue 9, part 7).

Mosquitto 2.0 keeps its queues in memory and writes the whole of it (``mosquitto.db``) as a
snapshot: every ``autosave_interval`` seconds, or with ``autosave_on_changes true`` every
``autosave_interval`` changes (queued messages, retained messages, subscription changes), and
on a clean shutdown. Killed between two snapshots, it loses what arrived since the last one.

For each variant, with the service's session (its account, persistent, subscribed to telemetry)
disconnected so that everything published queues for it, as while the service is down:

1. publish ``--queue`` readings (4 ``mosquitto_pub`` processes, QoS 1, each as its device):
   the broker's rate, its CPU seconds and the bytes it wrote to disk meanwhile;
2. idle ``--idle`` seconds with that backlog queued: CPU and disk writes (time-based snapshots
   are written whether anything changed or not);
3. drain that backlog as the service would on its return (``mosquitto_sub`` in the service's
   session): the rate, and what the broker wrote meanwhile;
4. publish ``--tail`` more readings and SIGKILL the broker at the last PUBACK; start it again
   over the same files, and count what the session still holds of them: the loss (and how
   many of the drained backlog come again: those the last snapshot still held).

Run: ``python -m bench.broker_persistence [--queue 200000] [--variant NAME]...``; the default
is every variant at 200,000 queued readings. Each variant gets a fresh broker and data folder.
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
from dataclasses import asdict, dataclass
from pathlib import Path

from bench.cpu import process_cpu
from bench.load import bench_registry, client_env, start_device_publisher, write_message_files
from devtools.broker import Broker
from ingest.topics import TELEMETRY_SUBSCRIPTIONS

VARIANTS: dict[str, dict[str, str]] = {
    "time-30s": {"autosave_on_changes": "false", "autosave_interval": "30"},
    "time-5s": {"autosave_on_changes": "false", "autosave_interval": "5"},
    "time-1s": {"autosave_on_changes": "false", "autosave_interval": "1"},
    "changes-100k": {"autosave_on_changes": "true", "autosave_interval": "100000"},
    "changes-10k": {"autosave_on_changes": "true", "autosave_interval": "10000"},
    "changes-1k": {"autosave_on_changes": "true", "autosave_interval": "1000"},
    "off": {"persistence": "false"},
}
"""Settings replaced in mosquitto.conf; ``off``: no persistence, the baseline."""


@dataclass
class Usage:
    cpu_s: float
    written_mb: float

    @staticmethod
    def of(pid: int) -> Usage:
        cpu = process_cpu(pid)
        io = dict(line.split(": ") for line in Path(f"/proc/{pid}/io").read_text().splitlines())
        return Usage(cpu, int(io["write_bytes"]) / 1e6)

    def __sub__(self, other: Usage) -> Usage:
        return Usage(
            round(self.cpu_s - other.cpu_s, 2), round(self.written_mb - other.written_mb, 1)
        )


@dataclass
class Result:
    variant: str
    queue: int
    publish_msgs_per_s: float
    publish: Usage
    idle_s: float
    idle: Usage
    drain_msgs_per_s: float
    """The backlog received by the service's session (mosquitto_sub) after the idle time."""
    drain: Usage
    db_mb: float
    rss_mb: float
    tail: int
    lost: int
    """Of the tail."""
    redelivered: int
    """Of the drained backlog, delivered again after the restart."""
    restart_s: float


def _pid(broker: Broker) -> int:
    assert broker.proc is not None
    return broker.proc.pid


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def _session(broker: Broker, folder: Path, *extra: str) -> subprocess.Popen[bytes]:
    """mosquitto_sub as the service's account, in its persistent session (clean start off)."""
    access = broker.service_access(tls=False)
    filters = [a for f in TELEMETRY_SUBSCRIPTIONS for a in ("-t", f)]
    return subprocess.Popen(
        ["mosquitto_sub", "-h", broker.host, "-p", str(broker.port), "-V", "5",
         "-i", access.username or "", "-c", "-x", "86400", "-q", "1", *filters, *extra],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,  # "Timed out" when the drain ends by -W
        env=client_env(access, folder, "mosquitto_sub"),
    )  # fmt: skip


CHUNK = 50_000
"""Lines per mosquitto_pub process. Mosquitto 2.0.11's ``mosquitto_pub -l`` stops early, with
exit status 0, once its message ids (16 bits) have wrapped around: it takes the PUBACK of an
earlier message with the same id as its last one's. The broker logs the rest of the unsent
messages as "disconnected due to out of memory"."""


def _chunks(files: Files) -> list[tuple[str, list[Path]]]:
    """Each file cut into files of at most :data:`CHUNK` lines, published one after another."""
    out = []
    for topic, path in files:
        parts: list[Path] = []
        with path.open("rb") as f:
            while lines := [line for _, line in zip(range(CHUNK), f, strict=False)]:
                part = path.with_suffix(f".{len(parts)}.part")
                part.write_bytes(b"".join(lines))
                parts.append(part)
        out.append((topic, parts))
    return out


def _publish(broker: Broker, files: Files) -> float:
    """Publish every line of ``files``, one device (one mosquitto_pub at a time) per file, the
    files in parallel; seconds until the broker acknowledged the last."""
    lanes = _chunks(files)
    failed: list[str] = []

    def lane(topic: str, parts: list[Path]) -> None:
        for part in parts:
            with part.open("rb") as lines:
                p = start_device_publisher(broker, topic, False, part.with_suffix(".client"), lines)
                if p.wait() != 0:
                    failed.append(topic)

    threads = [threading.Thread(target=lane, args=lane_args) for lane_args in lanes]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if failed:
        raise RuntimeError(f"mosquitto_pub failed for {failed}")
    return time.perf_counter() - t0


Files = list[tuple[str, Path]]


def _messages(files: Files) -> int:
    total = 0
    for _, path in files:
        with path.open("rb") as f:
            total += sum(1 for _ in f)
    return total


def measure(name: str, work: Path, main: Files, last: Files, idle: float) -> Result:
    queue, tail = _messages(main), _messages(last)
    registry = bench_registry([t for t, _ in main + last], 0)
    broker = Broker(work / "mosquitto", registry=registry, conf=VARIANTS[name]).start()
    try:
        sub = _session(broker, work / "sub", "-E")  # the session exists, subscribed
        if sub.wait(30) != 0:
            raise RuntimeError("mosquitto_sub could not subscribe")
        pid = _pid(broker)
        u0 = Usage.of(pid)
        elapsed = _publish(broker, main)
        u1 = Usage.of(pid)
        time.sleep(idle)
        u2 = Usage.of(pid)
        rss = _rss_mb(pid)
        db = broker.data_dir / "mosquitto.db"
        db_mb = db.stat().st_size / 1e6 if db.exists() else 0.0
        t0 = time.perf_counter()  # the service returns: the backlog drains
        drain = _session(broker, work / "sub", "-C", str(queue))
        drained = drain.communicate()[0].count(b"\n")
        drain_s = time.perf_counter() - t0
        u3 = Usage.of(pid)
        if drained != queue:
            raise RuntimeError(f"drained {drained:,} of {queue:,}")
        _publish(broker, last)
        broker.stop(kill=True)  # at the last PUBACK: nothing written since, unless saved
        t0 = time.perf_counter()
        broker.start(timeout=600)
        restart = time.perf_counter() - t0
        # What the session holds now: the tail, if saved, and what the last snapshot still had
        # of the drained backlog (delivered again: duplicates, which the journal drops).
        kept = _session(broker, work / "sub", "-v", "-W", str(10 + queue // 100_000))
        tail_topics = tuple(t.encode() + b" " for t, _ in last)
        lines = kept.communicate()[0].splitlines()
        recovered = sum(1 for line in lines if line.startswith(tail_topics))
        again = len(lines) - recovered
        return Result(
            variant=name,
            queue=queue,
            publish_msgs_per_s=round(queue / elapsed),
            publish=u1 - u0,
            idle_s=idle,
            idle=u2 - u1,
            drain_msgs_per_s=round(queue / drain_s),
            drain=u3 - u2,
            db_mb=round(db_mb, 1),
            rss_mb=round(rss, 1),
            tail=tail,
            lost=tail - recovered,
            redelivered=again,
            restart_s=round(restart, 2),
        )
    finally:
        broker.stop()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m bench.broker_persistence",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ap.add_argument("--queue", type=int, default=200_000, help="readings queued (default 200,000)")
    ap.add_argument("--tail", type=int, default=20_000, help="published just before the kill")
    ap.add_argument("--idle", type=float, default=31.0, help="seconds idle with the backlog")
    ap.add_argument("--publishers", type=int, default=4)
    ap.add_argument("--variant", action="append", choices=sorted(VARIANTS), help="default: all")
    ap.add_argument("--keep", action="store_true", help="keep the temporary data directory")
    args = ap.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="jiayuan-persistence-"))
    print(
        f"{'variant':<13} {'queued':>9} {'pub msg/s':>9} {'pub cpu s':>9} {'pub MB w':>9}"
        f" {'idle cpu s':>10} {'idle MB w':>9} {'drain msg/s':>11} {'drain MB w':>10}"
        f" {'db MB':>6} {'rss MB':>7} {'lost':>7} {'again':>9}"
        f" {'restart s':>9}",
        flush=True,
    )
    results = []
    try:
        main_files = write_message_files(work / "queue", args.queue, args.publishers, "q")
        tail_files = write_message_files(work / "tail", args.tail, args.publishers, "t")
        for name in args.variant or list(VARIANTS):
            r = measure(name, work / name, main_files, tail_files, args.idle)
            results.append(r)
            print(
                f"{r.variant:<13} {r.queue:>9,} {r.publish_msgs_per_s:>9,} {r.publish.cpu_s:>9.1f}"
                f" {r.publish.written_mb:>9,.0f} {r.idle.cpu_s:>10.1f} {r.idle.written_mb:>9,.0f}"
                f" {r.drain_msgs_per_s:>11,} {r.drain.written_mb:>10,.0f}"
                f" {r.db_mb:>6,.0f} {r.rss_mb:>7,.0f} {r.lost:>7,} {r.redelivered:>9,}"
                f" {r.restart_s:>9.1f}",
                flush=True,
            )
            shutil.rmtree(work / name, ignore_errors=True)
        print(json.dumps([asdict(r) for r in results]), flush=True)
        return 0
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
