"""Every committed reading is evaluated exactly once: `jiayuan run` SIGKILLed again and again while
readings and falls stream in, and every fall is one alert, matched once."""

from __future__ import annotations

import json
import sqlite3
import threading
from pathlib import Path

import pytest

from base.datadir import DataDir
from devtools.broker import Broker
from devtools.launch import ServiceProcess
from tests.mqtt import Publisher, wait_for

pytestmark = pytest.mark.network

WEARABLES = 1_000
ROUNDS = 21  # 20 normal readings and one fall each: 21,000 messages, falls spread through
KILLS = 8


def count(db_path: Path, query: str) -> int:
    db = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True)
    try:
        return int(db.execute(query).fetchone()[0])
    except sqlite3.OperationalError:  # not created yet
        return 0
    finally:
        db.close()


def test_every_fall_is_alerted_exactly_once_across_repeated_sigkills(
    broker: Broker, tmp_path: Path
) -> None:
    data = tmp_path / "service"
    svc = ServiceProcess(data, broker).start()
    pub = Publisher(broker, client_id="wearables")
    total = WEARABLES * ROUNDS

    def publish() -> None:
        for r in range(ROUNDS):
            for dev in range(WEARABLES):
                topic = f"community/y/wearable/wk-{dev}"
                if r == dev % ROUNDS:
                    pub.publish(f"{topic}/event", json.dumps({"seq": r, "event": "fall"}))
                else:
                    body = {"seq": r, "heart_rate": 72, "steps": r, "worn": True}
                    pub.publish(f"{topic}/telemetry", json.dumps(body))

    journal = DataDir(data).journal
    t = threading.Thread(target=publish)
    t.start()
    for k in range(1, KILLS + 1):
        # kill while messages arrive, and while the rules worker trails the journal
        at = k * total // (KILLS + 2)
        wait_for(lambda at=at: count(journal, "SELECT count(*) FROM readings") >= at, timeout=120)
        svc.kill()
        svc = ServiceProcess(data, broker, http_port=svc.http_port).start()
    t.join()
    pub.wait_acked(timeout=120)
    wait_for(lambda: count(journal, "SELECT count(*) FROM readings") == total, timeout=180)
    wait_for(lambda: svc.health()["rules_worker"]["behind"] == 0, timeout=120)
    svc.stop()
    pub.close()

    rows = count(journal, "SELECT count(*) FROM readings")
    distinct = count(journal, "SELECT count(*) FROM (SELECT DISTINCT device_id, seq FROM readings)")
    assert rows == distinct == total  # every reading stored once
    alerts = DataDir(data).alerts
    falls = "FROM alerts WHERE rule_id = 'wearable_fall'"
    assert count(alerts, f"SELECT count(*) {falls}") == WEARABLES  # none lost
    assert count(alerts, f"SELECT count(DISTINCT device_id) {falls}") == WEARABLES
    assert count(alerts, f"SELECT max(match_count) {falls}") == 1  # none evaluated twice
    raised = "SELECT count(*) FROM alert_history h JOIN alerts a ON a.id = h.alert_id"
    matched = f"{raised} WHERE a.rule_id = 'wearable_fall' AND h.action IN ('raised', 'rematched')"
    assert count(alerts, matched) == WEARABLES
