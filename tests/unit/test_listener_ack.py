"""Acknowledgements: each QoS 1 message's PUBACK goes back on the session it came on, in the
order given, none for QoS 0 or for a session given up; :meth:`Client.ack_many` writes the same
4-byte PUBACKs that paho's ``ack()`` sends one by one, in one packet."""

from __future__ import annotations

import queue
import struct
from collections.abc import Iterable

from hypothesis import given, settings
from hypothesis import strategies as st
from paho.mqtt.enums import CallbackAPIVersion

from ingest.listener import TELEMETRY, URGENT, Inbound, Listener
from ingest.mqtt_client import Client

SESSIONS = [TELEMETRY, URGENT, "gone"]


def listener() -> tuple[Listener, dict[str, list[int]]]:
    got: dict[str, list[int]] = {}
    li = Listener("127.0.0.1", 1, "test-ack", queue.Queue())
    for name, s in li._sessions.items():

        def ack(mids: Iterable[int], name: str = name) -> None:
            got.setdefault(name, []).extend(mids)

        s.ack = ack  # type: ignore[method-assign]
    return li, got


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(SESSIONS), st.integers(0, 1)), max_size=60))
def test_each_qos1_message_is_acknowledged_on_its_own_session_in_order(
    sent: list[tuple[str, int]],
) -> None:
    li, got = listener()
    messages = [Inbound("t", b"", i + 1, qos, False, 0.0, s) for i, (s, qos) in enumerate(sent)]
    li.ack(messages)
    expected: dict[str, list[int]] = {}
    for m in messages:  # what the listener acknowledged one by one before
        if m.qos == 1 and m.session in li._sessions:
            expected.setdefault(m.session, []).append(m.mid)
    assert got == expected


@given(st.lists(st.integers(1, 65_535), max_size=50))
def test_ack_many_writes_pahos_pubacks_in_one_packet(mids: list[int]) -> None:
    queued: list[bytes] = []
    c = Client(callback_api_version=CallbackAPIVersion.VERSION2, client_id="test-ack-many")
    c._packet_queue = lambda _t, packet, _m, _q, **_k: queued.append(packet)  # type: ignore[assignment, method-assign]
    c.ack_many(mids)
    one_by_one = b"".join(struct.pack("!BBH", 0x40, 2, mid) for mid in mids)
    assert queued == ([one_by_one] if mids else [])
