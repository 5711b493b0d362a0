"""The HTTP server's limits, against a real ``jiayuan run`` on a loopback port and raw
sockets: a client dribbling its headers is disconnected, a crowd of idle connections past the
cap does not keep ``/healthz`` from answering, and a 50 MB body to the public sign-in route is
refused (413) before it is read, the connection closed early and the server's memory not grown
by it. Every wait is for a condition with a generous deadline; nothing asserts a duration."""

from __future__ import annotations

import json
import socket
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from devtools import children
from devtools.broker import Broker
from devtools.launch import ServiceProcess

pytestmark = pytest.mark.network
DEADLINE = 60.0
MB = 1 << 20


def serve(data: Path, broker: Broker, header_timeout_s: float) -> ServiceProcess:
    return ServiceProcess(
        data,
        broker,
        http_header_timeout_s=header_timeout_s,
        http_keepalive_s=2,
        http_max_connections=64,
    ).start()


@pytest.fixture
def service(tmp_path: Path, broker: Broker) -> Iterator[ServiceProcess]:
    """Headers must arrive within 2 s; at most 64 connections."""
    s = serve(tmp_path / "data", broker, header_timeout_s=2)
    try:
        yield s
    finally:
        s.stop()


@pytest.fixture
def patient(tmp_path: Path, broker: Broker) -> Iterator[ServiceProcess]:
    """At most 64 connections, and a header timeout that does not run out during a test."""
    s = serve(tmp_path / "data", broker, header_timeout_s=300)
    try:
        yield s
    finally:
        s.stop()


def connect(s: ServiceProcess) -> socket.socket:
    return socket.create_connection(("127.0.0.1", s.http_port), timeout=DEADLINE)


def closed_by_server(sock: socket.socket) -> bool:
    """Whether the server has closed ``sock`` (reads EOF, or a reset), waiting up to the
    deadline; what it sent before is discarded."""
    sock.settimeout(DEADLINE)
    try:
        while sock.recv(65536):
            pass
    except ConnectionResetError:
        pass
    except TimeoutError:
        return False
    return True


