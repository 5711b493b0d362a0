"""Test helpers that talk MQTT to the real broker: a publisher that waits for every PUBACK."""

from __future__ import annotations

import json
import subprocess
import threading
import time
from collections.abc import Iterable, Iterator

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.reasoncodes import ReasonCode

from bench.load import client_env
from devtools.broker import Broker
from devtools.launch import ServiceProcess
from ingest.access import BrokerAccess


class Publisher:
    """A device-side client (QoS 1) that can wait until the broker has acknowledged all.

    It connects with ``access``, by default the test-only account ``test.<client_id>`` that
    may publish on any topic (the broker makes the client id the username, so two publishers
    need two accounts). ``refused`` counts PUBACKs that said no (not authorized)."""

    def __init__(
        self,
        broker: Broker,
        client_id: str = "test-publisher",
        access: BrokerAccess | None = None,
    ) -> None:
        self._acked = 0
        self._sent = 0
        self.refused = 0
        self._cond = threading.Condition()
        access = access or broker.test_access(client_id)
        c = mqtt.Client(
            callback_api_version=CallbackAPIVersion.VERSION2,
            client_id=client_id,
            protocol=mqtt.MQTTv5,
        )
        c.max_inflight_messages_set(1000)
        c.max_queued_messages_set(0)
        c.on_publish = self._on_publish
        access.apply(c)
        c.connect(broker.host, broker.port_for(access))
        c.loop_start()
        self.client = c

    def _on_publish(self, _c: object, _u: object, _mid: int, rc: ReasonCode, _p: object) -> None:
        with self._cond:
            self._acked += 1
            self.refused += bool(rc.is_failure)
            self._cond.notify_all()

    def publish(self, topic: str, payload: bytes | str, qos: int = 1, retain: bool = False) -> None:
        self.client.publish(topic, payload, qos=qos, retain=retain)
        self._sent += 1

    def publish_all(self, items: Iterable[tuple[str, bytes | str]], qos: int = 1) -> int:
        n = 0
        for topic, payload in items:
            self.publish(topic, payload, qos=qos)
            n += 1
        return n

    def wait_acked(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        with self._cond:
            while self._acked < self._sent:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"broker acknowledged {self._acked} of {self._sent}")
                self._cond.wait(left)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def wait_for(predicate: object, timeout: float = 30.0, interval: float = 0.05) -> None:
    """Poll until ``predicate()`` is truthy; fail with what it last returned or raised (an
    exception, such as a 404 for a device not written yet, counts as "not yet")."""
    assert callable(predicate)
    deadline = time.monotonic() + timeout
    last: object = None
    while time.monotonic() < deadline:
        try:
            last = predicate()
        except Exception as e:  # reported below if it persists
            last = e
        else:
            if last:
                return
        time.sleep(interval)
    raise AssertionError(f"condition not met within {timeout}s (last value {last!r})")


def all_ok(*services: ServiceProcess) -> bool:
    """For :func:`wait_for`: True when every service's /healthz says ok; otherwise raises with
    their problems, so a wait that runs out says what was still wrong."""
    problems = {s.data_dir.name: s.health()["problems"] for s in services}
    if any(problems.values()):
        raise AssertionError(f"not healthy: {problems}")
    return True


def publish_fast(broker: Broker, topic: str, payloads: Iterable[str], account: str) -> None:
    """Publish one message per payload on ``topic`` with Mosquitto's own C client (QoS 1, up
    to 1,000 in flight), as the test-only account ``test.<account>``; returns once the broker
    has acknowledged them all. Tens of thousands a second, where paho manages a few thousand."""
    access = broker.test_access(account)
    folder = broker.data_dir / f"pub-{account}"
    lines = "".join(p.replace("\n", " ") + "\n" for p in payloads).encode()
    subprocess.run(
        ["mosquitto_pub", "-h", broker.host, "-p", str(broker.port_for(access)),
         "-q", "1", "-M", "1000", "-l", "-t", topic],
        input=lines,
        env=client_env(access, folder, "mosquitto_pub"),
        check=True,
        timeout=300,
    )  # fmt: skip


def wearables_and_falls(
    prefix: str, wearables: int, rounds: int, *, falls: bool = True
) -> Iterator[tuple[str, str]]:
    """(topic, payload) for :meth:`Publisher.publish_all`: ``rounds`` rounds of one message from
    each wearable ``<prefix>0`` … of community y, telemetry but for one fall each (device n's in
    round ``n % rounds``: the falls spread through the stream) unless not ``falls``."""
    for r in range(rounds):
        for dev in range(wearables):
            topic = f"community/y/wearable/{prefix}{dev}"
            if falls and r == dev % rounds:
                yield f"{topic}/event", json.dumps({"seq": r, "event": "fall"})
            else:
                body = {"seq": r, "heart_rate": 72, "steps": r, "worn": True}
                yield f"{topic}/telemetry", json.dumps(body)
