"""The MQTT listener: a paho-mqtt 2.x client with an MQTT 5 persistent session.

Callbacks only hand over: each message is copied into an :class:`Inbound` and put on a queue;
decoding and storing happen in the pipeline. Acknowledgement is manual: the pipeline calls
:meth:`Listener.ack` once a message's batch is committed, so anything not yet committed when
the process dies is delivered again by the broker.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from ingest.access import BrokerAccess
from ingest.metrics import CONNECTED
from ingest.mqtt_client import Client, install_lean_publish_properties
from ingest.topics import SUBSCRIPTION

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Inbound:
    topic: str
    payload: bytes
    mid: int
    qos: int
    retain: bool
    received: float


class Listener:
    def __init__(
        self,
        host: str,
        port: int,
        client_id: str,
        inbox: queue.Queue[Inbound],
        *,
        session_expiry_s: int = 86_400,
        receive_maximum: int = 2_000,
        keepalive: int = 30,
        access: BrokerAccess | None = None,
    ) -> None:
        self.host, self.port = host, port
        self.access = access or BrokerAccess()
        self.inbox = inbox
        self.connected = threading.Event()
        self.session_present: bool | None = None
        self._expiry = session_expiry_s
        self._receive_max = receive_maximum
        self._keepalive = keepalive
        self._unreachable_logged = False
        install_lean_publish_properties()
        c = Client(
            callback_api_version=CallbackAPIVersion.VERSION2,
            client_id=client_id,
            protocol=mqtt.MQTTv5,
            manual_ack=True,
        )
        self.access.apply(c)  # account and TLS (verified against the installation's CA)
        c.reconnect_delay_set(min_delay=1, max_delay=30)
        c.max_inflight_messages_set(receive_maximum)
        c.on_connect = self._on_connect
        c.on_connect_fail = self._on_connect_fail
        c.on_disconnect = self._on_disconnect
        c.on_message = self._on_message
        c.on_subscribe = self._on_subscribe
        self._client = c

    def start(self) -> None:
        if self.access.username is None:
            log.warning(
                "connecting to the MQTT broker without an account: a broker with the"
                " project's mosquitto.conf refuses anonymous clients"
            )
        props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        props.SessionExpiryInterval = self._expiry
        props.ReceiveMaximum = self._receive_max
        self._client.connect_async(
            self.host, self.port, keepalive=self._keepalive, clean_start=False, properties=props
        )
        self._client.loop_start()

    def stop(self) -> None:
        """Disconnect; the broker keeps the session and queues what arrives meanwhile."""
        self._client.disconnect()
        self._client.loop_stop()
        self.connected.clear()
        CONNECTED.set(0)

    def ack(self, messages: Iterable[Inbound]) -> None:
        """PUBACK each QoS 1 message (QoS 0 needs none; devices are told to use QoS 1)."""
        self._client.ack_many(m.mid for m in messages if m.qos == 1)

    # --------------------------------------------------------------- paho callbacks (loop thread)

    def _on_connect(
        self, client: mqtt.Client, _u: Any, flags: mqtt.ConnectFlags, rc: Any, _p: Any
    ) -> None:
        if rc.is_failure:
            # Refused: not connected, whatever paho's loop does next.
            log.error(
                "MQTT broker %s:%s refused the connection %s: %s",
                self.host,
                self.port,
                self.access.describe(),
                rc,
            )
            return
        self._unreachable_logged = False
        self.session_present = bool(flags.session_present)
        if not flags.session_present:
            client.subscribe(SUBSCRIPTION, qos=1)
        else:
            self._up()
        log.info(
            "MQTT connected to %s:%s %s (session %s)",
            self.host,
            self.port,
            self.access.describe(),
            "resumed" if flags.session_present else "new",
        )

    def _on_connect_fail(self, _c: mqtt.Client, _u: Any) -> None:
        if not self._unreachable_logged:  # once per outage: paho retries every few seconds
            self._unreachable_logged = True
            log.error(
                "cannot connect to MQTT broker %s:%s %s (unreachable, or its certificate fails"
                " verification against the CA); retrying",
                self.host,
                self.port,
                self.access.describe(),
            )

    def _on_subscribe(self, _c: mqtt.Client, _u: Any, _mid: int, rcs: list[Any], _p: Any) -> None:
        if any(rc.is_failure for rc in rcs):
            log.error("subscription to %s refused: %s", SUBSCRIPTION, rcs)
            return
        self._up()

    def _up(self) -> None:
        self.connected.set()
        CONNECTED.set(1)

    def _on_disconnect(self, _c: mqtt.Client, _u: Any, _f: Any, rc: Any, _p: Any) -> None:
        self.connected.clear()
        CONNECTED.set(0)
        if rc != 0:
            log.warning("MQTT connection lost (%s); reconnecting with backoff", rc)

    def _on_message(self, _c: mqtt.Client, _u: Any, msg: mqtt.MQTTMessage) -> None:
        # Topic bytes are decoded with replacement: a bad topic must become a dead letter,
        # not an exception in paho's loop.
        topic = msg._topic.decode("utf-8", errors="replace")
        self.inbox.put(
            Inbound(topic, bytes(msg.payload), msg.mid, msg.qos, bool(msg.retain), time.time())
        )
