"""CPU time per thread of this process, for ``/metrics``: where the service's CPU goes, stage by
stage (the MQTT loop threads, the ingest thread, the rules worker, the followers...).

Read from ``/proc/self/task/<tid>/stat`` when ``/metrics`` is scraped, so it costs nothing
between scrapes; on a system without ``/proc`` nothing is exported. Threads are labelled by
their Python name with numbering left out (paho's ``paho-mqtt-client-<id>`` threads are
``mqtt``, ``notify-3`` is ``notify``); threads of other names (a library's workers, the
``Thread-N`` of an executor) count together as ``other``. A thread that has ended takes its
CPU with it, so the counter of a label can fall; compare two scrapes of a steady process.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Final

from prometheus_client.core import CounterMetricFamily
from prometheus_client.registry import Collector

from base import procstat

_TASKS: Final = Path("/proc/self/task")
_NAMED: Final = re.compile(r"[A-Za-z][A-Za-z_]*(?:-[A-Za-z_]+)*")


def label(name: str) -> str:
    """The label of a thread called ``name``."""
    if name.startswith("paho-mqtt-client-"):
        return "mqtt"
    base = re.sub(r"-\d+$", "", name)
    return base if _NAMED.fullmatch(base) and not base.startswith("Thread") else "other"


def cpu_seconds(native_id: int) -> float | None:
    """User plus system CPU of one thread of this process, None when it cannot be read."""
    return procstat.cpu_seconds(_TASKS / str(native_id) / "stat")


def by_label() -> dict[str, float]:
    """CPU seconds of the live threads, summed by :func:`label`."""
    out: dict[str, float] = {}
    for t in threading.enumerate():
        tid = t.native_id
        seconds = None if tid is None else cpu_seconds(tid)
        if seconds is not None:
            key = label(t.name)
            out[key] = out.get(key, 0.0) + seconds
    return out


class ThreadCpuCollector(Collector):
    def collect(self) -> Iterator[CounterMetricFamily]:
        if not _TASKS.is_dir():
            return
        family = CounterMetricFamily(
            "jiayuan_thread_cpu_seconds",
            "CPU time (user + system) of this process's live threads, by thread",
            labels=["thread"],
        )
        for name, seconds in sorted(by_label().items()):
            family.add_metric([name], seconds)
        yield family
