"""Several real ``jiayuan run`` instances share the MQTT sessions through leased session slots
(jiayuan/slots.py, docs/district.md "session slots"): two instances on one Mosquitto and one
PostgreSQL (journal and alert store shared there, ``JIAYUAN_DATABASE_URL``), a stream of
readings and falls, one instance's whole process group SIGKILLed (or SIGSTOPped) mid-stream;
the survivor takes its slots over, resumes their sessions, and every reading published is
stored once in the shared journal: what the dead instance had committed and not acknowledged
comes again to the survivor (DUP) and the journal's unique key drops it."""

from __future__ import annotations

import os
import signal
import threading
from pathlib import Path
from typing import Any

import pytest

from devtools.broker import Broker
from devtools.launch import ServiceProcess
from district.pg import connect
from tests.mqtt import Publisher, all_ok, wait_for, wearables_and_falls

pytestmark = pytest.mark.network

WEARABLES = 200
ROUNDS = 16  # 15 readings and one fall per wearable: 3,200 messages, falls spread through
SLOTS, URGENT_SLOTS = 4, 2
RECEIVE_MAX = 100


def one(pg_url: str, query: str) -> int:
    with connect(pg_url, name="observer", autocommit=True) as db:
        row = db.execute(query.encode()).fetchone()
    return int(row[0]) if row and row[0] is not None else 0


def stored(pg_url: str) -> tuple[int, int]:
    """Readings in the shared journal, and distinct (device, seq) among them."""
    return (
        one(pg_url, "SELECT count(*) FROM readings"),
        one(pg_url, "SELECT count(*) FROM (SELECT DISTINCT device_id, seq FROM readings) d"),
    )


def slots(svc: ServiceProcess) -> dict[str, Any]:
    report: dict[str, Any] = svc.health()["session_slots"]
    return report


def instance(data: Path, broker: Broker, pg_url: str, name: str, **kw: Any) -> ServiceProcess:
    return ServiceProcess(
        data,
        broker,
        process_group=True,
        database_url=pg_url,
        instance_id=name,
        session_slots=SLOTS,
        urgent_slots=URGENT_SLOTS,
        slot_lease_ttl_s=5,
        partition_lease_ttl_s=5,
        mqtt_receive_maximum=RECEIVE_MAX,
        **kw,
    )


