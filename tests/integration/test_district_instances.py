"""Several real ``jiayuan run`` instances share the MQTT sessions through leased session slots
(jiayuan/slots.py, docs/district.md "session slots"): two instances on one Mosquitto and one
PostgreSQL, a stream of readings and falls, one instance's whole process group SIGKILLed
mid-stream; the survivor takes its slots over, resumes their sessions, and nothing published is
lost.

The journals are still per instance (each instance's SQLite file in its own data directory):
the PostgreSQL journal is another branch's. So "stored once" is counted across the two
journals, and what is true there is asserted: each journal holds each reading at most once (its
unique key), every reading is in one of them, and a reading may be in both only if the dead
instance had committed it without acknowledging it (the broker then hands it to the session's
next holder, DUP) — the journal's duplicate drop works within one journal, so those are
counted, and bounded by what can be in flight. Likewise a fall: the dead instance's journal is
followed by its own rules worker only, so a fall it stored and had not evaluated is alerted when
that instance comes back (restarted here on its data directory), and a fall in both journals
may be alerted on both instances."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import threading
from pathlib import Path
from typing import Any

import pytest

from base.datadir import DataDir
from devtools.broker import Broker
from devtools.launch import ServiceProcess
from tests.mqtt import Publisher, wait_for

pytestmark = pytest.mark.network

WEARABLES = 200
ROUNDS = 16  # 15 readings and one fall per wearable: 3,200 messages, falls spread through
SLOTS, URGENT_SLOTS = 4, 2
RECEIVE_MAX = 100


def rows(db_path: Path, query: str) -> list[tuple[Any, ...]]:
    db = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True)
    try:
        return db.execute(query).fetchall()
    except sqlite3.OperationalError:  # not created yet
        return []
    finally:
        db.close()


def keys(data: Path) -> list[tuple[str, int]]:
    """(device, seq) of every reading and event in an instance's journal."""
    return [
        (str(d), int(s))
        for d, s in rows(DataDir(data).journal, "SELECT device_id, seq FROM readings")
    ]


def fall_alerts(data: Path) -> set[str]:
    got = rows(DataDir(data).alerts, "SELECT device_id FROM alerts WHERE rule_id = 'wearable_fall'")
    return {str(d) for (d,) in got}


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
        slot_lease_ttl_s=2,
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
    wait_for(lambda: a.health()["status"] == "ok" and b.health()["status"] == "ok", 30)
    assert a.health()["mqtt_connected"] and b.health()["mqtt_connected"]

    pub = Publisher(broker, client_id="wearables")
    total = WEARABLES * ROUNDS

    def publish() -> None:
        for r in range(ROUNDS):
            for dev in range(WEARABLES):
                topic = f"community/y/wearable/wi-{dev}"
                if r == dev % ROUNDS:
                    pub.publish(f"{topic}/event", json.dumps({"seq": r, "event": "fall"}))
                else:
                    body = {"seq": r, "heart_rate": 72, "steps": r, "worn": True}
                    pub.publish(f"{topic}/telemetry", json.dumps(body))

    t = threading.Thread(target=publish)
    t.start()
    # mid-stream, while both store: a's whole process group (its ingest processes too)
    wait_for(lambda: len(keys(data["a"])) >= total // 4, 120)
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

    def union() -> set[tuple[str, int]]:
        return set(keys(data["a"])) | set(keys(data["b"]))

    wait_for(lambda: len(union()) == total, 120)  # every reading published is stored
    in_a, in_b = keys(data["a"]), keys(data["b"])
    assert len(in_a) == len(set(in_a)) and len(in_b) == len(set(in_b))  # once per journal
    both = set(in_a) & set(in_b)
    # in both journals: what a committed and had not acknowledged when killed, redelivered to
    # b through a's resumed sessions (at most what a's sessions may have in flight)
    assert len(both) <= (SLOTS // 2) * RECEIVE_MAX + URGENT_SLOTS // 2 * 200
    print(
        f"\nstored {total} readings across two journals: a {len(in_a)}, b {len(in_b)},"
        f" in both (committed by a, unacknowledged when it died, redelivered to b) {len(both)}"
    )
    wait_for(lambda: b.health()["rules_worker"]["behind"] == 0, 120)
    fell = {f"wi-{dev}" for dev in range(WEARABLES)}
    stranded = fell - fall_alerts(data["a"]) - fall_alerts(data["b"])
    falls_in_a = {d for d, s in in_a if s == int(d.split("-")[1]) % ROUNDS}
    assert stranded <= falls_in_a  # any fall not yet alerted is one a stored and never evaluated
    # a comes back on its data directory: its rules worker evaluates the rest of its journal,
    # and it takes its share of the slots again
    a = instance(data["a"], broker, pg_url, "a", http_port=a.http_port).start()
    wait_for(lambda: a.health()["rules_worker"]["behind"] == 0, 120)
    wait_for(lambda: fell <= fall_alerts(data["a"]) | fall_alerts(data["b"]), 60)
    twice = fall_alerts(data["a"]) & fall_alerts(data["b"])
    print(
        f"falls not alerted until a came back: {len(stranded)}; alerted on both instances"
        f" (in both journals): {len(twice)}"
    )
    assert twice <= {d for d, _ in both}  # only a fall in both journals is alerted twice
    wait_for(lambda: len(slots(a)["telemetry"]) == 2 and len(slots(b)["telemetry"]) == 2, 30)
    a.stop()
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

    def publish() -> None:
        for r in range(ROUNDS):
            for dev in range(WEARABLES):
                body = {"seq": r, "heart_rate": 72, "steps": r, "worn": True}
                pub.publish(f"community/y/wearable/wz-{dev}/telemetry", json.dumps(body))

    t = threading.Thread(target=publish)
    t.start()
    wait_for(lambda: len(keys(data["a"])) >= total // 5, 120)
    assert a.proc is not None
    os.killpg(a.proc.pid, signal.SIGSTOP)
    try:
        wait_for(lambda: slots(b)["telemetry"] == [0, 1, 2, 3] and slots(b)["urgent"] == [0, 1], 60)
        # b's sessions connected: the broker closed a's (session takeover by client id)
        wait_for(lambda: b.health()["status"] == "ok", 60)
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
    wait_for(lambda: a.health()["status"] == "ok" and b.health()["status"] == "ok", 60)
    # ... before its paho loops reconnected: no session was taken back from b (the broker
    # logs each takeover by client id), and the share b gave back was handed over cleanly
    with broker_log.open("rb") as f:
        f.seek(woke)
        assert b"closing old connection" not in f.read()
    wait_for(lambda: len(set(keys(data["a"])) | set(keys(data["b"]))) == total, 120)
    in_a, in_b = keys(data["a"]), keys(data["b"])
    assert len(in_a) == len(set(in_a)) and len(in_b) == len(set(in_b))  # once per journal
    print(f"\nzombie: in both journals {len(set(in_a) & set(in_b))} of {total}")
    a.stop()
    b.stop()
