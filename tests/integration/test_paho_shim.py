"""The paho shim (``ingest.mqtt_client``) is in effect on the installed paho, not silently off.

Both halves reach into paho internals: the buffered reads override ``Client._sock_recv``, the
lean properties replace ``paho.mqtt._packet.Properties`` (paho 2.2's packet decoder). A paho
that renamed either would still pass every other test, only slower; these fail instead."""

from __future__ import annotations

import importlib
import socket
import threading
from collections.abc import Iterator
from importlib.metadata import version

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from devtools.broker import Broker
from ingest.memtls import MemoryTLS
from ingest.mqtt_client import Client, _LeanPublishProperties, install_lean_publish_properties
from tests.mqtt import Publisher, wait_for

pytestmark = pytest.mark.network

TOPIC = "community/y/wearable/wr-1/telemetry"
N = 200


def test_the_lean_properties_are_installed_on_this_paho() -> None:
    assert install_lean_publish_properties(), f"shim not active on paho {version('paho-mqtt')}"
    assert importlib.import_module("paho.mqtt._packet").Properties is _LeanPublishProperties
    assert install_lean_publish_properties()  # idempotent
    # the stock class is untouched: what the service builds to send is a full Properties
    p = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
    assert type(p) is Properties


class Counting(Client):
    """Counts what paho asks of ``_sock_recv`` (``asked``) and the socket reads made for it
    (``raw``, counted on the stock method the shim calls through ``super()``)."""

    asked = 0
    raw = 0

    def _sock_recv(self, bufsize: int) -> bytes:
        self.asked += 1
        return super()._sock_recv(bufsize)


@pytest.fixture
def counting_reads(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    stock = mqtt.Client._sock_recv

    def raw(self: mqtt.Client, bufsize: int) -> bytes:
        if isinstance(self, Counting):
            self.raw += 1
        return stock(self, bufsize)

    monkeypatch.setattr(mqtt.Client, "_sock_recv", raw)
    yield


@pytest.mark.parametrize("tls", [False, True], ids=["tcp", "tls"])
def test_messages_from_the_broker_go_through_both_fast_paths(
    broker: Broker, counting_reads: None, tls: bool
) -> None:
    assert install_lean_publish_properties()
    access = broker.test_access("shim-sub", tls=tls)
    got: list[mqtt.MQTTMessage] = []
    subscribed = threading.Event()
    c = Counting(
        callback_api_version=CallbackAPIVersion.VERSION2,
        client_id="test.shim-sub",
        protocol=mqtt.MQTTv5,
    )
    c.on_message = lambda _c, _u, m: got.append(m)
    c.on_subscribe = lambda *_: subscribed.set()
    access.apply(c)
    c.connect(broker.host, broker.port_for(access))
    c.loop_start()
    pub = Publisher(broker, "shim-pub")
    try:
        c.subscribe(TOPIC, qos=1)
        assert subscribed.wait(10), "no SUBACK"
        props = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
        props.UserProperty = ("trace", "t-1")
        pub.client.publish(TOPIC, b"with-properties", qos=1, properties=props)
        for i in range(N):
            pub.publish(TOPIC, f"{i}".encode())
        pub.wait_acked()
        wait_for(lambda: len(got) == N + 1)
        sock = c.socket()
    finally:
        pub.close()
        c.disconnect()
        c.loop_stop()
    assert [m.payload for m in got] == [b"with-properties"] + [f"{i}".encode() for i in range(N)]
    # over TLS, the records are read from memory buffers (ingest.memtls), not an SSLSocket
    assert isinstance(sock, MemoryTLS) if tls else isinstance(sock, socket.socket)
    # a message that carries properties is parsed in full, the stock way
    assert got[0].properties is not None
    assert got[0].properties.UserProperty == [("trace", "t-1")]  # type: ignore[attr-defined]
    # those that carry none took the lean path: one shared table, no parse
    assert all(type(m.properties) is _LeanPublishProperties for m in got)
    shared = _LeanPublishProperties._shared
    assert shared is not None
    assert all(m.properties.names is shared.names for m in got[1:])  # type: ignore[union-attr]
    assert not any(hasattr(m.properties, "UserProperty") for m in got[1:])  # nothing leaks
    # paho asked the shim for every packet's header byte, length and body; fewer socket reads
    # served them (the stock client makes one read per ask)
    assert c.asked >= 3 * (N + 1)
    assert 0 < c.raw < c.asked


@pytest.mark.parametrize("tls", [False, True], ids=["tcp", "tls"])
def test_publishes_without_properties_are_read_from_the_buffer_not_by_paho(
    broker: Broker, tls: bool
) -> None:
    """``Client.on_publish_received``: what paho would have handed to ``on_message`` (topic,
    payload, message id, QoS, retain), read straight from the buffer; a message that carries
    properties, or whose end was not yet received, still goes through paho."""
    access = broker.test_access("fast-sub", tls=tls)
    got: list[tuple[str, bytes, bytes | bytearray, int, int, bool]] = []
    subscribed = threading.Event()
    c = Client(
        callback_api_version=CallbackAPIVersion.VERSION2,
        client_id="test.fast-sub",
        protocol=mqtt.MQTTv5,
        manual_ack=True,
    )
    c.on_message = lambda _c, _u, m: got.append(
        ("paho", m._topic, m.payload, m.mid, m.qos, bool(m.retain))
    )
    c.on_publish_received = lambda ms: got.extend(("fast", *m) for m in ms)
    c.on_subscribe = lambda *_: subscribed.set()
    access.apply(c)
    c.connect(broker.host, broker.port_for(access))
    c.loop_start()
    pub = Publisher(broker, "fast-pub")
    q0 = "community/y/wearable/q0/telemetry"
    try:
        c.subscribe([(TOPIC, 1), ("community/y/+/q0/telemetry", 0)])
        assert subscribed.wait(10), "no SUBACK"
        props = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
        props.UserProperty = ("trace", "t-1")
        pub.client.publish(TOPIC, b"with-properties", qos=1, properties=props)
        for i in range(N):
            pub.publish(TOPIC, f"{i}".encode() * (i % 7 * 50))  # some past 127 bytes, one empty
        pub.client.publish(q0, b"qos0", qos=0)
        pub.wait_acked()
        wait_for(lambda: len(got) == N + 2)
        c.ack_many(m[3] for m in got if m[4] == 1)
    finally:
        pub.close()
        c.disconnect()
        c.loop_stop()
    assert got[0][:3] == ("paho", TOPIC.encode(), b"with-properties")
    assert [m[1:3] for m in got[1:]] == [
        *((TOPIC.encode(), f"{i}".encode() * (i % 7 * 50)) for i in range(N)),
        (q0.encode(), b"qos0"),
    ]
    assert [m[4:] for m in got] == [(1, False)] * (N + 1) + [(0, False)]
    mids = [m[3] for m in got[: N + 1]]
    assert min(mids) > 0 and len(set(mids)) == N + 1 and got[-1][3] == 0
    # nearly all from the buffer: paho reads those whose end had not arrived with the rest
    assert c.received_fast == sum(m[0] == "fast" for m in got) >= N // 2
