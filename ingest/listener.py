"""The MQTT listener: two paho-mqtt 2.x clients, each with an MQTT 5 persistent session.

Urgent streams (events — falls, SOS, alarms — and status) have a session of their own, with
its own client id and broker account, so that the broker queues them apart from telemetry: a
backlog of readings queued while the service was down never holds back a fall published
meanwhile. The other session takes telemetry. Each session is a broker account's (the broker
makes the username the client id), hence two accounts (README, "Security: broker access").

Callbacks only hand over: each message is copied into an :class:`Inbound` naming its session
and put on the inbox (:class:`ingest.inbox.Inbox` hands urgent ones out first); decoding and
storing happen in the pipeline. Acknowledgement is manual: the pipeline calls
:meth:`Listener.ack` once a message's batch is committed, and each PUBACK goes back on the
session the message came from, so anything not yet committed when the process dies is
delivered again by the broker.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Iterable
from itertools import groupby
from operator import attrgetter
from typing import Any

import msgspec
import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.subscribeoptions import SubscribeOptions

from ingest.access import BrokerAccess
from ingest.metrics import CONNECTED
from ingest.mqtt_client import Client, install_lean_publish_properties
from ingest.payloads import DeadLetterReason
from ingest.topics import SUBSCRIPTION, TELEMETRY_SUBSCRIPTIONS, URGENT_SUBSCRIPTIONS
from ingest.wire import Publish

log = logging.getLogger(__name__)

TELEMETRY, URGENT = "telemetry", "urgent"
"""The sessions' names, as in :attr:`Inbound.session` and :meth:`Listener.sessions`."""
PUSH, PUSH_URGENT = "push", "push-urgent"
"""Messages of an HTTP push (:mod:`ingest.push`), telemetry and urgent: no broker session,
nothing to acknowledge to a broker; their commit is told to the waiting request instead."""
PUSH_SESSIONS = frozenset({PUSH, PUSH_URGENT})
URGENT_SESSIONS = frozenset({URGENT, PUSH_URGENT})
URGENT_SLOT = "urgent-slot-"
"""Urgent session slots' names begin so (``urgent-slot-0``: jiayuan/slots.py): urgent too."""
SHARE_GROUP = "jiayuan-ingest"
"""The shared subscription's group when telemetry is read by several processes
(jiayuan/ingest_procs.py): each process's session is a member, the broker hands each message
to one of them."""


_SESSION_OF = attrgetter("session")


def shared(filters: Iterable[str], group: str = SHARE_GROUP) -> tuple[str, ...]:
    """``filters`` as members of the shared subscription ``group`` (``$share/<group>/<f>``)."""
    return tuple(f"$share/{group}/{f}" for f in filters)


class Inbound(msgspec.Struct, frozen=True, gc=False):
    """One message as received, before decoding.

    A frozen msgspec Struct rather than a frozen dataclass: one is built per message on the MQTT
    loop thread, in 0.12 µs against 0.95, which took the loop's Python work per message from 1.9
    µs to 0.8 (``python -m bench.receive``); ``gc=False``: it holds nothing that could make a
    reference cycle."""

    topic: str
    payload: bytes
    mid: int
    qos: int
    retain: bool
    received: float
    session: str = TELEMETRY
    """The session it came on, which its PUBACK must go back on (packet ids are per session)."""
    key: str | None = None
    """The source's own message id (an HTTP platform's), made the journal's duplicate key:
    :attr:`ingest.payloads.Reading.key`."""
    refused: tuple[DeadLetterReason, str] | None = None
    """Refused at the edge before decoding (a profile could not map it): (reason, detail).
    Journaled as a dead letter with this reason, like a message :func:`decode` refuses."""

    @property
    def urgent(self) -> bool:
        return self.session in URGENT_SESSIONS or self.session.startswith(URGENT_SLOT)


