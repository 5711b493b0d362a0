"""Members of an MQTT 5 shared subscription on the real Mosquitto, for the district's
measurements (tests/integration/test_shared_subscriptions.py): QoS 1, manual acknowledgement,
a session expiry of the test's choosing, and a way to die without a DISCONNECT."""

from __future__ import annotations

import threading

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from devtools.broker import Broker

GROUP_FILTER = "$share/district/exp/#"


class Member:
    """One instance's session ``test.<name>`` on ``$share/district/exp/#``.

    ``acking``: acknowledge each message as it arrives (False: keep them unacknowledged, in
    flight). ``got`` lists the payloads received, repeats included; ``session_present`` is the
    CONNACK's flag."""

    def __init__(
        self, broker: Broker, name: str, *, expiry_s: int, acking: bool = True, clean: bool = True
    ) -> None:
        access = broker.test_access(name)
        self.acking = acking
        self.got: list[str] = []
        self.dups = 0
        self.session_present: bool | None = None
        self._lock = threading.Lock()
        self._subscribed = threading.Event()
        c = mqtt.Client(
            callback_api_version=CallbackAPIVersion.VERSION2,
            client_id=f"test.{name}",
            protocol=mqtt.MQTTv5,
            manual_ack=True,
        )
        c.on_connect = self._on_connect
        c.on_subscribe = lambda *_a: self._subscribed.set()
        c.on_message = self._on_message
        access.apply(c)
        props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        props.SessionExpiryInterval = expiry_s
        c.connect(
            broker.host, broker.port_for(access), clean_start=clean, properties=props, keepalive=60
        )
        c.loop_start()
        self.client = c
        if not self._subscribed.wait(30):
            raise TimeoutError(f"{name}: not subscribed within 30 s")

    def _on_connect(
        self, c: mqtt.Client, _u: object, flags: object, rc: object, _p: object
    ) -> None:
        self.session_present = bool(getattr(flags, "session_present", False))
        if self.session_present:
            self._subscribed.set()  # the session kept the subscription
        else:
            c.subscribe(GROUP_FILTER, qos=1)

    def _on_message(self, c: mqtt.Client, _u: object, msg: mqtt.MQTTMessage) -> None:
        with self._lock:
            self.got.append(msg.payload.decode())
            self.dups += bool(msg.dup)
        if self.acking:
            c.ack(msg.mid, msg.qos)

    def received(self) -> list[str]:
        with self._lock:
            return list(self.got)

    def kill(self) -> None:
        """Die as a SIGKILLed instance would: the socket closed, no DISCONNECT, no acks."""
        self.client.loop_stop()
        sock = self.client.socket()
        if sock is not None:
            sock.close()

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()
