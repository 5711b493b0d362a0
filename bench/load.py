"""Load for the benchmark: message files for mosquitto_pub, a paced background publisher, and
the fall probe that times publish → alert on the live stream.

Every client has an account, as in the field: each mosquitto_pub publishes as one device with
its own, the fall probe through a gateway account; :func:`bench_registry` lists them all.
Mosquitto's C clients take the account (and the CA) from an options file in their own
``$XDG_CONFIG_HOME``, not from the command line, where ``ps`` would show the password."""

from __future__ import annotations

import json
import os
import random
import subprocess
import threading
import time
from collections.abc import Iterable
from pathlib import Path
from typing import IO

import httpx
import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from devtools.broker import Broker
from ingest.access import BrokerAccess
from ingest.topics import parse_topic
from registry import Device, Registry, write_registry

BACKGROUND_DEVICES = 8
PROBE_GATEWAY = "gateway.PROBE"


def background_topic(d: int) -> str:
    return f"community/y/{'wearable' if d % 2 else 'smoke'}/bg-{d}/telemetry"


def probe_device(i: int) -> str:
    return f"probe-{i}"


def bench_registry(topics: Iterable[str], probes: int) -> Registry:
    """Devices for the message files' topics, the background load, and the fall probes (all
    in compound PROBE, so that its gateway account publishes for them)."""
    devices = [
        Device(device_id=t.device_id, kind=t.kind, compound="BENCH")
        for t in map(parse_topic, topics)
    ]
    devices += [
        Device(device_id=t.device_id, kind=t.kind, compound="BENCH")
        for t in (parse_topic(background_topic(d)) for d in range(BACKGROUND_DEVICES))
    ]
    devices += [
        Device(device_id=probe_device(i), kind="wearable", compound="PROBE") for i in range(probes)
    ]
    return Registry("y", devices=devices)


def service_registry(registry: Registry, folder: Path) -> Path:
    """``registry`` written into ``folder`` for the service (``JIAYUAN_REGISTRY``), which then
    knows the devices the broker lets in, as in production, where the broker's accounts follow
    the service's registry (jiayuan/broker/live.py). Until 2026-12-05 ``make bench`` and
    ``bench.fall_path`` ran the service with an empty registry: every device unregistered."""
    write_registry(registry, folder)
    return folder


def client_env(access: BrokerAccess, folder: Path, *tools: str) -> dict[str, str]:
    """The environment for Mosquitto's C clients (``mosquitto_pub``, ``mosquitto_sub``) to
    connect with ``access``: an options file (0600) per tool in ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    lines = [f"-u {access.username}", f"-P {access.password}"]
    if access.tls and access.ca_file is not None:
        lines.append(f"--cafile {access.ca_file}")
    for tool in tools:
        fd = os.open(folder / tool, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write("\n".join(lines) + "\n")
    return dict(os.environ, XDG_CONFIG_HOME=str(folder))


def write_message_files(
    folder: Path, n: int, publishers: int, device_prefix: str
) -> list[tuple[str, Path]]:
    """``publishers`` files of wearable telemetry, one device per file (mosquitto_pub -l sends
    each line to one topic), with increasing ``seq`` and ``ts`` as real devices send."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = random.Random(7)
    now_ms = int(time.time() * 1000)
    out = []
    per = n // publishers
    for p in range(publishers):
        path = folder / f"pub{p}.txt"
        lines = (
            json.dumps(
                {
                    "seq": i,
                    "ts": now_ms - (per - i),
                    "heart_rate": rng.randint(60, 95),
                    "spo2": rng.randint(94, 99),
                    "battery": 80,
                    "worn": True,
                    "steps": i,
                }
            )
            for i in range(per)
        )
        path.write_text("\n".join(lines) + "\n")
        out.append((f"community/y/wearable/{device_prefix}-w{p}/telemetry", path))
    return out


def _client(broker: Broker, client_id: str, access: BrokerAccess) -> mqtt.Client:
    c = mqtt.Client(
        callback_api_version=CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5
    )
    c.max_inflight_messages_set(1000)
    access.apply(c)
    c.connect(broker.host, broker.port_for(access))
    c.loop_start()
    return c


def start_device_publisher(
    broker: Broker, topic: str, tls: bool, scratch: Path, stdin: IO[bytes] | int
) -> subprocess.Popen[bytes]:
    """``mosquitto_pub -l`` as the device of ``topic``, with its own account: one message per
    line of its standard input, QoS 1, up to 1,000 in flight."""
    access = broker.device_access(parse_topic(topic).device_id, tls=tls)
    return subprocess.Popen(
        [
            "mosquitto_pub",
            "-h",
            broker.host,
            "-p",
            str(broker.port_for(access)),
            "-q",
            "1",
            "-M",
            "1000",
            "-l",
            "-t",
            topic,
        ],
        stdin=stdin,
        env=client_env(access, scratch, "mosquitto_pub"),
    )