class Session:
    """One paho client and its persistent session: connect, (re)subscribe, hand messages on."""

    def __init__(
        self,
        name: str,
        host: str,
        port: int,
        client_id: str,
        access: BrokerAccess,
        filters: tuple[str, ...],
        put: Callable[[list[Inbound]], None],
        changed: Callable[[], None],
        *,
        session_expiry_s: int,
        receive_maximum: int,
        keepalive: int,
        retire: tuple[str, ...] = (),
    ) -> None:
        self.name = name
        self.host, self.port = host, port
        self.access = access
        self.filters = filters
        self.retire = retire
        """Filters an older version's session may still hold: unsubscribed when resumed."""
        self.up = threading.Event()
        self.session_present: bool | None = None
        self._put = put
        self._changed = changed
        self._expiry = session_expiry_s
        self._receive_max = receive_maximum
        self._keepalive = keepalive
        self._unreachable_logged = False
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
        c.on_publish_received = self._on_publish
        c.on_subscribe = self._on_subscribe
        self.client = c

    def start(self) -> None:
        props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        props.SessionExpiryInterval = self._expiry
        props.ReceiveMaximum = self._receive_max
        self.client.connect_async(
            self.host, self.port, keepalive=self._keepalive, clean_start=False, properties=props
        )
        self.client.loop_start()

    def stop(self) -> None:
        """Disconnect; the broker keeps the session and queues what arrives meanwhile."""
        self.client.disconnect()
        self.client.loop_stop()
        self._down()

    def end(self) -> None:
        """Disconnect and end the session (MQTT 5: session expiry 0 at DISCONNECT): for a
        session drained for good (jiayuan/ingest_procs.py)."""
        props = Properties(PacketTypes.DISCONNECT)  # type: ignore[no-untyped-call]
        props.SessionExpiryInterval = 0
        self.client.disconnect(properties=props)
        self.client.loop_stop()
        self._down()

    def ack(self, mids: Iterable[int]) -> None:
        self.client.ack_many(mids)

    def _down(self) -> None:
        self.up.clear()
        self._changed()

    # --------------------------------------------------------------- paho callbacks (loop thread)

    def _on_connect(
        self, client: mqtt.Client, _u: Any, flags: mqtt.ConnectFlags, rc: Any, _p: Any
    ) -> None:
        if rc.is_failure:
            # Refused: not connected, whatever paho's loop does next.
            log.error(
                "MQTT broker %s:%s refused the %s session's connection %s: %s",
                self.host,
                self.port,
                self.name,
                self.access.describe(),
                rc,
            )
            return
        self._unreachable_logged = False
        self.session_present = bool(flags.session_present)
        # Subscribe on every connect, also to a resumed session: its subscriptions then are
        # always this version's. Retained messages only for a subscription that is new, so a
        # reconnect does not bring every device's retained status again.
        opts = SubscribeOptions(qos=1, retainHandling=SubscribeOptions.RETAIN_SEND_IF_NEW_SUB)
        if self.filters:
            client.subscribe([(f, opts) for f in self.filters])
        if flags.session_present and self.retire:
            # What was queued under the old filter is still delivered, and journaled.
            client.unsubscribe(list(self.retire))
        if not self.filters:  # a session resumed only to drain it (jiayuan/ingest_procs.py)
            self.up.set()
            self._changed()
        log.info(
            "MQTT %s session connected to %s:%s %s (%s)",
            self.name,
            self.host,
            self.port,
            self.access.describe(),
            "resumed" if flags.session_present else "new",
        )

    def _on_connect_fail(self, _c: mqtt.Client, _u: Any) -> None:
        if not self._unreachable_logged:  # once per outage: paho retries every few seconds
            self._unreachable_logged = True
            log.error(
                "cannot connect the %s session to MQTT broker %s:%s %s (unreachable, or its"
                " certificate fails verification against the CA); retrying",
                self.name,
                self.host,
                self.port,
                self.access.describe(),
            )

    def _on_subscribe(self, _c: mqtt.Client, _u: Any, _mid: int, rcs: list[Any], _p: Any) -> None:
        if any(rc.is_failure for rc in rcs):
            log.error("%s session: subscription to %s refused: %s", self.name, self.filters, rcs)
            return
        self.up.set()
        self._changed()

    def _on_disconnect(self, _c: mqtt.Client, _u: Any, _f: Any, rc: Any, _p: Any) -> None:
        self._down()
        if rc != 0:
            log.warning(
                "MQTT %s session: connection lost (%s); reconnecting with backoff", self.name, rc
            )

    def _on_publish(self, got: list[Publish]) -> None:
        """The PUBLISH packets one pass of the client's fast path read (no properties: nearly
        every one), handed on together."""
        now, name = time.time(), self.name
        self._put(
            [
                Inbound(
                    topic.decode("utf-8", errors="replace"), payload, mid, qos, retain, now, name
                )
                for topic, payload, mid, qos, retain in got
            ]
        )

    def _on_message(self, _c: mqtt.Client, _u: Any, msg: mqtt.MQTTMessage) -> None:
        # Topic bytes are decoded with replacement: a bad topic must become a dead letter,
        # not an exception in paho's loop.
        topic = msg._topic.decode("utf-8", errors="replace")
        self._put(
            [
                Inbound(
                    topic,
                    bytes(msg.payload),
                    msg.mid,
                    msg.qos,
                    bool(msg.retain),
                    time.time(),
                    self.name,
                )
            ]
        )


