"""Every committed reading is evaluated exactly once: `jiayuan run` SIGKILLed again and again while
readings and falls stream in, and every fall is one alert, matched once; and the alert that only
telemetry raises (a heart rate high for ten minutes, read by the ingest process apart) is raised
once when that process, the main process or both are SIGKILLed."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

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


def crash(svc: ServiceProcess, how: str) -> bool:
    """SIGKILL, ``how``: ``main``, the main process alone (as the OOM killer picks one; its
    telemetry ingest process, orphaned, finishes its batch and stops when its pipe closes);
    ``group``, the whole process group at once (``systemctl kill -s KILL``, a container's end),
    the ingest process with its batch in hand; ``ingest``, the telemetry ingest process alone
    (the main process restarts it). Returns whether the service must be started again."""
    assert svc.proc is not None
    if how == "ingest":
        # one that runs: just after a restart on PostgreSQL there is none until the killed
        # instance's session slots lapse (JIAYUAN_SLOT_LEASE_TTL_S) and this one takes them
        running: list[dict[str, Any]] = []

        def any_running() -> bool:
            running[:] = [p for p in svc.health()["ingest_processes"] or () if p["running"]]
            return bool(running)

        wait_for(any_running, timeout=120)
        os.kill(running[0]["pid"], signal.SIGKILL)
        return False
    if how == "main":
        svc.kill()
        return True
    os.killpg(svc.proc.pid, signal.SIGKILL)
    svc.proc.wait()
    svc.proc = None
    return True


def caught_up(svc: ServiceProcess, stores: Stores, data: Path, total: int) -> None:
    """Every reading journaled and evaluated (on PostgreSQL each restart is a new instance: the
    killed ones' partition leases lapse, JIAYUAN_PARTITION_LEASE_TTL_S, before it holds them
    all, and its backlog is theirs)."""
    wait_for(lambda: stores.journal(data, "SELECT count(*) FROM readings") == total, timeout=180)
    every = range(DEFAULT_PARTITIONS)
    wait_for(lambda: len(svc.health().get("partitions_held", every)) == len(every), timeout=120)
    wait_for(lambda: svc.health()["rules_worker"]["behind"] == 0, timeout=120)


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

    readings = wearables_and_falls("wk-", WEARABLES, ROUNDS)
    t = threading.Thread(target=pub.publish_all, args=(readings,))
    t.start()
    for k in range(1, KILLS + 1):
        # kill while messages arrive, and while the rules worker trails the journal
        at = k * total // (KILLS + 2)
        wait_for(lambda at=at: journal("SELECT count(*) FROM readings") >= at, timeout=120)
        if crash(svc, "main" if k % 2 else "group"):
            svc = ServiceProcess(
                data, broker, http_port=svc.http_port, process_group=True, **stores.settings
            ).start()
    t.join()
    pub.wait_acked(timeout=120)
    caught_up(svc, stores, data, total)
    svc.stop()
    pub.close()

    each_stored_and_alerted_once(stores, data, total, WEARABLES)


def each_stored_and_alerted_once(stores: Stores, data: Path, total: int, falls_n: int) -> None:
    """Every one of ``total`` readings stored once, and each of ``falls_n`` wearables' fall
    one alert, raised and matched once."""
    rows = stores.journal(data, "SELECT count(*) FROM readings")
    distinct = stores.journal(
        data, "SELECT count(*) FROM (SELECT DISTINCT device_id, seq FROM readings) AS d"
    )
    assert rows == distinct == total  # every reading stored once
    falls = "FROM alerts WHERE rule_id = 'wearable_fall'"
    assert stores.alerts(data, f"SELECT count(*) {falls}") == falls_n  # none lost
    assert stores.alerts(data, f"SELECT count(DISTINCT device_id) {falls}") == falls_n
    assert stores.alerts(data, f"SELECT max(match_count) {falls}") == 1  # none evaluated twice
    raised = "SELECT count(*) FROM alert_history h JOIN alerts a ON a.id = h.alert_id"
    matched = f"{raised} WHERE a.rule_id = 'wearable_fall' AND h.action IN ('raised', 'rematched')"
    assert stores.alerts(data, matched) == falls_n


HR_WEARABLES = 300
HR_ROUNDS = 12  # a reading a minute of event time at 130 bpm: eleven minutes above 120


def heart_rates(prefix: str, start_ms: int) -> Iterator[tuple[str, str]]:
    for r in range(HR_ROUNDS):
        for dev in range(HR_WEARABLES):
            body = {"seq": r, "ts": start_ms + r * 60_000, "heart_rate": 130, "worn": True}
            yield f"community/y/wearable/{prefix}{dev}/telemetry", json.dumps(body)


def test_an_alert_only_telemetry_raises_is_raised_once_across_sigkills_of_either_process(
    broker: Broker, tmp_path: Path, stores: Stores
) -> None:
    """wearable_heart_rate_high (above 120 for ten minutes of the readings' own time) is raised
    from telemetry alone, which the ingest process apart (on PostgreSQL the slots' processes)
    journals and acknowledges, and the main process's rules worker evaluates. Killed mid-stream:
    the ingest process alone (after its PUBACKs, before or after its pipe wakes the worker),
    the main process alone (the worker between its read and its commit), and both at once.
    Every device's episode still raises exactly one alert."""
    data = tmp_path / "service"
    kw: dict[str, Any] = {
        "process_group": True,
        # the ingest process's death, logged as an ERROR by its supervisor
        "expect_errors": ['jiayuan_log_errors_total{logger="jiayuan.ingest_procs"}'],
        **stores.settings,
    }
    svc = ServiceProcess(data, broker, **kw).start()
    pub = Publisher(broker, client_id="wearables")
    total = HR_WEARABLES * HR_ROUNDS
    start_ms = int((time.time() - 15 * 60) * 1000)
    t = threading.Thread(target=pub.publish_all, args=(list(heart_rates("hh-", start_ms)),))
    t.start()
    for k, how in enumerate(("ingest", "main", "group", "ingest"), start=1):
        at = k * total // 5
        wait_for(lambda at=at: stores.journal(data, "SELECT count(*) FROM readings") >= at, 120)
        if crash(svc, how):
            svc = ServiceProcess(data, broker, http_port=svc.http_port, **kw).start()
    t.join()
    pub.wait_acked(timeout=120)
    caught_up(svc, stores, data, total)
    svc.stop()
    pub.close()

    distinct = "SELECT count(*) FROM (SELECT DISTINCT device_id, seq FROM readings) AS d"
    assert stores.journal(data, "SELECT count(*) FROM readings") == stores.journal(data, distinct)
    high = "FROM alerts WHERE rule_id = 'wearable_heart_rate_high'"
    assert stores.alerts(data, f"SELECT count(*) {high}") == HR_WEARABLES  # none lost
    assert stores.alerts(data, f"SELECT count(DISTINCT device_id) {high}") == HR_WEARABLES
    raised = (
        "SELECT count(*) FROM alert_history h JOIN alerts a ON a.id = h.alert_id"
        " WHERE a.rule_id = 'wearable_heart_rate_high' AND h.action = 'raised'"
    )
    assert stores.alerts(data, raised) == HR_WEARABLES  # none raised twice
