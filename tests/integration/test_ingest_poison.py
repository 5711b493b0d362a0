"""Poison never stops ingestion: thousands of messages that once stopped the service (each
dropped its whole batch unacknowledged, the broker sent them again after every restart and
no fall alerted again), then a fall from a registered wearable. The real broker, the real
service process, restarts included."""

from __future__ import annotations

import json
import sqlite3
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from base.datadir import DataDir
from devtools.broker import Broker
from devtools.launch import ServiceProcess
from registry import Building, Registry
from registry.loader import write_registry
from tests.conftest import BROKER_REGISTRY
from tests.mqtt import Publisher, wait_for

pytestmark = pytest.mark.network

WT = "community/y/wearable/wr-1/telemetry"
POISON: list[tuple[str, str, bytes]] = [
    ("too_deep", WT, b"[" * 1500 + b"]" * 1500),
    ("too_large_number", WT, b'{"ts": ' + b"9" * 400 + b"}"),
    ("too_large_number", WT, b'{"seq": 9223372036854775808, "heart_rate": 70}'),
    ("too_large_number", WT, b'{"steps": ' + b"9" * 400 + b"}"),
    ("duplicate_key", WT, b'{"heart_rate": 72, "heart_rate": 190}'),
    ("lone_surrogate", WT, b'{"heart_rate": 72, "note": "\\ud800"}'),
    ("not_json", WT, b'{"heart_rate": NaN}'),
    (
        "too_deep",
        "community/y/wearable/wr-1/event",
        b'{"event": "fall", "x": ' + b"[" * 900 + b"]" * 900 + b"}",
    ),
]
ROUNDS = 375  # 3,000 messages: more than the service's receive window (2,000)


def placed() -> Registry:
    """The broker's devices, with their buildings and compounds."""
    return Registry(
        "y",
        buildings=[
            Building(building="B01", compound="C01"),
            Building(building="B02", compound="C01"),
            Building(building="B03", compound="C02"),
        ],
        devices=list(BROKER_REGISTRY.devices.values()),
    )


@pytest.fixture
def service(broker: Broker, tmp_path: Path) -> Iterator[ServiceProcess]:
    write_registry(placed(), tmp_path / "registry")
    svc = ServiceProcess(tmp_path / "service", broker, registry=tmp_path / "registry")
    svc.start()
    yield svc
    svc.stop()


def fall_alerts(svc: ServiceProcess, device: str) -> list[dict[str, object]]:
    items: list[dict[str, object]] = svc.get(
        f"/api/alerts?device_id={device}&rule_id=wearable_fall"
    )["items"]
    return [a for a in items if a["rule_id"] == "wearable_fall"]


def dead_total(svc: ServiceProcess) -> int:
    return int(svc.get("/api/dead-letters/counts")["total"])


def stored(svc: ServiceProcess, device: str, seq: int) -> bool:
    """Whether the journal holds the reading (read straight from SQLite: the API shows a
    wearable's readings to its caretakers only)."""
    db = sqlite3.connect(f"file:{DataDir(svc.data_dir).journal}?mode=ro", uri=True)
    try:
        row = db.execute(
            "SELECT count(*) FROM readings WHERE device_id = ? AND seq = ?", (device, seq)
        ).fetchone()
        return bool(row[0])
    finally:
        db.close()


def publish_poison(pub: Publisher, rounds: int) -> None:
    for _ in range(rounds):
        pub.publish_all((topic, payload) for _, topic, payload in POISON)


def test_thousands_of_poison_messages_then_a_fall_alerts_also_across_restarts(
    broker: Broker, service: ServiceProcess
) -> None:
    pub = Publisher(broker)
    publish_poison(pub, ROUNDS)
    pub.publish("community/y/wearable/wr-1/event", json.dumps({"event": "fall", "seq": 1}))
    pub.wait_acked(120)
    wait_for(lambda: fall_alerts(service, "wr-1"), timeout=120)
    want = {r: n * ROUNDS for r, n in Counter(r for r, _, _ in POISON).items()}
    wait_for(lambda: dead_total(service) == sum(want.values()), timeout=120)
    counts = service.get("/api/dead-letters/counts")["counts"]
    assert {k: v for k, v in counts.items() if v} == want
    metrics = service.get_text("/metrics")
    assert 'jiayuan_dead_letters_total{reason="too_deep"} 750.0' in metrics

    # More poison, and the service is killed while it takes it in: what it had not
    # acknowledged comes again, is dead-lettered again, and that is the end of it.
    publish_poison(pub, ROUNDS // 3)
    pub.wait_acked(120)
    service.kill()
    service.start()
    pub.publish("community/y/wearable/wr-2/event", json.dumps({"event": "fall", "seq": 1}))
    pub.publish("community/y/wearable/wr-2/telemetry", json.dumps({"seq": 2, "spo2": 97}))
    pub.wait_acked(60)
    wait_for(lambda: fall_alerts(service, "wr-2"), timeout=120)
    wait_for(lambda: stored(service, "wr-2", 2), timeout=120)  # everything before it came
    after_kill = dead_total(service)
    sent = sum(want.values()) + len(POISON) * (ROUNDS // 3)
    assert sent <= after_kill <= sent + 2_000  # at most the unacknowledged window twice

    # A graceful restart: nothing of the poison comes back.
    service.stop()
    service.start()
    pub.publish("community/y/wearable/wr-2/telemetry", json.dumps({"seq": 3, "spo2": 97}))
    pub.wait_acked(60)
    wait_for(lambda: stored(service, "wr-2", 3), timeout=120)
    assert dead_total(service) == after_kill
    health = service.health()
    assert health["mqtt_connected"] is True
    pub.close()
