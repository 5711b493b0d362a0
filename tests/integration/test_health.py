"""/healthz tells the truth: 503 with the reason in words whenever the service cannot ingest,
evaluate or notify, and 200 again once it can, without a restart; on both stores. (A full
journal: see test_journal_full.py; the PostgreSQL database going away: test_database_outage.py.)"""

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
from district.pg import connect
from tests.mqtt import Publisher, wait_for
from tests.stores import Stores

pytestmark = pytest.mark.network


@pytest.fixture
def service(broker: Broker, tmp_path: Path, stores: Stores) -> Iterator[ServiceProcess]:
    svc = ServiceProcess(
        tmp_path / "service", broker, health_rules_lag_s=5, **stores.settings
    ).start()
    yield svc
    svc.stop()


def problems(svc: ServiceProcess) -> list[str]:
    health = svc.health()
    assert (health["status"] == "ok") == (not health["problems"])
    out: list[str] = health["problems"]
    return out


def disconnected(svc: ServiceProcess) -> set[str]:
    """What /healthz says of every MQTT session of the service while the broker is gone: on
    SQLite its telemetry and urgent sessions; on PostgreSQL each session slot it holds."""
    slots = svc.health()["session_slots"]
    if slots is None:
        return {
            "MQTT telemetry session disconnected: no readings received",
            "MQTT urgent session disconnected: no falls, SOS and alarms received",
        }
    return {
        f"MQTT session of telemetry slot {i} disconnected: its share of the readings not received"
        for i in slots["telemetry"]
    } | {
        f"MQTT urgent-slot-{i} session disconnected: no falls, SOS and alarms received"
        for i in slots["urgent"]
    }


def test_health_says_when_the_broker_is_gone_and_recovers(
    broker: Broker, service: ServiceProcess
) -> None:
    # its sessions' reconnects fail while it is gone: logged once per outage, at ERROR
    service.expect_errors = {'jiayuan_log_errors_total{logger="ingest.listener"}'}
    assert problems(service) == []
    said = disconnected(service)
    assert len(said) in (2, 6)  # (4 telemetry slots and 2 urgent ones on PostgreSQL)
    broker.stop()
    wait_for(lambda: said <= set(problems(service)), timeout=60)
    with pytest.raises(httpx.HTTPStatusError) as answer:
        service.get("/healthz")
    assert answer.value.response.status_code == 503
    broker.start()
    wait_for(lambda: problems(service) == [], timeout=90)


def test_health_says_when_the_alert_store_refuses_writes_and_the_fall_still_alerts(
    broker: Broker, service: ServiceProcess, tmp_path: Path, stores: Stores
) -> None:
    """Another process holds the alert store. SQLite: its commits are refused (busy), said
    as such and retried. PostgreSQL: they wait for the lock, and the backlog is what says so."""
    if stores.url is None:
        service.expect_errors = refusals = {
            "jiayuan_rules_commit_failures_total",
            'jiayuan_log_errors_total{logger="rules.worker"}',
        }
        lock = sqlite3.connect(DataDir(tmp_path / "service").alerts, isolation_level=None)
        lock.execute("BEGIN EXCLUSIVE")
        release = lock.close  # (rolls back)
    else:
        refusals = set()
        held = connect(stores.url)
        held.execute("LOCK TABLE alerts IN EXCLUSIVE MODE")  # reads pass, writes wait
        release = held.close
    pub = Publisher(broker)
    try:
        pub.publish("community/y/wearable/wh-1/event", json.dumps({"event": "fall", "seq": 1}))
        pub.wait_acked()
        if stores.url is None:
            wait_for(
                lambda: any(p.startswith("alert store refuses writes") for p in problems(service)),
                timeout=90,
            )
        wait_for(lambda: any(p.startswith("rules behind") for p in problems(service)), timeout=60)
        assert service.get("/api/alerts?device_id=wh-1")["items"] == []
        release()
        wait_for(lambda: problems(service) == [], timeout=60)
        items = service.get("/api/alerts?device_id=wh-1")["items"]
        assert [(a["rule_id"], a["status"]) for a in items] == [("wearable_fall", "firing")]
        if stores.url is None:
            log = service.log.read_text(errors="replace")
            assert log.count("the alert store refused a commit") == 1  # said once, not every retry
            assert log.count("committing again after") == 1
        assert set(service.errors()) == refusals  # on /metrics, and nothing else went wrong
    finally:
        release()  # (again: closing twice is nothing)
        pub.close()
