"""Every committed reading is evaluated exactly once: `jiayuan run` SIGKILLed again and again while
readings and falls stream in, and every fall is one alert, matched once."""

from __future__ import annotations

import os
import signal
import threading
from pathlib import Path

import pytest

from devtools.broker import Broker
from devtools.launch import ServiceProcess
from district.partitions import DEFAULT_PARTITIONS
from tests.mqtt import Publisher, wait_for, wearables_and_falls
from tests.stores import Stores

pytestmark = pytest.mark.network

WEARABLES = 1_000
ROUNDS = 21  # 20 normal readings and one fall each: 21,000 messages, falls spread through
KILLS = 8


def crash(svc: ServiceProcess, k: int) -> None:
    """SIGKILL: odd ``k``, the main process alone (as the OOM killer picks one; its telemetry
    ingest process, orphaned, finishes its batch and stops when its pipe closes); even ``k``,
    the whole process group at once (``systemctl kill -s KILL``, a container's end), the
    ingest process with its batch in hand."""
    if k % 2:
        svc.kill()
        return
    assert svc.proc is not None
    os.killpg(svc.proc.pid, signal.SIGKILL)
    svc.proc.wait()
    svc.proc = None


def test_every_fall_is_alerted_exactly_once_across_repeated_sigkills(
    broker: Broker, tmp_path: Path, stores: Stores
) -> None:
    """On SQLite files and on PostgreSQL (the rules' cursors per device partition, committed
    with the alerts in the same database)."""
    data = tmp_path / "service"
    svc = ServiceProcess(data, broker, process_group=True, **stores.settings).start()
    pub = Publisher(broker, client_id="wearables")
    total = WEARABLES * ROUNDS

    def journal(query: str) -> int:
        return stores.journal(data, query)

    def alerts(query: str) -> int:
        return stores.alerts(data, query)

    readings = wearables_and_falls("wk-", WEARABLES, ROUNDS)
    t = threading.Thread(target=pub.publish_all, args=(readings,))
    t.start()
    for k in range(1, KILLS + 1):
        # kill while messages arrive, and while the rules worker trails the journal
        at = k * total // (KILLS + 2)
        wait_for(lambda at=at: journal("SELECT count(*) FROM readings") >= at, timeout=120)
        crash(svc, k)
        svc = ServiceProcess(
            data, broker, http_port=svc.http_port, process_group=True, **stores.settings
        ).start()
    t.join()
    pub.wait_acked(timeout=120)
    wait_for(lambda: journal("SELECT count(*) FROM readings") == total, timeout=180)
    # on PostgreSQL each restart is a new instance: the killed ones' partition leases lapse
    # (JIAYUAN_PARTITION_LEASE_TTL_S) before it holds them all, and its backlog is theirs
    every = range(DEFAULT_PARTITIONS)
    wait_for(lambda: len(svc.health().get("partitions_held", every)) == len(every), timeout=120)
    wait_for(lambda: svc.health()["rules_worker"]["behind"] == 0, timeout=120)
    svc.stop()
    pub.close()

    rows = journal("SELECT count(*) FROM readings")
    distinct = journal("SELECT count(*) FROM (SELECT DISTINCT device_id, seq FROM readings) AS d")
    assert rows == distinct == total  # every reading stored once
    falls = "FROM alerts WHERE rule_id = 'wearable_fall'"
    assert alerts(f"SELECT count(*) {falls}") == WEARABLES  # none lost
    assert alerts(f"SELECT count(DISTINCT device_id) {falls}") == WEARABLES
    assert alerts(f"SELECT max(match_count) {falls}") == 1  # none evaluated twice
    raised = "SELECT count(*) FROM alert_history h JOIN alerts a ON a.id = h.alert_id"
    matched = f"{raised} WHERE a.rule_id = 'wearable_fall' AND h.action IN ('raised', 'rematched')"
    assert alerts(matched) == WEARABLES
