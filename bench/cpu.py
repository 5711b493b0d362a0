"""CPU per message, stage by stage, for the benchmark: where the service's CPU goes beside what
the broker and Mosquitto's own clients spend on the same messages in the same run.

Process CPU is read from ``/proc/<pid>/stat`` (the service, mosquitto), a client's from its
exit (``wait4``); the service's stages from its ``/metrics``: per thread
(``jiayuan_thread_cpu_seconds_total``: the MQTT loop threads, the rules worker, the rollups)
and, within the ingest thread, per batch (``jiayuan_ingest_cpu_seconds_total``: decode and
journal). A window counts until the followers have caught up with what it ingested, so that the
rules worker's and the rollups' share of those messages is in it.

With telemetry ingest processes (``JIAYUAN_INGEST_PROCESSES`` above 1) every figure is summed
over the processes: the children's CPU, whole and by thread, from the main process's
``jiayuan_ingest_process_cpu_seconds_total`` (read from ``/proc`` at the scrape), their decode
and journal stages added into its own counters at each report (every 0.5 s: a snapshot waits a
second for the children's last).
"""

from __future__ import annotations

import os
import sqlite3
import subprocess
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from prometheus_client.parser import text_string_to_metric_families

from base import procstat
from base.datadir import DataDir
from devtools.launch import ServiceProcess

STAGES: Final = (
    ("receive", "receive: paho + ingest/mqtt_client.py (MQTT loop threads)"),
    ("decode", "decode (ingest thread, per batch)"),
    ("journal", "journal: rows, write, commit (ingest thread)"),
    ("rules", "rules worker"),
    ("ingest_rest", "rest: ingest thread's queue, acks, metrics"),
    ("rollup", "rest: rollups follower"),
    ("other", "rest: other threads, ended threads, GC"),
)


def process_cpu(pid: int) -> float:
    """User plus system CPU seconds of a running process."""
    seconds = procstat.cpu_seconds(pid)
    if seconds is None:
        raise ProcessLookupError(f"no process {pid}")
    return seconds


def wait_cpu(proc: subprocess.Popen[bytes], timeout: float | None = None) -> float:
    """Wait for a child and return the CPU seconds it used (instead of ``proc.wait()``).
    ``timeout``: past it, the child is killed and :class:`subprocess.TimeoutExpired` raised."""
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        pid, status, usage = os.wait4(proc.pid, 0 if deadline is None else os.WNOHANG)
        if pid:
            proc.returncode = os.waitstatus_to_exitcode(status)
            return usage.ru_utime + usage.ru_stime
        assert deadline is not None
        if time.monotonic() > deadline:
            proc.kill()
            proc.wait()
            raise subprocess.TimeoutExpired(proc.args, timeout or 0.0)
        time.sleep(0.01)


_BATCH_SAMPLES: Final = {
    "jiayuan_journal_batch_messages_count": "batch:count",
    "jiayuan_journal_batch_messages_sum": "batch:messages",
    "jiayuan_journal_commit_seconds_sum": "batch:commit_s",
}
"""The main process's batches (the ingest processes' histograms are not carried over)."""


def _service_counters(svc: ServiceProcess) -> dict[str, float]:
    """Threads' CPU by label and the ingest stages', summed over the service's processes;
    ``children`` is the ingest processes' whole CPU."""
    out: dict[str, float] = {}

    def add(key: str, value: float) -> None:
        out[key] = out.get(key, 0.0) + value

    for family in text_string_to_metric_families(svc.get_text("/metrics")):
        for s in family.samples:
            if s.name == "jiayuan_thread_cpu_seconds_total":
                add("thread:" + s.labels["thread"], s.value)
            elif s.name == "jiayuan_ingest_cpu_seconds_total":
                add("stage:" + s.labels["stage"], s.value)
            elif s.name in _BATCH_SAMPLES:
                add(_BATCH_SAMPLES[s.name], s.value)
            elif s.name == "jiayuan_ingest_process_cpu_seconds_total":
                thread = s.labels["thread"]
                add("children" if thread == "process" else f"thread:{thread}", s.value)
    return out


@dataclass
class Snapshot:
    service: float
    broker: float
    counters: dict[str, float]

    @classmethod
    def take(cls, svc: ServiceProcess, broker_pid: int) -> Snapshot:
        assert svc.proc is not None
        if svc.health().get("ingest_processes"):
            time.sleep(1.0)  # the children's last report in (their stage counters)
        counters = _service_counters(svc)
        main = process_cpu(svc.proc.pid)
        return cls(main + counters.pop("children", 0.0), process_cpu(broker_pid), counters)


@dataclass
class Tally:
    """CPU seconds summed over windows, and the messages they carried."""

    messages: int = 0
    service: float = 0.0
    broker: float = 0.0
    stages: dict[str, float] = field(default_factory=dict)
    batches: float = 0.0
    """Batches the main process's pipeline committed (none with ingest processes)."""
    batch_messages: float = 0.0
    commit_s: float = 0.0
    """Seconds those batches took in ``write_batch`` (rows, write, commit: wall time)."""

    def add(self, before: Snapshot, after: Snapshot, messages: int) -> None:
        def d(key: str) -> float:
            return after.counters.get(key, 0.0) - before.counters.get(key, 0.0)

        total = after.service - before.service
        parts = {
            "receive": d("thread:mqtt"),
            "decode": d("stage:decode"),
            "journal": d("stage:journal"),
            "rules": d("thread:rules"),
            "ingest_rest": d("thread:ingest") - d("stage:decode") - d("stage:journal"),
            "rollup": d("thread:journal-rollup"),
        }
        parts["other"] = total - sum(parts.values())
        self.messages += messages
        self.batches += d("batch:count")
        self.batch_messages += d("batch:messages")
        self.commit_s += d("batch:commit_s")
        self.service += total
        self.broker += after.broker - before.broker
        for k, v in parts.items():
            self.stages[k] = self.stages.get(k, 0.0) + v

    def us(self, seconds: float) -> float:
        return seconds / self.messages * 1e6 if self.messages else float("nan")


