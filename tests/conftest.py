"""Shared fixtures. Integration tests meet a real Mosquitto started from the project's
mosquitto.conf on a free loopback port; a missing broker is a failure, never a skip."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from jiayuan.devbroker import Broker


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Broker]:
    """A fresh Mosquitto for one test: ``broker.host``, ``broker.port``, ``broker.restart()``."""
    b = Broker(tmp_path / "mosquitto").start()
    try:
        yield b
    finally:
        b.stop()
