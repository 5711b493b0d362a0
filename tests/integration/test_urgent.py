"""Urgent events never queue behind telemetry (issue 9): the service was down, the broker
queued a backlog of readings for it; when it returns, a fall published while that backlog
drains becomes an alert before the backlog is through — the real broker, the real service."""

from __future__ import annotations

import json
import time
from datetime import datetime
from pathlib import Path

import pytest

from devtools.broker import Broker
from devtools.launch import ServiceProcess
from tests.mqtt import Publisher, publish_fast, wait_for
from tests.stores import Stores

pytestmark = pytest.mark.network

BACKLOG = 30_000
TELEMETRY = "community/y/wearable/wb-1/telemetry"
FALL = "community/y/wearable/wr-7/event"


def journaled(data_dir: Path, device_id: str, stores: Stores | None = None) -> int:
    """Readings of ``device_id`` in the journal (SQLite's file, or ``stores``' database)."""
    assert device_id.replace("-", "").isalnum()  # in the SQL text below
    query = f"SELECT count(*) FROM readings WHERE device_id = '{device_id}'"
    return (stores or Stores()).journal(data_dir, query)


def test_a_fall_published_during_a_backlog_drain_alerts_before_the_backlog_is_through(
    broker: Broker, tmp_path: Path, stores: Stores
) -> None:
    data = tmp_path / "service"
    fall = Publisher(broker, client_id="fall")  # accounts made before the broker is busy
    broker.test_access("backlog")
    svc = ServiceProcess(
        data, broker, **stores.settings
    ).start()  # both sessions exist and are subscribed
    svc.stop()  # the broker queues for them meanwhile
    publish_fast(
        broker,
        TELEMETRY,
        (json.dumps({"seq": i, "heart_rate": 70 + i % 20, "worn": True}) for i in range(BACKLOG)),
        "backlog",
    )
    svc = ServiceProcess(data, broker, http_port=svc.http_port, **stores.settings).start()
    try:
        wait_for(lambda: journaled(data, "wb-1", stores) > 0, timeout=60, interval=0.01)
        before = journaled(data, "wb-1", stores)
        assert before < BACKLOG, "the backlog drained before the fall could be published"
        fall.publish(FALL, json.dumps({"event": "fall", "seq": 1}))
        wait_for(lambda: journaled(data, "wb-1", stores) == BACKLOG, timeout=300, interval=0.01)
        through = time.time()  # the backlog seen whole (a few ms after its last commit)
        wait_for(lambda: bool(svc.get("/api/alerts?device_id=wr-7")["items"]), 60, 0.01)
        (alert,) = svc.get("/api/alerts?device_id=wr-7")["items"]  # once
        # Raised (the service's clock) before the backlog was through. Not the count read when
        # the API first showed the alert: that adds the API's and the poll's delays, which on a
        # loaded machine outlasted the rest of the drain.
        raised = datetime.fromisoformat(alert["raised_at"]).timestamp()
        assert raised < through, (
            f"the fall waited for the backlog: raised {raised - through:.3f} s after it was through"
        )
        assert (alert["rule_id"], alert["status"]) == ("wearable_fall", "firing")
        # (with session slots the ingest processes' counts come in their reports)
        wait_for(lambda: svc.health()["messages_committed"] == BACKLOG + 1, timeout=10)
    finally:
        svc.stop()
        fall.close()


def test_each_message_is_acknowledged_on_its_own_session_so_none_comes_again(
    broker: Broker, tmp_path: Path, stores: Stores
) -> None:
    """Packet ids are per session: a PUBACK sent on the wrong one would leave the message
    unacknowledged, and the broker would deliver it again after a restart."""
    data = tmp_path / "service"
    pub = Publisher(broker)
    svc = ServiceProcess(data, broker, **stores.settings).start()
    for i in range(300):
        pub.publish(TELEMETRY, json.dumps({"seq": i, "steps": i}))
        if i % 10 == 0:
            pub.publish(f"community/y/gate/gt-{i}/event", json.dumps({"seq": 1, "event": "closed"}))
    pub.wait_acked()
    wait_for(lambda: svc.health()["messages_committed"] == 330, timeout=60)
    svc.stop()
    svc = ServiceProcess(data, broker, http_port=svc.http_port, **stores.settings).start()
    try:
        # Each session delivers in order: once these arrive, anything redelivered has too.
        pub.publish(TELEMETRY, json.dumps({"seq": 1000, "steps": 1000}))
        pub.publish("community/y/gate/gt-x/event", json.dumps({"seq": 1, "event": "closed"}))
        pub.wait_acked()
        wait_for(
            lambda: journaled(data, "gt-x", stores) == 1 and journaled(data, "wb-1", stores) == 301
        )
        wait_for(lambda: svc.health()["messages_committed"] == 2, timeout=10)
    finally:
        svc.stop()
        pub.close()


def test_a_session_left_by_the_one_session_version_is_drained_then_narrowed_to_telemetry(
    broker: Broker, tmp_path: Path
) -> None:
    """Upgrading: the service's account holds the earlier version's session, subscribed to
    every reading topic, with events queued in it. Those are journaled (once); afterwards
    events come on the urgent session only, not twice."""
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion
    from paho.mqtt.packettypes import PacketTypes
    from paho.mqtt.properties import Properties

    old = mqtt.Client(callback_api_version=CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    broker.service_access(tls=False).apply(old)
    props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
    props.SessionExpiryInterval = 86_400
    old.connect(broker.host, broker.port, clean_start=False, properties=props)
    old.loop_start()
    subscribed = old.subscribe("community/+/+/+/+", qos=1)
    wait_for(lambda: old.is_connected() and subscribed[0] == 0)
    old.disconnect()
    old.loop_stop()
    pub = Publisher(broker)
    for i in range(5):  # queued for the old session only: the urgent one does not exist yet
        pub.publish(f"community/y/smoke/smk-{i}/event", json.dumps({"seq": 1, "event": "test"}))
        pub.publish(TELEMETRY, json.dumps({"seq": i, "steps": i}))
    pub.wait_acked()
    data = tmp_path / "service"
    svc = ServiceProcess(data, broker).start()
    try:
        wait_for(lambda: svc.health()["messages_committed"] == 10, timeout=60)
        assert [journaled(data, f"smk-{i}") for i in range(5)] == [1] * 5
        # No seq and no ts: nothing could tell two copies of it apart.
        pub.publish("community/y/smoke/smk-9/event", json.dumps({"event": "test"}))
        pub.publish(TELEMETRY, json.dumps({"seq": 99, "steps": 99}))  # after it, per session
        pub.wait_acked()
        wait_for(lambda: journaled(data, "smk-9") >= 1 and journaled(data, "wb-1") == 6)
        assert journaled(data, "smk-9") == 1
    finally:
        svc.stop()
        pub.close()