def test_a_killed_instances_slots_are_taken_over_and_nothing_published_is_lost(
    broker: Broker, pg_url: str, tmp_path: Path
) -> None:
    data = {n: tmp_path / n for n in ("a", "b")}
    a = instance(data["a"], broker, pg_url, "a").start()
    assert slots(a)["telemetry"] == [0, 1, 2, 3] and slots(a)["urgent"] == [0, 1]
    b = instance(data["b"], broker, pg_url, "b").start()
    # a gives two telemetry slots and one urgent slot up (sessions stopped before the release
    # commits), b takes them
    wait_for(lambda: len(slots(b)["telemetry"]) == 2 and len(slots(b)["urgent"]) == 1, 30)
    wait_for(lambda: len(slots(a)["telemetry"]) == 2 and len(slots(a)["urgent"]) == 1, 30)
    wait_for(lambda: all_ok(a, b), 30)
    assert a.health()["mqtt_connected"] and b.health()["mqtt_connected"]

    pub = Publisher(broker, client_id="wearables")
    total = WEARABLES * ROUNDS

    readings = wearables_and_falls("wi-", WEARABLES, ROUNDS)
    t = threading.Thread(target=pub.publish_all, args=(readings,))
    t.start()
    # mid-stream, while both store
    wait_for(lambda: stored(pg_url)[0] >= total // 3, 120)
    assert a.proc is not None
    os.killpg(a.proc.pid, signal.SIGKILL)
    a.proc.wait()
    a.proc = None
    # b takes every slot over within the lease ttl and resumes those sessions
    wait_for(lambda: slots(b)["telemetry"] == [0, 1, 2, 3], 60)
    wait_for(lambda: slots(b)["urgent"] == [0, 1], 60)
    assert slots(b)["gained"] >= 3  # a's two telemetry slots and its urgent slot
    t.join()
    pub.wait_acked(timeout=120)
    pub.close()

    wait_for(lambda: stored(pg_url)[1] == total, 120)  # every reading published is stored
    assert stored(pg_url) == (total, total)  # ... once: redeliveries dropped by the unique key
    wait_for(lambda: b.health()["rules_worker"]["behind"] == 0, 120)
    falls = "FROM alerts WHERE rule_id = 'wearable_fall'"
    wait_for(lambda: one(pg_url, f"SELECT count(DISTINCT device_id) {falls}") == WEARABLES, 60)
    assert one(pg_url, f"SELECT count(*) {falls}") == WEARABLES  # one alert per fall
    # each fall evaluated by one instance: the rules' device partitions are leased too
    assert one(pg_url, f"SELECT sum(match_count) {falls}") == WEARABLES
    b.stop()


def test_a_frozen_instance_stops_its_sessions_when_it_wakes_and_gets_its_share_back(
    broker: Broker, pg_url: str, tmp_path: Path
) -> None:
    """A zombie: a's process group SIGSTOPped mid-stream (a hung host, a paused VM) keeps its
    TCP connections, so the broker sees nothing wrong; its leases lapse, b takes its slots, and
    b's CONNECT with the same client ids makes the broker close a's connections (session
    takeover). When a wakes, its renewal is overdue: it stops every session it ran before its
    paho loops reconnect, then rejoins and is given its share again."""
    data = {n: tmp_path / n for n in ("a", "b")}
    a = instance(data["a"], broker, pg_url, "a").start()
    b = instance(data["b"], broker, pg_url, "b").start()
    wait_for(lambda: len(slots(a)["telemetry"]) == 2 and len(slots(b)["telemetry"]) == 2, 30)
    wait_for(lambda: len(slots(a)["urgent"]) == 1 and len(slots(b)["urgent"]) == 1, 30)
    pub = Publisher(broker, client_id="wearables")
    total = WEARABLES * ROUNDS

    readings = wearables_and_falls("wz-", WEARABLES, ROUNDS, falls=False)
    t = threading.Thread(target=pub.publish_all, args=(readings,))
    t.start()
    wait_for(lambda: stored(pg_url)[0] >= total // 4, 120)
    assert a.proc is not None
    os.killpg(a.proc.pid, signal.SIGSTOP)
    try:
        wait_for(lambda: slots(b)["telemetry"] == [0, 1, 2, 3] and slots(b)["urgent"] == [0, 1], 60)
        # b's sessions connected: the broker closed a's (session takeover by client id)
        wait_for(lambda: all_ok(b), 60)
        assert set(b.health()["mqtt_sessions"]) == {"telemetry", "urgent-slot-0", "urgent-slot-1"}
    finally:
        broker_log = broker.data_dir / "mosquitto.log"
        woke = broker_log.stat().st_size
        os.killpg(a.proc.pid, signal.SIGCONT)
    t.join()
    pub.wait_acked(timeout=120)
    pub.close()
    # a woke as a zombie: it stopped what it ran, and then got its share back
    wait_for(lambda: "no longer held by this instance" in a.log.read_text(), 30)
    wait_for(lambda: len(slots(a)["telemetry"]) == 2 and len(slots(b)["telemetry"]) == 2, 60)
    wait_for(lambda: all_ok(a, b), 60)
    # ... before its paho loops reconnected: no session was taken back from b (the broker
    # logs each takeover by client id), and the share b gave back was handed over cleanly
    with broker_log.open("rb") as f:
        f.seek(woke)
        assert b"closing old connection" not in f.read()
    wait_for(lambda: stored(pg_url)[1] == total, 120)
    assert stored(pg_url) == (total, total)  # the zombie's late batch dropped as duplicates
    a.stop()
    b.stop()
