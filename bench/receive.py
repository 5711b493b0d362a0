"""Micro-benchmark of the receive path's Python work, socket and TLS left out: the PUBLISH
packets of one read parsed by :class:`ingest.mqtt_client.Client`'s fast path, made
:class:`ingest.listener.Inbound` by the session, put on the :class:`ingest.inbox.Inbox`, and
taken off it by the pipeline's ``get_many``.

``python -m bench.receive [--per-read 100]`` prints ``receive_us=X take_us=Y`` (µs per
message; best of 5 runs, in CPU time: the machine is shared). ``X`` is what the MQTT loop
thread spends per message beyond reading the socket; ``Y`` what the ingest thread spends
taking it.
"""

from __future__ import annotations

import argparse
import socket
import time
from collections.abc import Callable

from bench.decode import TYPICAL
from ingest.access import BrokerAccess
from ingest.inbox import Inbox
from ingest.listener import TELEMETRY, Session
from ingest.mqtt_client import Client


def packets(n: int) -> bytes:
    """``n`` QoS 1 PUBLISH packets without properties, as the broker sends them (MQTT 5)."""
    out = bytearray()
    for i in range(n):
        topic, payload = TYPICAL[i % len(TYPICAL)]
        t = topic.encode()
        body = len(t).to_bytes(2, "big") + t + (i % 65_535 + 1).to_bytes(2, "big") + b"\x00"
        body += payload
        size, length = len(body), bytearray()
        while True:
            byte, size = size & 127, size >> 7
            length.append(byte | (128 if size else 0))
            if not size:
                break
        out += bytes([0x32]) + length + body
    return bytes(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--per-read", type=int, default=100, help="messages per socket read")
    ap.add_argument("--reads", type=int, default=400)
    a = ap.parse_args()
    inbox = Inbox()
    session = Session(
        TELEMETRY,
        "127.0.0.1",
        1,
        "bench",
        BrokerAccess(),
        (),
        inbox.put_many,
        lambda: None,
        session_expiry_s=0,
        receive_maximum=1000,
        keepalive=30,
    )
    client = session.client
    assert isinstance(client, Client) and client.on_publish_received is not None
    buf, n = packets(a.per_read), a.per_read * a.reads
    client._rsock = client._sock = socket.socket()  # the buffer is this connection's

    def receive() -> None:
        for _ in range(a.reads):
            client._rbuf, client._rpos = buf, 0
            client._publishes(client.on_publish_received)  # type: ignore[arg-type]
        assert inbox.qsize() == n

    def take() -> None:
        while inbox.get_many(1000):
            pass

    fill, drain = [], []
    for _ in range(5):  # best of 5, each fill drained before the next
        fill.append(_once(receive, n))
        drain.append(_once(take, n))
    client._sock.close()
    client._rsock = client._sock = None
    print(f"receive_us={min(fill):.2f} take_us={min(drain):.2f}")


def _once(fn: Callable[[], object], n: int) -> float:
    t0 = time.process_time()
    fn()
    return (time.process_time() - t0) / n * 1e6


if __name__ == "__main__":
    main()
