"""Shared fixtures. Integration tests meet a real Mosquitto started from the project's
mosquitto.conf on a free loopback port, and a real VictoriaMetrics as the time-series server;
a missing broker or server is a failure, never a skip."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from jiayuan.devbroker import Broker
from jiayuan.devvictoria import Victoria


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "victoria(dedup=False): options of the victoria fixture's server (dedup=True: one sample"
        " per series and millisecond, as InfluxDB keeps one point per series and time)",
    )


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Broker]:
    """A fresh Mosquitto for one test: ``broker.host``, ``broker.port``, ``broker.restart()``."""
    b = Broker(tmp_path / "mosquitto").start()
    try:
        yield b
    finally:
        b.stop()


@pytest.fixture
def victoria(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Victoria]:
    """A fresh VictoriaMetrics serving the InfluxDB v2 write API for one test: ``victoria.url``,
    ``stop()`` and ``start()`` again over the same data, ``samples()`` of what it stored."""
    marker = request.node.get_closest_marker("victoria")
    v = Victoria(tmp_path / "victoria", **(marker.kwargs if marker else {})).start()
    try:
        yield v
    finally:
        v.stop()
