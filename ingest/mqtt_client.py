"""paho-mqtt's client, fitted for a high message rate on the receiving side.

Measured here with 100,000 QoS 1 messages (``make bench``), the stock client spends most of its
time in two places, neither of which changes what it receives:

- it reads each packet with several ``recv`` calls (1 byte of header at a time) and handles one
  packet per ``select``; :class:`Client` reads the socket 64 KiB at a time (over TLS, every
  record already received, up to 64 KiB) and handles every complete packet in that buffer;
- for MQTT 5 it builds a full ``Properties`` object per PUBLISH (a dict of 27 names, then a
  ``clear()`` that probes all of them), even when the message carries no properties, as device
  messages almost never do. :func:`install_lean_publish_properties` makes that object share its
  tables and skip the parse when the property length is zero; messages with properties are parsed
  exactly as before.

With :attr:`Client.on_publish_received` set (the service's sessions), a QoS 0 or 1 PUBLISH
without properties — nearly every device message — is not read by paho at all: the packets
already in the buffer are parsed in one pass (:func:`ingest.wire.publishes`, compiled with
mypyc: fixed header, topic, message id, an empty property length, payload) and handed over as
plain values, skipping paho's per-packet reads, its ``MQTTMessage``, its debug-log formatting
and its per-message walk of topic filters. Anything else (CONNACK, SUBACK, PINGRESP, a PUBLISH
with properties or of QoS 2, a packet not yet complete, a malformed one) is left in the buffer
for paho's own reader, which keeps the connection, session, keepalive and TLS.

Over TLS the connection is :class:`ingest.memtls.MemoryTLS` rather than paho's ``SSLSocket``:
the same context and checks, the socket read once for the many records Mosquitto sends (one a
message) instead of twice a record. With it and an :class:`ingest.listener.Inbound` that costs
a tenth of what it did, the MQTT loop threads' CPU per message went from 5.5 µs to 2.5
(``python -m bench --no-sink --no-stores``, per-stage "receive", 2026-12-04, shared machine).

All of it touches paho internals (``Client._sock_recv``, ``_packet_read``, ``_in_packet``,
``_in_callback_mutex``, ``_last_bytes_received``, ``_ssl_wrap_socket``, ``_ssl_context``,
``_connect_timeout``, and ``paho.mqtt._packet.Properties``, which
paho 2.2 introduced: 2.1 decoded PUBLISH inside ``client.py``), so ``pyproject.toml`` pins
``paho-mqtt`` to 2.2.x. ``tests/integration/test_paho_shim.py`` fails when any part is not in
effect against the real broker; :func:`install_lean_publish_properties` leaves paho alone (and
says so in a warning) when its internals are not there.
"""

from __future__ import annotations

import logging
import socket
import ssl
import struct
from collections.abc import Callable, Iterable
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import MQTTErrorCode
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from ingest.memtls import MemoryTLS
from ingest.wire import Publish, publishes

log = logging.getLogger(__name__)

_READ_SIZE = 65_536


_PUBACK = 0x40
_PUBACK_WORD = 0x4002_0000
"""A PUBACK (type 0x40, remaining length 2) of message id 0, as a big-endian 32-bit word."""


Received = Callable[[list[Publish]], None]


