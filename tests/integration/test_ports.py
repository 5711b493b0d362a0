"""Parallel test workers pick loopback ports for their children (``free_port``) and the child
binds one a moment later: another process may take it in between. The starters then pick other
ports and start again, so a test never fails for a port it did not choose."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from devtools import broker as broker_module
from devtools.broker import Broker, free_port
from devtools.launch import ServiceProcess
from devtools.postgres import TEST_SETTINGS, Postgres
from devtools.victoria import Victoria
from tests.conftest import BROKER_REGISTRY
from tests.mqtt import Publisher

pytestmark = pytest.mark.network


@contextmanager
def taken(port: int) -> Iterator[None]:
    """Another process listening on ``port`` (this one, standing in)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", port))
        s.listen()
        yield


def test_workers_hand_out_ports_of_their_own(monkeypatch: pytest.MonkeyPatch) -> None:
    shares = []
    for n in range(4):
        monkeypatch.setenv("PYTEST_XDIST_WORKER", f"gw{n}")
        monkeypatch.setenv("PYTEST_XDIST_WORKER_COUNT", "4")
        shares.append(set(broker_module._port_range()))
        assert len(shares[-1]) > 1000
    assert all(not (a & b) for i, a in enumerate(shares) for b in shares[i + 1 :])
    low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    assert max(max(s) for s in shares) < low  # no outgoing connection's local port
    picked = [free_port() for _ in range(50)]
    assert len(set(picked)) == 50 and set(picked) <= shares[3]


def test_a_broker_whose_ports_were_taken_starts_on_others(tmp_path: Path) -> None:
    b = Broker(tmp_path / "mosquitto", registry=BROKER_REGISTRY)
    port, tls_port = b.port, b.tls_port
    with taken(tls_port):
        b.start()
        try:
            assert tls_port not in (b.port, b.tls_port)
            ports = (b.port, b.tls_port)
            b.restart()  # clients know its ports now: it keeps them
            assert (b.port, b.tls_port) == ports != (port, tls_port)
            pub = Publisher(b, client_id="ports-test")
            try:
                pub.publish("community/y/gate/gt-1/status", b'{"state": "online"}')
                pub.wait_acked()
            finally:
                pub.close()
        finally:
            b.stop()
    assert "address already in use" in (b.data_dir / "mosquitto.log").read_text().lower()


def test_a_victoria_whose_port_was_taken_starts_on_another(tmp_path: Path) -> None:
    v = Victoria(tmp_path / "victoria")
    port = v.port
    with taken(port):
        v.start()
        try:
            assert v.port != port
            assert httpx.get(v.url + "/health", timeout=10).status_code == 200
        finally:
            v.stop()
    assert "address already in use" in (v.data_dir / "victoria-metrics.log").read_text()


def test_a_postgres_whose_port_was_taken_starts_on_another() -> None:
    pg = Postgres(settings=TEST_SETTINGS)
    port = pg.port
    with taken(port), pg:
        assert pg.port != port
        assert pg.create_database("t_ports").endswith(f":{pg.port}/t_ports")


def test_a_service_whose_port_was_taken_starts_on_another(broker: Broker, tmp_path: Path) -> None:
    svc = ServiceProcess(tmp_path / "service", broker)
    port = svc.http_port
    with taken(port):
        svc.start()
        try:
            assert svc.http_port != port and svc.ready()
        finally:
            svc.stop()
    assert "address already in use" in svc.log.read_text()
