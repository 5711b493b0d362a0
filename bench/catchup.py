"""The benchmark's catch-up phase: the service was down while ``n`` readings were queued for it;
how fast does it drain them when it returns, against ``mosquitto_sub`` draining the same backlog
from a persistent session of its own, and how long does a fall published during the drain take
to become an alert (issue 9: urgent events never queue behind telemetry)?

Both backlogs are queued by the same publishes: the C subscriber's session and the service's are
subscribed to telemetry, and every message goes into both queues. The subscriber drains its copy
first, with the service still down, so the two never share the machine.
"""

from __future__ import annotations

import statistics
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.journal_head import JournalHead
from bench.load import FallProbe, client_env, start_device_publisher
from devtools.broker import Broker
from devtools.launch import ServiceProcess
from ingest.topics import TELEMETRY_SUBSCRIPTIONS

SUBSCRIBER = "catchup"
"""The C subscriber's test-only account (``test.catchup``): its persistent session."""


@dataclass
class CatchUp:
    messages: int
    sub_msgs_per_s: float
    service_msgs_per_s: float
    """From the service answering on HTTP (both sessions up) to the last reading committed."""
    service_total_s: float
    """From ``jiayuan run`` started to the last reading committed (start-up included)."""
    fall_ms: list[float]
    falls_sent: int
    falls_in_drain: int
    """Falls published before the drain ended (all of them, unless the drain was quick)."""

    def line(self) -> str:
        f = sorted(self.fall_ms)
        p50 = statistics.median(f) if f else float("nan")
        worst = f[-1] if f else float("nan")
        return (
            f"catchup_msgs_per_s={self.service_msgs_per_s:.0f}"
            f" catchup_sub_msgs_per_s={self.sub_msgs_per_s:.0f}"
            f" catchup_ratio={self.service_msgs_per_s / self.sub_msgs_per_s:.2f}"
            f" catchup_fall_p50_ms={p50:.1f} catchup_fall_max_ms={worst:.1f}"
            f" catchup_falls={len(f)}/{self.falls_sent} during_drain={self.falls_in_drain}"
        )


def _sub(broker: Broker, tls: bool, folder: Path, *extra: str) -> subprocess.Popen[bytes]:
    access = broker.test_access(SUBSCRIBER, tls=tls)
    filters = [a for f in TELEMETRY_SUBSCRIPTIONS for a in ("-t", f)]
    return subprocess.Popen(
        ["mosquitto_sub", "-h", broker.host, "-p", str(broker.port_for(access)), "-V", "5",
         "-i", access.username or SUBSCRIBER, "-c", "-x", "86400", "-q", "1", *filters, *extra],
        stdout=subprocess.DEVNULL,
        env=client_env(access, folder, "mosquitto_sub"),
    )  # fmt: skip


def run(
    broker: Broker,
    svc: ServiceProcess,
    files: list[tuple[str, Path]],
    n: int,
    tls: bool,
    *,
    first_probe: int,
    probes: int = 20,
    interval: float = 0.1,
    settings: dict[str, Any] | None = None,
) -> tuple[CatchUp, ServiceProcess]:
    """Stop ``svc``, queue ``n`` readings from ``files``, drain them with mosquitto_sub, then
    start the service again over the same data and time its drain and the falls. Returns the
    figures and the service that runs now. ``settings``: the service's (``JIAYUAN_*``)."""
    folder = files[0][1].parent
    broker.test_access(SUBSCRIBER)  # made (and the broker reloaded) before anything is timed
    if _sub(broker, tls, folder / "sub", "-E").wait(30) != 0:  # its session, subscribed
        raise RuntimeError("mosquitto_sub could not subscribe")
    svc.stop()  # the broker queues for the service's sessions meanwhile
    pubs = []
    for topic, path in files:
        with path.open("rb") as lines:
            pubs.append(
                start_device_publisher(broker, topic, tls, path.with_suffix(".client"), lines)
            )
    for p in pubs:
        if p.wait(600) != 0:
            raise RuntimeError("mosquitto_pub failed")

    t0 = time.perf_counter()
    if _sub(broker, tls, folder / "sub", "-C", str(n)).wait(600) != 0:
        raise RuntimeError("mosquitto_sub did not receive the backlog")
    sub_rate = n / (time.perf_counter() - t0)

    again = ServiceProcess(
        svc.data_dir, broker, svc.http_port, log=svc.log, tls=tls, **(settings or {})
    )
    url = (settings or {}).get("database_url")
    with JournalHead(svc.data_dir, url) as journal:
        base = journal.top()
        t_spawn = time.perf_counter()
        again.start()
        t_ready = time.perf_counter()
        committed_at_ready = journal.count_after(base)
    t_done: list[float] = []

    def watch() -> None:  # the journal's rows since the stop (the falls too: 20 in 100,000)
        with JournalHead(svc.data_dir, url) as mine:
            mine.wait(base, n)
        t_done.append(time.perf_counter())

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    ready = threading.Event()
    probe = FallProbe(again.url, again.token, broker, ready, tls)
    probe.start()
    if not ready.wait(10):
        raise RuntimeError("the live stream did not answer")
    latencies = probe.run(probes, interval, first=first_probe)
    sent_at = probe.sent_at()
    probe.stop()
    watcher.join(600)
    if not t_done:
        raise RuntimeError("the service did not drain the backlog")
    end = t_done[0]
    in_drain = sum(1 for t in sent_at if t < end)
    return (
        CatchUp(
            messages=n,
            sub_msgs_per_s=sub_rate,
            service_msgs_per_s=(n - committed_at_ready) / (end - t_ready),
            service_total_s=end - t_spawn,
            fall_ms=[x * 1000 for x in latencies],
            falls_sent=probes,
            falls_in_drain=in_drain,
        ),
        again,
    )