class BackgroundLoad:
    """Wearable and smoke telemetry at a steady rate (QoS 1), from mosquitto_pub processes fed
    line by line at the pace, so that the load costs the machine what real devices would cost
    the broker, not what a Python publisher costs."""

    def __init__(self, broker: Broker, rate: int, folder: Path, tls: bool = True) -> None:
        self.rate = rate
        self._procs = []
        for d in range(BACKGROUND_DEVICES):
            topic = background_topic(d)
            self._procs.append(
                start_device_publisher(broker, topic, tls, folder / f"bg-{d}", subprocess.PIPE)
            )
        self._stop = threading.Event()
        self._sent = 0
        self._elapsed = 0.0
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _run(self) -> None:
        seq = 0
        t0 = time.perf_counter()
        n = len(self._procs)
        while not self._stop.is_set():
            due = int((time.perf_counter() - t0) * self.rate)
            chunks: list[list[bytes]] = [[] for _ in range(n)]
            while self._sent < due:
                d = self._sent % n
                seq += 1
                body = (
                    {"seq": seq, "heart_rate": 70 + d, "spo2": 97, "worn": True}
                    if d % 2
                    else {"seq": seq, "obscuration_pct_m": 0.02, "temperature_c": 21.5}
                )
                chunks[d].append(json.dumps(body).encode() + b"\n")
                self._sent += 1
            for proc, lines in zip(self._procs, chunks, strict=True):
                if lines and proc.stdin is not None:
                    proc.stdin.write(b"".join(lines))
                    proc.stdin.flush()
            time.sleep(0.005)
        self._elapsed = time.perf_counter() - t0

    def stop(self) -> float:
        self._stop.set()
        self._thread.join()
        for proc in self._procs:
            if proc.stdin is not None:
                proc.stdin.close()
            proc.wait(timeout=30)
        return self._sent / self._elapsed if self._elapsed else 0.0


class FallProbe:
    """Publishes falls from fresh wearables and times each to its alert on ``/api/stream``."""

    def __init__(
        self, url: str, token: str, broker: Broker, ready: threading.Event, tls: bool = True
    ) -> None:
        self.url = url
        self.token = token
        self.ready = ready
        self._client = _client(broker, "bench-probe", broker.access(PROBE_GATEWAY, tls=tls))
        self._sent: dict[str, float] = {}
        self._latency: dict[str, float] = {}
        self._unregistered: set[str] = set()
        self._lock = threading.Lock()
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._listen, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _listen(self) -> None:
        auth = {"Authorization": f"Bearer {self.token}"}
        with httpx.stream("GET", self.url + "/api/stream", headers=auth, timeout=600) as r:
            self.ready.set()
            for line in r.iter_lines():
                if self._done.is_set():
                    return
                if not line.startswith("data:"):
                    continue
                now = time.perf_counter()
                event = json.loads(line[5:])
                if event.get("action") != "raised":
                    continue
                dev = event["alert"]["device_id"]
                unknown = event["alert"].get("labels", {}).get("registered") == "false"
                with self._lock:
                    if dev in self._sent and dev not in self._latency:
                        self._latency[dev] = now - self._sent[dev]
                        if unknown:
                            self._unregistered.add(dev)

    def run(self, probes: int, interval: float, first: int = 0) -> list[float]:
        """Publish ``probes`` falls (devices ``first``…), one every ``interval`` seconds; the
        latencies of those whose alert arrived within 10 s of the last."""
        for i in range(first, first + probes):
            dev = probe_device(i)
            body = json.dumps({"event": "fall", "seq": 1, "ts": int(time.time() * 1000)})
            with self._lock:
                self._sent[dev] = time.perf_counter()
            self._client.publish(f"community/y/wearable/{dev}/event", body, qos=1)
            time.sleep(interval)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with self._lock:
                if len(self._latency) >= len(self._sent):
                    break
            time.sleep(0.05)
        with self._lock:
            return list(self._latency.values())

    def unregistered(self) -> set[str]:
        """The devices whose fall's alert said the service does not know them (its label
        ``registered: "false"``): none, when the service runs with the bench's registry."""
        with self._lock:
            return set(self._unregistered)

    def sent_by_device(self) -> dict[str, float]:
        """When each probe device's fall was published (``time.perf_counter()``)."""
        with self._lock:
            return dict(self._sent)

    def latency_by_device(self) -> dict[str, float]:
        """Publish → alert on the stream, seconds, of each fall whose alert arrived."""
        with self._lock:
            return dict(self._latency)

    def sent_at(self) -> list[float]:
        """When each fall was published (``time.perf_counter()``)."""
        with self._lock:
            return list(self._sent.values())

    def stop(self) -> None:
        self._done.set()
        self._client.disconnect()
        self._client.loop_stop()