class Client(mqtt.Client):
    """``paho.mqtt.client.Client`` with buffered socket reads and batched acknowledgements."""

    _rbuf: bytes = b""
    _rpos: int = 0
    _rsock: Any = None

    on_publish_received: Received | None = None
    """When set, QoS 0 and 1 PUBLISH packets without properties are read from the buffer here
    and handed to it, those of one pass over the buffer in one list, not to ``on_message``
    (``message_callback_add`` filters are not consulted for them); everything else goes
    through paho as before."""
    received_fast = 0
    """PUBLISH packets handed to :attr:`on_publish_received` (for the test that fails when
    this path is not taken)."""

    def _refill(self) -> bool:
        """Read the socket into the buffer once it is used up; False when the connection is
        closed. Raises BlockingIOError when nothing is there."""
        if self._rsock is not self._sock:  # a new connection: forget the old one's bytes
            self._rsock, self._rbuf, self._rpos = self._sock, b"", 0
        if self._rpos >= len(self._rbuf):
            self._rbuf = super()._sock_recv(_READ_SIZE)  # raises BlockingIOError when empty
            self._rpos = 0
            if not self._rbuf:
                return False  # connection closed: paho handles the empty read
            if isinstance(self._sock, ssl.SSLSocket):
                self._rbuf = self._more_records(self._rbuf)
        return True

    def _sock_recv(self, bufsize: int) -> bytes:
        if not self._refill():
            return b""
        end = self._rpos + bufsize
        out = self._rbuf[self._rpos : end]
        self._rpos = min(end, len(self._rbuf))
        return out

    def _packet_read(self) -> MQTTErrorCode:
        received = self.on_publish_received
        if (
            received is not None
            and self._in_packet["command"] == 0  # no packet half read by paho
            and self._protocol == mqtt.MQTTv5
            and self._sock is not None
        ):
            try:
                more = self._refill()
            except BlockingIOError:
                return MQTTErrorCode.MQTT_ERR_AGAIN
            except OSError:
                more = False  # paho's read meets the error again and says so
            if more and self._publishes(received):
                with self._msgtime_mutex:
                    self._last_bytes_received = mqtt.time_func()
                return MQTTErrorCode.MQTT_ERR_SUCCESS
        rc: MQTTErrorCode = super()._packet_read()
        return rc

    def _publishes(self, received: Received) -> int:
        """Hand every complete QoS 0/1 PUBLISH without properties at the head of the buffer to
        ``received``; stop at anything else (another packet, properties, an incomplete or
        malformed packet), which paho then reads. Returns how many were handed on."""
        got: list[Publish] = []
        self._rpos = publishes(self._rbuf, self._rpos, got)
        if got:
            self.received_fast += len(got)
            with self._in_callback_mutex:
                received(got)
        return len(got)

    def _more_records(self, first: bytes) -> bytes:
        """Over TLS one ``recv`` returns one record (at most 16 KiB): read the records already
        there too, so that one pass of the loop handles as much as over plain TCP."""
        chunks, size = [first], len(first)
        while size < _READ_SIZE:
            try:
                more = super()._sock_recv(_READ_SIZE - size)
            except BlockingIOError:
                break
            if not more:  # closed: hand over what came before; the next read sees the end
                break
            chunks.append(more)
            size += len(more)
        return b"".join(chunks)

    def loop_read(self, max_packets: int = 1) -> MQTTErrorCode:
        rc = super().loop_read(max_packets)
        # select() cannot see bytes already in our buffer: handle them now.
        while (
            rc == MQTTErrorCode.MQTT_ERR_SUCCESS
            and self._sock is not None
            and self._rsock is self._sock
            and self._rpos < len(self._rbuf)
        ):
            rc = super().loop_read(1)
        return rc

    # -------------------------------------------------------------- TLS on memory buffers

    def _ssl_wrap_socket(self, tcp_sock: socket.socket) -> Any:
        """TLS as :class:`ingest.memtls.MemoryTLS` (the socket read once for many records)
        when the context checks the host name itself, as the service's do; paho's
        ``SSLSocket`` otherwise."""
        context = self._ssl_context
        if context is None or not context.check_hostname or self._transport != "tcp":
            return super()._ssl_wrap_socket(tcp_sock)
        return MemoryTLS(tcp_sock, context, self._host, self._connect_timeout)

    def want_write(self) -> bool:
        sock = self._sock
        return super().want_write() or (isinstance(sock, MemoryTLS) and sock.waiting())

    def loop_write(self) -> MQTTErrorCode:
        sock = self._sock
        if isinstance(sock, MemoryTLS) and sock.waiting():
            try:
                sock.flush()  # what the socket did not take before goes first
            except BlockingIOError:
                return MQTTErrorCode.MQTT_ERR_AGAIN
            except OSError:
                pass  # the connection is gone: paho's own write or read says so
        rc: MQTTErrorCode = super().loop_write()
        return rc

    def ack_many(self, mids: Iterable[int]) -> None:
        """Acknowledge many QoS 1 messages (manual ack) with one write: the same 4-byte PUBACK
        per message (reason code omitted: success) that ``ack()`` sends one by one."""
        words = [_PUBACK_WORD | mid for mid in mids]  # 0x40 0x02 then the id: 4 bytes each
        if words:
            self._packet_queue(_PUBACK, struct.pack(f">{len(words)}I", *words), 0, 0)


class _LeanPublishProperties(Properties):
    _shared: Properties | None = None

    def __init__(self, packetType: int) -> None:
        shared = _LeanPublishProperties._shared
        if shared is None or packetType != PacketTypes.PUBLISH:
            super().__init__(packetType)  # type: ignore[no-untyped-call]
            return
        d = self.__dict__
        d["packetType"] = packetType
        d["types"] = shared.types
        d["names"] = shared.names
        d["properties"] = shared.properties

    def unpack(self, buffer: bytes) -> tuple[Properties, int]:
        if buffer[:1] == b"\x00":  # property length 0: nothing to parse or clear
            return self, 1
        result: tuple[Properties, int] = super().unpack(buffer)  # type: ignore[no-untyped-call]
        return result


def install_lean_publish_properties() -> bool:
    """Make paho's PUBLISH decoding use :class:`_LeanPublishProperties`. Idempotent."""
    try:
        from paho.mqtt import _packet
    except ImportError:
        log.warning("paho.mqtt._packet not found; MQTT 5 properties parsed the stock way")
        return False
    if getattr(_packet, "Properties", None) is Properties:  # not yet installed
        _LeanPublishProperties._shared = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
        _packet.Properties = _LeanPublishProperties  # type: ignore[attr-defined]
    return getattr(_packet, "Properties", None) is _LeanPublishProperties
