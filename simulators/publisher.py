"""Publishing simulated traffic: paho-mqtt 2.x clients, QoS 1, a token bucket, back-pressure.

Thousands of devices cannot each hold their own MQTT connection from one small machine, and
in the field they do not either: wearables reach the broker through their vendor's platform,
smoke detectors through an NB-IoT or LoRa gateway. So the simulator is a gateway: it
publishes on behalf of every device through one client (or ``clients`` of them; each device
always uses the same one, so its messages keep their order). For the same reason there is no
per-device last will; each device's retained ``status`` is published when play starts.

On a broker with accounts the simulator is what it imitates: one connection per gateway account
(``gateways``: each account with the devices its ACL lets it publish for), or one account for
everything (``access``; a test account). Messages for a device no gateway covers go through the
first connection, and the broker refuses them (counted as ``failed``).
"""

from __future__ import annotations

import logging
import os
import threading
import time
import zlib
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from ingest.access import BrokerAccess

log = logging.getLogger(__name__)


class Sink(Protocol):
    """Where played messages go: a :class:`Publisher`, or a list in tests."""

    def publish(self, topic: str, payload: bytes, qos: int = 1, retain: bool = False) -> None: ...


class TokenBucket:
    """At most ``rate`` takes per second on average, bursts up to ``burst``; None: no limit."""

    def __init__(
        self,
        rate: float | None,
        burst: float | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if rate is not None and rate <= 0:
            raise ValueError("rate must be positive")
        self.rate = rate
        self.burst = burst if burst is not None else max(1.0, (rate or 0) / 20)
        self._clock, self._sleep = clock, sleep
        self._tokens = self.burst
        self._last = clock()

    def take(self, n: float = 1.0) -> float:
        """Take ``n`` tokens, sleeping until they are there; returns the seconds slept."""
        if self.rate is None:
            return 0.0
        now = self._clock()
        self._tokens = min(self.burst, self._tokens + (now - self._last) * self.rate)
        self._last = now
        self._tokens -= n
        if self._tokens >= 0:
            return 0.0
        wait = -self._tokens / self.rate
        self._sleep(wait)
        return wait


@dataclass
class Stats:
    started: float
    sent: int = 0
    acked: int = 0
    """Acknowledged by the broker (PUBACK with a success reason)."""
    failed: int = 0
    """Refused by the broker (PUBACK with an error reason)."""
    reconnects: int = 0

    @property
    def pending(self) -> int:
        return self.sent - self.acked - self.failed

    def rate(self, now: float | None = None) -> float:
        """Acknowledged messages per second since the start."""
        elapsed = (now if now is not None else time.monotonic()) - self.started
        return self.acked / elapsed if elapsed > 0 else 0.0


class Publisher:
    """QoS 1 publishing through ``clients`` paho connections with reconnect and stats.

    ``publish`` blocks for the rate limit and while ``max_pending`` messages await their
    PUBACK, so a slow or absent broker holds the simulator back instead of filling memory.
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 1883,
        *,
        clients: int = 1,
        rate: float | None = None,
        client_id: str | None = None,
        max_inflight: int = 100,
        max_pending: int = 1_000,
        access: BrokerAccess | None = None,
        gateways: Sequence[tuple[BrokerAccess, Collection[str]]] = (),
    ) -> None:
        if clients < 1:
            raise ValueError("clients must be at least 1")
        if gateways and (clients != 1 or access is not None):
            raise ValueError("gateways: one connection per gateway account, no clients/access")
        if max_pending >= 65_000:
            raise ValueError("max_pending must stay below the 65,535 MQTT packet ids")
        self.host, self.port = host, port
        self.bucket = TokenBucket(rate)
        self.stats = Stats(time.monotonic())
        self.max_pending = max_pending
        self._lock = threading.Lock()
        self._cond = threading.Condition()
        self._wake_at: int | None = None
        self._connected = [threading.Event() for _ in range(clients)]
        self._ever = [False] * clients
        self._stopping = False
        base = client_id or f"jiayuan-sim-{os.getpid()}"  # two simulators never collide
        accesses = [g[0] for g in gateways] or [access or BrokerAccess()] * clients
        self._route: dict[str, int] | None = None
        """Device id → its gateway's connection."""
        if gateways:
            self._route = {dev: i for i, (_, devs) in enumerate(gateways) for dev in devs}
            self._connected = [threading.Event() for _ in gateways]
            self._ever = [False] * len(gateways)
        self._refused: dict[int, str] = {}
        self._names = [a.describe() for a in accesses]
        self._tls = [a.tls for a in accesses]
        self._clients = [
            self._make(f"{base}-{i}", i, max_inflight, a) for i, a in enumerate(accesses)
        ]

    def _make(
        self, client_id: str, index: int, max_inflight: int, access: BrokerAccess
    ) -> mqtt.Client:
        c = mqtt.Client(
            callback_api_version=CallbackAPIVersion.VERSION2,
            client_id=client_id,
            protocol=mqtt.MQTTv5,
            userdata=index,
        )
        access.apply(c)
        c.max_inflight_messages_set(max_inflight)
        c.max_queued_messages_set(0)  # bounded by max_pending instead
        c.reconnect_delay_set(min_delay=1, max_delay=30)
        c.on_connect = self._on_connect
        c.on_disconnect = self._on_disconnect
        c.on_publish = self._on_publish
        return c

    # paho callbacks: count and hand over, nothing else
    def _on_connect(self, client: mqtt.Client, index: int, flags: Any, rc: Any, props: Any) -> None:
        if rc.is_failure:  # refused: not connected, paho retries
            self._refused[index] = str(rc)
            log.warning("broker %s:%s refused the connection: %s", self.host, self.port, rc)
            return
        if self._ever[index]:
            with self._lock:
                self.stats.reconnects += 1
            log.info("reconnected to %s:%s", self.host, self.port)
        self._ever[index] = True
        self._connected[index].set()

    def _on_disconnect(
        self, client: mqtt.Client, index: int, flags: Any, rc: Any, props: Any
    ) -> None:
        self._connected[index].clear()
        if not self._stopping:
            log.warning("lost the broker %s:%s (%s); reconnecting", self.host, self.port, rc)

    def _on_publish(self, client: mqtt.Client, index: int, mid: int, rc: Any, props: Any) -> None:
        with self._lock:
            if rc.is_failure:
                self.stats.failed += 1
            else:
                self.stats.acked += 1
        wake = self._wake_at
        if wake is not None and self.stats.pending <= wake:
            with self._cond:
                self._cond.notify_all()

    def _wait_pending(self, at_most: int, timeout: float | None = None) -> bool:
        """Block until no more than ``at_most`` messages await a PUBACK (or stop, timeout)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            self._wake_at = at_most
            try:
                while self.stats.pending > at_most and not self._stopping:
                    left = 0.5 if deadline is None else min(0.5, deadline - time.monotonic())
                    if left <= 0:
                        return False
                    self._cond.wait(left)
            finally:
                self._wake_at = None
        return self.stats.pending <= at_most

    @property
    def connected(self) -> bool:
        return all(e.is_set() for e in self._connected)

    def start(self, timeout: float = 10.0) -> Publisher:
        """Connect every client; ConnectionError if the broker does not answer in time."""
        for c in self._clients:
            c.connect_async(self.host, self.port, keepalive=30)
            c.loop_start()
        deadline = time.monotonic() + timeout
        for i, e in enumerate(self._connected):
            if not e.wait(max(0.0, deadline - time.monotonic())):
                self.stop(flush_timeout=0)
                if i in self._refused:
                    raise ConnectionError(
                        f"the MQTT broker at {self.host}:{self.port} refused the connection"
                        f" {self._names[i]}: {self._refused[i]}"
                    )
                hint = " (is it the TLS listener? is the CA the broker's?)" * self._tls[i]
                raise ConnectionError(
                    f"no MQTT broker answered at {self.host}:{self.port} {self._names[i]}{hint}"
                )
        self.stats = Stats(time.monotonic())
        return self

    def publish(self, topic: str, payload: bytes, qos: int = 1, retain: bool = False) -> None:
        """Publish on behalf of the device named in ``topic``; blocks for the rate limit and,
        when ``max_pending`` await their PUBACK, until half of them have it."""
        self.bucket.take()
        if self.stats.pending >= self.max_pending:
            self._wait_pending(self.max_pending // 2)
        with self._lock:
            self.stats.sent += 1
        client = self._clients[0]
        if len(self._clients) > 1:
            parts = topic.split("/")
            key = parts[3] if len(parts) > 3 else topic
            if self._route is not None:
                client = self._clients[self._route.get(key, 0)]
            else:
                client = self._clients[zlib.crc32(key.encode()) % len(self._clients)]
        client.publish(topic, payload, qos=qos, retain=retain)

    def flush(self, timeout: float) -> bool:
        """Wait until every message sent so far is acknowledged; False on timeout."""
        return self._wait_pending(0, timeout)

    def stop(self, flush_timeout: float = 5.0) -> None:
        """Wait up to ``flush_timeout`` for outstanding PUBACKs, then disconnect."""
        if flush_timeout > 0 and self.connected:
            self.flush(flush_timeout)
        self._stopping = True
        with self._cond:
            self._cond.notify_all()
        for c in self._clients:
            c.disconnect()
            c.loop_stop()

    def summary(self) -> str:
        s, now = self.stats, time.monotonic()
        return (
            f"sent {s.sent:,}, acked {s.acked:,}, failed {s.failed:,}, pending {s.pending:,}, "
            f"reconnects {s.reconnects} in {format_elapsed(now - s.started)} "
            f"({format_rate(s.rate(now))} msg/s)"
        )


def format_rate(per_second: float) -> str:
    return f"{per_second:,.0f}" if per_second >= 10 else f"{per_second:.1f}"


def format_elapsed(seconds: float) -> str:
    m, s = divmod(int(seconds), 60)
    h, m = divmod(m, 60)
    return f"{h}:{m:02d}:{s:02d}"
