"""TLS on memory buffers (:class:`ingest.memtls.MemoryTLS`) against a real TLS server on
loopback (the standard library's ``SSLSocket``, with the installation's kind of certificate):
what the server sends arrives whole and in order however it is cut into records and reads;
what the socket does not take at once is sent later, whole; a name or a CA that does not match
fails the handshake as on an ``SSLSocket``; a closed connection reads as ``b""``."""

from __future__ import annotations

import contextlib
import selectors
import socket
import ssl
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from ingest.memtls import MemoryTLS
from jiayuan.broker.tls import make_tls

DEADLINE_S = 30.0


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("tls")
    make_tls(out, ["127.0.0.1", "localhost"])
    return out


class Server:
    """One TLS connection accepted on loopback, served by ``serve`` in a thread."""

    def __init__(self, certs: Path, serve: Callable[[ssl.SSLSocket], None]) -> None:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(certs / "server.crt", certs / "server.key")
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16_384)
        self.port = self.listener.getsockname()[1]
        self.error: BaseException | None = None

        def run() -> None:
            try:
                conn, _ = self.listener.accept()
                conn.settimeout(DEADLINE_S)
                with ctx.wrap_socket(conn, server_side=True) as tls:
                    serve(tls)
            except BaseException as e:  # reported by the test
                self.error = e

        self.thread = threading.Thread(target=run, daemon=True)
        self.thread.start()

    def connect(self, certs: Path, hostname: str = "localhost") -> MemoryTLS:
        ctx = ssl.create_default_context(cafile=str(certs / "ca.crt"))
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 16_384)  # fills up soon
        sock.settimeout(DEADLINE_S)
        sock.connect(("127.0.0.1", self.port))
        return MemoryTLS(sock, ctx, hostname, DEADLINE_S)

    def join(self) -> None:
        self.thread.join(DEADLINE_S)
        self.listener.close()
        if self.error is not None:
            raise self.error


def ready(conn: MemoryTLS, events: int) -> bool:
    """Wait for the socket as paho's ``select`` does, within the deadline (a selector: the
    test process may hold descriptors above ``select``'s 1024 by the time this runs)."""
    with selectors.DefaultSelector() as sel:
        sel.register(conn.fileno(), events)
        return bool(sel.select(DEADLINE_S))


def read_all(conn: MemoryTLS, size: int, bufsize: int) -> bytes:
    """Read as paho's loop does: wait in select unless ``pending()``, read until b""."""
    conn.setblocking(False)
    got = bytearray()
    while True:
        if not conn.pending():
            assert ready(conn, selectors.EVENT_READ), f"stuck at {len(got)}/{size}"
        try:
            data = conn.recv(bufsize)
        except BlockingIOError:
            continue
        if not data:
            return bytes(got)
        got += data


@pytest.mark.parametrize("bufsize", [1, 7, 65_536])
def test_what_the_server_sends_arrives_whole_in_order_then_the_close(
    certs: Path, bufsize: int
) -> None:
    """Many small records (one message each, as Mosquitto writes them) and large ones (split
    across socket reads); read a byte at a time, a few, or 64 KiB."""
    chunks = [f"{i:06d}".encode() * (1 + i % 5) for i in range(3000)]
    chunks += [bytes([i]) * 40_000 for i in range(5)]
    whole = b"".join(chunks)

    def serve(tls: ssl.SSLSocket) -> None:
        for c in chunks:
            tls.sendall(c)
        with contextlib.suppress(OSError):  # the client may close before answering it
            tls.unwrap()  # close_notify, then the close

    server = Server(certs, serve)
    conn = server.connect(certs)
    got = read_all(conn, len(whole), bufsize)
    conn.close()
    server.join()
    assert got == whole


def test_a_connection_closed_without_close_notify_reads_as_closed(certs: Path) -> None:
    def serve(tls: ssl.SSLSocket) -> None:
        tls.sendall(b"last words")
        tls.shutdown(socket.SHUT_RDWR)  # TCP's end, without TLS's

    server = Server(certs, serve)
    conn = server.connect(certs)
    got = read_all(conn, 10, 65_536)
    conn.close()
    server.join()
    assert got == b"last words"