class Listener:
    """The service's two sessions: ``telemetry`` (``client_id``, ``access``) and ``urgent``
    (``urgent_client_id``, ``urgent_access``), both putting into ``inbox``.

    With accounts, the two must differ: the broker makes the username the client id, and a
    second connection with the same one would take the first one's session over.

    ``urgent_filters`` and ``telemetry_filters``: vendor topics of device profiles
    (:meth:`ingest.profiles.Profiles.filters`), read on that session besides the native tree."""

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
        urgent_client_id: str | None = None,
        urgent_access: BrokerAccess | None = None,
        urgent_receive_maximum: int = 200,
        urgent_filters: tuple[str, ...] = (),
        telemetry_filters: tuple[str, ...] = (),
        telemetry: bool = True,
        urgent: bool = True,
    ) -> None:
        """``telemetry=False``: the urgent session only, telemetry being read by other
        processes (jiayuan/ingest_procs.py). ``urgent=False`` too: no fixed session at all,
        only those of the session slots this instance holds (:meth:`add_session`,
        jiayuan/slots.py)."""
        self.host, self.port = host, port
        self.access = access or BrokerAccess()
        self.urgent_access = urgent_access or BrokerAccess(
            tls=self.access.tls, ca_file=self.access.ca_file
        )
        if self.access.username is not None and (
            self.urgent_access.username in (None, self.access.username)
        ):
            raise ValueError(
                "the urgent session needs a broker account of its own (jiayuan.urgent from"
                " `jiayuan broker credentials`): the broker makes the username the client id,"
                " so one account holds one session"
            )
        urgent_client_id = urgent_client_id or f"{client_id}-urgent"
        if urgent_client_id == client_id:
            raise ValueError("the urgent session needs a client id of its own")
        self.inbox = inbox
        self.connected = threading.Event()
        """Set while both sessions are connected and subscribed."""
        self._lock = threading.Lock()
        install_lean_publish_properties()
        common: dict[str, Any] = {"session_expiry_s": session_expiry_s, "keepalive": keepalive}
        self._common = common
        self._outstanding: dict[str, int] = {}
        """Per session: QoS 1 messages handed on and not yet acknowledged."""
        self._closing: set[str] = set()
        """Sessions being given up: what they receive now is not handed on (nor acknowledged,
        so it stays in the session for its next holder)."""

        def put_each(items: list[Inbound]) -> None:  # a plain queue (tests)
            for m in items:
                inbox.put(m)

        put: Callable[[list[Inbound]], None] = getattr(inbox, "put_many", None) or put_each
        telemetry_all = TELEMETRY_SUBSCRIPTIONS + telemetry_filters
        self._sessions = {
            TELEMETRY: Session(
                TELEMETRY,
                host,
                port,
                client_id,
                self.access,
                telemetry_all,
                put,
                self._changed,
                receive_maximum=receive_maximum,
                # the shared ones: of a time this session was one of several processes'
                retire=(SUBSCRIPTION, *shared(telemetry_all)),
                **common,
            ),
            URGENT: Session(
                URGENT,
                host,
                port,
                urgent_client_id,
                self.urgent_access,
                URGENT_SUBSCRIPTIONS + urgent_filters,
                put,
                self._changed,
                receive_maximum=urgent_receive_maximum,
                **common,
            ),
        }
        if not telemetry:
            del self._sessions[TELEMETRY]
        if not urgent:
            del self._sessions[URGENT]
        self._put = put

    # ------------------------------------------------------------------ session slots

    def add_session(
        self,
        name: str,
        client_id: str,
        access: BrokerAccess,
        filters: tuple[str, ...],
        *,
        receive_maximum: int,
        retire: tuple[str, ...] = (),
    ) -> None:
        """Connect one more session (a session slot's, jiayuan/slots.py), resuming it;
        ``retire``: subscriptions an earlier version of this session may hold, dropped."""
        with self._lock:
            if name in self._sessions:
                return
            self._closing.discard(name)
            self._outstanding[name] = 0

        def put(items: list[Inbound]) -> None:
            with self._lock:
                if name in self._closing:
                    return
                self._outstanding[name] += sum(1 for m in items if m.qos == 1)
            self._put(items)

        session = Session(
            name,
            self.host,
            self.port,
            client_id,
            access,
            filters,
            put,
            self._changed,
            receive_maximum=receive_maximum,
            retire=tuple(f for f in retire if f not in filters),
            **self._common,
        )
        with self._lock:
            self._sessions[name] = session
        session.start()
        self._changed()

    def remove_session(self, name: str, drain_s: float = 10.0) -> None:
        """Give session ``name`` up: hand nothing more on, wait (``drain_s`` at most) until
        what it handed on is committed and acknowledged, then disconnect, the broker keeping
        the session (and whatever is unacknowledged) for the next holder."""
        with self._lock:
            session = self._sessions.get(name)
            self._closing.add(name)
        if session is None:
            return
        deadline = time.monotonic() + drain_s
        while self._outstanding.get(name, 0) > 0 and time.monotonic() < deadline:
            time.sleep(0.02)
        session.stop()
        with self._lock:
            self._sessions.pop(name, None)
            self._outstanding.pop(name, None)
        self._changed()

    def start(self) -> None:
        if self.access.username is None:
            log.warning(
                "connecting to the MQTT broker without an account: a broker with the"
                " project's mosquitto.conf refuses anonymous clients"
            )
        for s in self._sessions.values():
            s.start()
        self._changed()  # none at all (session slots not yet held): connected, vacuously

    def stop(self) -> None:
        """Disconnect both; the broker keeps the sessions and queues what arrives meanwhile."""
        for s in self._sessions.values():
            s.stop()

    def ack(self, messages: Iterable[Inbound]) -> None:
        """PUBACK each QoS 1 message on its own session (QoS 0 needs none; devices are told to
        use QoS 1)."""
        by_session: dict[str, list[int]] = {}
        for name, run in groupby(messages, _SESSION_OF):  # a batch: a run or two
            mids = [m.mid for m in run if m.qos == 1]
            if mids and name in self._sessions:  # not one given up meanwhile
                by_session.setdefault(name, []).extend(mids)
        for name, mids in by_session.items():
            with self._lock:
                session = self._sessions.get(name)
                if name in self._outstanding:
                    self._outstanding[name] -= len(mids)
            if session is not None:
                session.ack(mids)

    def sessions(self) -> dict[str, bool]:
        """Each session's state: connected and subscribed, or not."""
        with self._lock:
            return {name: s.up.is_set() for name, s in self._sessions.items()}

    @property
    def session_present(self) -> bool | None:
        """Whether the broker resumed both sessions at their last connect (None: not yet)."""
        present = [s.session_present for s in self._sessions.values()]
        return None if None in present else all(present)

    def _changed(self) -> None:
        with self._lock:
            up = all(s.up.is_set() for s in self._sessions.values())
            if up:
                self.connected.set()
            else:
                self.connected.clear()
            CONNECTED.set(1 if up else 0)