Wakes = tuple[dict[float, float], float, float]
"""``jiayuan_ingest_wake_seconds``: cumulative count by bucket bound, sum, count."""


def wakes(svc: ServiceProcess) -> Wakes:
    """The histogram of how long the main process took to wake its rules worker after an
    ingest process's commit (empty with one process)."""
    buckets: dict[float, float] = {}
    total = count = 0.0
    for family in text_string_to_metric_families(svc.get_text("/metrics")):
        if family.name != "jiayuan_ingest_wake_seconds":
            continue
        for s in family.samples:
            if s.name.endswith("_bucket"):
                buckets[float(s.labels["le"])] = s.value
            elif s.name.endswith("_sum"):
                total = s.value
            elif s.name.endswith("_count"):
                count = s.value
    return buckets, total, count


def wake_delay(svc: ServiceProcess, since: Wakes | None, what: str) -> str | None:
    """A line on the wake delays since ``since`` (from the start: None): commits, mean, and
    the bucket that holds the 99th percentile; None with one process."""
    buckets, total, count = wakes(svc)
    if since is not None:
        buckets = {le: n - since[0].get(le, 0.0) for le, n in buckets.items()}
        total, count = total - since[1], count - since[2]
    if count <= 0:
        return None
    p99 = next(le for le, n in sorted(buckets.items()) if n >= 0.99 * count)
    return (
        f"bench: rules worker woken after an ingest process's commit, {what}: {count:,.0f}"
        f" commits, mean {total / count * 1000:.2f} ms, p99 ≤ {p99 * 1000:g} ms"
    )


def caught_up(svc: ServiceProcess, data_dir: Path) -> bool:
    """Whether the rules worker and the rollups have reached the journal's head. On
    PostgreSQL (no rollups there, no journal file) the rules worker's backlog alone."""
    health = svc.health()
    if health["rules_worker"]["behind"]:
        return False
    if not health.get("rollups", True):
        return True
    db = sqlite3.connect(f"file:{DataDir(data_dir).journal}?mode=ro", uri=True)
    try:
        (top,) = db.execute("SELECT coalesce(max(id), 0) FROM readings").fetchone()
        row = db.execute("SELECT last_id FROM cursors WHERE name = 'rollup'").fetchone()
    finally:
        db.close()
    return row is not None and row[0] >= top


def wait_caught_up(svc: ServiceProcess, data_dir: Path, timeout: float = 300.0) -> float:
    """Wait until :func:`caught_up`; returns the seconds waited."""
    t0 = time.monotonic()
    while not caught_up(svc, data_dir):
        if time.monotonic() - t0 > timeout:
            raise RuntimeError("the rules worker or the rollups did not catch up")
        time.sleep(0.1)
    return time.monotonic() - t0


@dataclass
class Ceiling:
    """What the broker and Mosquitto's clients spent in the ceiling rounds."""

    messages: int = 0
    broker: float = 0.0
    sub: float = 0.0
    publishers: float = 0.0

    def us(self, seconds: float) -> float:
        return seconds / self.messages * 1e6 if self.messages else float("nan")


def table(service: Tally, ceiling: Ceiling) -> str:
    """The per-stage table, in µs of CPU per message."""
    rows: list[tuple[str, float]] = [
        (label, service.us(service.stages.get(k, 0.0))) for k, label in STAGES
    ]
    rows.append(("service total", service.us(service.service)))
    rows.append(("broker (mosquitto) while the service ingests", service.us(service.broker)))
    rows.append(("broker (mosquitto) at its ceiling", ceiling.us(ceiling.broker)))
    rows.append(("mosquitto_sub at the ceiling", ceiling.us(ceiling.sub)))
    rows.append(("mosquitto_pub (all publishers) at the ceiling", ceiling.us(ceiling.publishers)))
    width = max(len(label) for label, _ in rows)
    lines = [
        f"bench: CPU per message, µs ({service.messages:,} messages ingested,"
        f" {ceiling.messages:,} at the ceiling)"
    ]
    lines += [f"bench:   {label:<{width}}  {v:6.1f}" for label, v in rows]
    if service.batches:
        lines.append(
            f"bench: ingest batches (main process): {service.batches:,.0f},"
            f" {service.batch_messages / service.batches:,.0f} messages each on average,"
            f" {service.commit_s / service.batches * 1000:.1f} ms each in write_batch (wall)"
        )
    return "\n".join(lines)


def summary(service: Tally) -> str:
    """The stages as one ``key=value`` line (µs per message)."""
    parts: Iterable[tuple[str, float]] = [
        (k, service.us(service.stages.get(k, 0.0))) for k, _ in STAGES
    ]
    stages: Mapping[str, float] = dict(parts)
    return " ".join(
        [f"cpu_us_{k}={v:.1f}" for k, v in stages.items()]
        + [f"cpu_us_service={service.us(service.service):.1f}"]
        + [f"cpu_us_broker={service.us(service.broker):.1f}"]
    )