def test_what_the_socket_does_not_take_at_once_is_sent_later_whole(certs: Path) -> None:
    """The server reads nothing until the client's socket is full: the client's send says
    BlockingIOError or keeps the rest (``waiting``), and ``flush`` (paho's loop_write) sends
    it once the server reads; the server gets every byte, in order."""
    release = threading.Event()
    received = bytearray()
    total = 16 * 65_536

    def serve(tls: ssl.SSLSocket) -> None:
        release.wait(DEADLINE_S)
        while len(received) < total:
            data = tls.recv(65_536)
            if not data:
                break
            received.extend(data)
        tls.sendall(b"done")

    server = Server(certs, serve)
    conn = server.connect(certs)
    conn.setblocking(False)
    block = bytes(range(256)) * 256
    sent = 0
    refused = 0
    while sent < total:
        try:
            sent += conn.send(block)
        except BlockingIOError:
            refused += 1
            release.set()
            ready(conn, selectors.EVENT_WRITE)
    while conn.waiting():
        release.set()
        ready(conn, selectors.EVENT_WRITE)
        with contextlib.suppress(BlockingIOError):  # not all yet: wait again
            conn.flush()
    assert refused > 0, "the socket never filled up: the case is not tested"
    assert read_all(conn, 4, 65_536) == b"done"
    conn.close()
    server.join()
    assert bytes(received) == block * (total // len(block))


def test_what_waits_for_the_socket_at_close_is_sent_before_the_close(certs: Path) -> None:
    """paho closes the connection right after handing over its DISCONNECT: bytes still
    waiting because the broker was slow to read must reach it before the connection ends."""
    release = threading.Event()
    received = bytearray()

    def serve(tls: ssl.SSLSocket) -> None:
        release.wait(DEADLINE_S)
        while data := tls.recv(65_536):
            received.extend(data)

    server = Server(certs, serve)
    conn = server.connect(certs)
    conn.setblocking(False)
    block = bytes(range(256)) * 256
    sent = 0
    while not conn.waiting():  # until the socket is full and the rest waits here
        sent += conn.send(block)
    threading.Timer(0.2, release.set).start()  # the server reads again only after the close began
    conn.close()
    server.join()
    assert len(received) == sent and bytes(received) == block * (sent // len(block))


@pytest.mark.parametrize("wrong", ["name", "ca"])
def test_a_certificate_for_another_name_or_from_another_ca_fails_the_handshake(
    certs: Path, tmp_path: Path, wrong: str
) -> None:
    def serve(tls: ssl.SSLSocket) -> None:
        pass

    server = Server(certs, serve)
    other = tmp_path / "other"
    make_tls(other, ["127.0.0.1"])
    with pytest.raises(ssl.SSLCertVerificationError):
        if wrong == "name":
            server.connect(certs, hostname="broker.example")
        else:
            server.connect(other)
    with pytest.raises(ssl.SSLError):
        server.join()


def test_nothing_is_pending_once_all_that_came_is_read(certs: Path) -> None:
    """After a read that filled its size, ``pending()`` says more may be in memory; once a
    read finds nothing (BlockingIOError) it says 0 again, or paho's loop would not wait in
    select but spin."""
    done = threading.Event()

    def serve(tls: ssl.SSLSocket) -> None:
        tls.sendall(b"x" * 1000)
        done.wait(DEADLINE_S)

    server = Server(certs, serve)
    conn = server.connect(certs)
    conn.setblocking(False)
    got = b""
    while len(got) < 1000:
        if not conn.pending():
            ready(conn, selectors.EVENT_READ)
        with contextlib.suppress(BlockingIOError):
            got += conn.recv(100)
    assert conn.pending()  # the last read filled its size: perhaps more in memory
    with pytest.raises(BlockingIOError):
        conn.recv(100)
    assert conn.pending() == 0
    done.set()
    conn.close()
    server.join()
