"""/healthz tells the truth: 503 with the reason in words whenever the service cannot ingest,
evaluate or notify, and 200 again once it can, without a restart. (A full journal: see
test_journal_full.py.)"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from base.datadir import DataDir
from devtools.broker import Broker
from devtools.launch import ServiceProcess
from tests.mqtt import Publisher, wait_for

pytestmark = pytest.mark.network


@pytest.fixture
def service(broker: Broker, tmp_path: Path) -> Iterator[ServiceProcess]:
    svc = ServiceProcess(tmp_path / "service", broker, health_rules_lag_s=5).start()
    yield svc
    svc.stop()


def problems(svc: ServiceProcess) -> list[str]:
    health = svc.health()
    assert (health["status"] == "ok") == (not health["problems"])
    out: list[str] = health["problems"]
    return out


def test_health_says_when_the_broker_is_gone_and_recovers(
    broker: Broker, service: ServiceProcess
) -> None:
    assert problems(service) == []
    broker.stop()
    wait_for(
        lambda: (
            {
                "MQTT telemetry session disconnected: no readings received",
                "MQTT urgent session disconnected: no falls, SOS and alarms received",
            }
            <= set(problems(service))
        ),
        timeout=60,
    )
    with pytest.raises(httpx.HTTPStatusError) as answer:
        service.get("/healthz")
    assert answer.value.response.status_code == 503
    broker.start()
    wait_for(lambda: problems(service) == [], timeout=90)


def test_health_says_when_the_alert_store_refuses_writes_and_the_fall_still_alerts(
    broker: Broker, service: ServiceProcess, tmp_path: Path
) -> None:
    service.expect_errors = refusals = {
        "jiayuan_rules_commit_failures_total",
        'jiayuan_log_errors_total{logger="rules.worker"}',
    }
    alerts_db = DataDir(tmp_path / "service").alerts
    lock = sqlite3.connect(alerts_db, isolation_level=None)
    lock.execute("BEGIN EXCLUSIVE")  # another process holds the alert store
    pub = Publisher(broker)
    pub.publish("community/y/wearable/wh-1/event", json.dumps({"event": "fall", "seq": 1}))
    pub.wait_acked()
    wait_for(
        lambda: any(p.startswith("alert store refuses writes") for p in problems(service)),
        timeout=90,
    )
    wait_for(lambda: any(p.startswith("rules behind") for p in problems(service)), timeout=60)
    lock.execute("ROLLBACK")
    lock.close()
    wait_for(lambda: problems(service) == [], timeout=60)
    items = service.get("/api/alerts?device_id=wh-1")["items"]
    assert [(a["rule_id"], a["status"]) for a in items] == [("wearable_fall", "firing")]
    log = service.log.read_text(errors="replace")
    assert log.count("the alert store refused a commit") == 1  # said once, not every retry
    assert log.count("committing again after") == 1
    assert set(service.errors()) == refusals  # on /metrics, and nothing else went wrong
    pub.close()