def response(sock: socket.socket) -> tuple[int, dict[str, str], bytes]:
    """One HTTP response read from ``sock``: status, headers (lower-case), body."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, f"connection closed before a response: {data!r}"
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {
        k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])
    }
    while len(body) < int(headers.get("content-length", "0")):
        chunk = sock.recv(65536)
        assert chunk, "connection closed mid-body"
        body += chunk
    return int(lines[0].split()[1]), headers, body


def healthz(s: ServiceProcess) -> int:
    with connect(s) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        return response(sock)[0]


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def log_text(s: ServiceProcess) -> str:
    return s.log.read_text(errors="replace")


def test_a_client_dribbling_its_headers_is_disconnected(service: ServiceProcess) -> None:
    sock = connect(service)
    sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
    stop = threading.Event()

    def dribble() -> None:  # a header byte every 100 ms, for as long as the server listens
        try:
            while not stop.is_set():
                sock.sendall(b"X")
                stop.wait(0.1)
        except OSError:
            pass

    t = threading.Thread(target=dribble, daemon=True)
    t.start()
    try:
        assert closed_by_server(sock), "the server kept a connection sending headers forever"
    finally:
        stop.set()
        t.join(10)
        sock.close()
    assert healthz(service) == 200
    log = log_text(service)
    assert "closed sending headers too slowly" in log
    assert "Traceback" not in log


def test_idle_connections_past_the_cap_do_not_lock_out_healthz(
    patient: ServiceProcess,
) -> None:
    service = patient
    # 300 connections that never send a byte, against a cap of 64
    idle = [connect(service) for _ in range(300)]
    try:
        assert healthz(service) == 200
        # the server shed the oldest idle connections to make room; those still open
        # number at most the cap
        shed = sum(closed_by_server(sock) for sock in idle[:200])
        assert shed == 200
    finally:
        for sock in idle:
            sock.close()
    assert healthz(service) == 200
    log = log_text(service)
    assert "idle closed for a new one" in log
    assert "Traceback" not in log


def test_a_50_mb_sign_in_body_is_refused_before_it_is_read(service: ServiceProcess) -> None:
    assert service.proc is not None
    size = 50 * MB
    before = rss_kib(service.proc.pid)
    sock = connect(service)
    sock.sendall(
        b"POST /api/auth/login HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Content-Length: " + str(size).encode() + b"\r\n\r\n"
    )
    sent = 0
    chunk = b"x" * (256 * 1024)

    def upload() -> None:
        nonlocal sent
        try:
            while sent < size:
                sent += sock.send(chunk)
        except OSError:  # the server closed the connection
            pass

    t = threading.Thread(target=upload, daemon=True)
    t.start()
    try:
        status, headers, body = response(sock)
        assert status == 413
        assert headers.get("connection") == "close"
        assert "at most 4096 bytes" in json.loads(body)["detail"]
        assert closed_by_server(sock)
        t.join(DEADLINE)
        assert not t.is_alive()
    finally:
        sock.close()
    assert sent < size, "the server read the whole body"
    assert rss_kib(service.proc.pid) - before < 20 * 1024, "the server's memory grew by it"
    assert healthz(service) == 200


def test_a_chunked_body_is_cut_off_once_past_the_cap(service: ServiceProcess) -> None:
    sock = connect(service)
    sock.sendall(
        b"POST /api/auth/login HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n"
    )
    stop = threading.Event()

    def upload() -> None:  # an endless body, 1 KiB at a time
        piece = b"400\r\n" + b"x" * 1024 + b"\r\n"
        try:
            while not stop.is_set():
                sock.sendall(piece)
                time.sleep(0.001)
        except OSError:
            pass

    t = threading.Thread(target=upload, daemon=True)
    t.start()
    try:
        status, headers, body = response(sock)
        assert status == 413 and headers.get("connection") == "close"
        assert "at most 4096 bytes" in json.loads(body)["detail"]
        assert closed_by_server(sock)
    finally:
        stop.set()
        t.join(10)
        sock.close()


def test_oversized_headers_are_refused_without_flooding_the_log(
    service: ServiceProcess,
) -> None:
    for _ in range(50):  # headers of 64 KiB, past the 16 KiB allowed
        with connect(service) as sock:
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 65536)
            status, _, _ = response(sock)
            assert status == 400
    assert healthz(service) == 200
    log = log_text(service)
    assert "Invalid HTTP request received." not in log
    assert log.count("malformed or oversized requests answered 400") == 1


def test_past_the_cap_of_busy_connections_a_new_one_is_told_to_retry(
    patient: ServiceProcess,
) -> None:
    service = patient
    streams: list[socket.socket] = []
    try:
        for _ in range(64):  # live streams: each holds its connection with a request under way
            sock = connect(service)
            sock.sendall(
                b"GET /api/stream HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer "
                + service.token.encode()
                + b"\r\n\r\n"
            )
            seen = b""
            while b": connected" not in seen:
                chunk = sock.recv(65536)
                assert chunk, "a stream was refused"
                seen += chunk
            streams.append(sock)
        with connect(service) as sock:
            status, headers, body = response(sock)  # answered before it asks anything
            assert status == 503 and headers["retry-after"] == "1"
            assert "too many connections" in json.loads(body)["detail"]
        streams.pop().close()
        deadline = time.monotonic() + DEADLINE
        while healthz_or_busy(service) == 503:
            assert time.monotonic() < deadline, "a freed connection was not reused"
            time.sleep(0.1)
    finally:
        for sock in streams:
            sock.close()
    assert "refused (every connection busy)" in log_text(service)


def healthz_or_busy(s: ServiceProcess) -> int:
    try:
        return healthz(s)
    except (AssertionError, OSError):
        return 503


FEW_FILES = (
    "import resource, runpy, sys; resource.setrlimit(resource.RLIMIT_NOFILE, (400, 400)); "
    "sys.argv = ['jiayuan', 'run']; runpy.run_module('jiayuan.cli', run_name='__main__')"
)
"""``jiayuan run`` under a hard limit of 400 open files, which it cannot raise."""


def test_idle_connections_past_the_open_files_limit_do_not_lock_out_healthz(
    tmp_path: Path, broker: Broker
) -> None:
    # on main: accept() failed for want of descriptors, /healthz was unreachable and the log
    # had a traceback per attempt
    s = ServiceProcess(tmp_path / "data", broker, http_header_timeout_s=300)
    s.data_dir.mkdir(parents=True)
    s.proc = children.spawn([sys.executable, "-c", FEW_FILES], s.log, s.env)
    try:
        children.wait_ready(
            s.proc,
            s.ready,
            name="jiayuan run",
            log=s.log,
            timeout=DEADLINE,
        )
        idle = [connect(s) for _ in range(600)]
        try:
            assert healthz(s) == 200
        finally:
            for sock in idle:
                sock.close()
        assert healthz(s) == 200
    finally:
        s.stop()
    log = log_text(s)
    assert "open-files limit 400: serving at most 144 HTTP connections" in log
    assert "idle closed for a new one" in log
    assert "Traceback" not in log and "out of system resource" not in log
    # a burst's accept pass fits in the files kept in reserve (with uvicorn's backlog of 2048
    # it took them all now and then: a rules worker's commit could not open its database)
    assert "accept failed" not in log
    assert "unable to open database file" not in log
