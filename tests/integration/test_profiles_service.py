"""Device profiles end to end (issue 14): Zigbee2MQTT and Hikvision messages published by their
bridges' accounts through the real Mosquitto to the real service raise the same alerts as the
native devices' messages do; on both stores."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from devtools.broker import Broker
from devtools.launch import ServiceProcess
from tests.mqtt import Publisher, all_ok, wait_for
from tests.stores import Stores

pytestmark = pytest.mark.network

SMOKE_ON = {"smoke": True, "battery": 97, "tamper": False, "battery_low": False, "linkquality": 120}
SMOKE_OFF = {**SMOKE_ON, "smoke": False}


@pytest.fixture
def service(broker: Broker, tmp_path: Path, stores: Stores) -> Iterator[ServiceProcess]:
    """The service with the shipped profiles (the default); on PostgreSQL with its default
    two urgent session slots, of which slot 0 alone reads the vendors' topics."""
    svc = ServiceProcess(tmp_path / "service", broker, **stores.settings).start()
    yield svc
    svc.stop()


def bridge(broker: Broker, tree: str) -> Publisher:
    """The vendor's bridge, with its own account (made from the shipped profiles)."""
    name = f"bridge.{tree}"
    return Publisher(broker, client_id=name, access=broker.access(name))


def alerts(svc: ServiceProcess, device_id: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = svc.get(f"/api/alerts?device_id={device_id}")["items"]
    return items


def shape(alert: dict[str, Any]) -> tuple[Any, ...]:
    """What staff see of an alert, without which device raised it."""
    return tuple(alert[k] for k in ("rule_id", "severity", "status", "summary"))


def readings(stores: Stores, data_dir: Path, device_id: str) -> list[str | None]:
    """The events of the device's readings in the journal (None: telemetry), oldest first."""
    query = f"SELECT event FROM readings WHERE device_id = '{device_id}' ORDER BY id"
    return [e for (e,) in stores.journal_rows(data_dir, query)]


def test_zigbee2mqtt_smoke_sos_and_contact_raise_the_alerts_native_devices_raise(
    broker: Broker, service: ServiceProcess, tmp_path: Path, stores: Stores
) -> None:
    z2m, native = bridge(broker, "zigbee2mqtt"), Publisher(broker)
    try:
        z2m.publish("zigbee2mqtt/smoke/sd-z1", json.dumps(SMOKE_ON))
        z2m.publish("zigbee2mqtt/sos/wr-z1", json.dumps({"action": "emergency", "battery": 90}))
        z2m.publish("zigbee2mqtt/door/gt-z1", json.dumps({"contact": False, "battery": 100}))
        native.publish("community/y/smoke/sd-n1/event", json.dumps({"event": "alarm"}))
        native.publish("community/y/wearable/wr-n1/event", json.dumps({"event": "sos"}))
        native.publish("community/y/gate/gt-n1/event", json.dumps({"event": "forced"}))
        z2m.wait_acked()
        native.wait_acked()
        assert z2m.refused == 0, "the bridge's account may write its tree"
        for vendor, own in (("sd-z1", "sd-n1"), ("wr-z1", "wr-n1"), ("gt-z1", "gt-n1")):
            wait_for(lambda v=vendor, o=own: alerts(service, v) and alerts(service, o), timeout=30)
            (a,), (b,) = alerts(service, vendor), alerts(service, own)
            assert shape(a) == shape(b)
        assert [a["rule_id"] for d in ("sd-z1", "wr-z1", "gt-z1") for a in alerts(service, d)] == [
            "smoke_alarm",
            "wearable_sos",
            "gate_forced",
        ]

        # Zigbee2MQTT repeats the whole state in every report: no second alarm, one alert;
        # smoke turning false clears it, as a native alarm_clear does.
        z2m.publish("zigbee2mqtt/smoke/sd-z1", json.dumps({**SMOKE_ON, "battery": 96}))
        z2m.publish("zigbee2mqtt/smoke/sd-z1", json.dumps(SMOKE_OFF))
        native.publish("community/y/smoke/sd-n1/event", json.dumps({"event": "alarm_clear"}))
        z2m.wait_acked()
        native.wait_acked()
        for device in ("sd-z1", "sd-n1"):
            wait_for(lambda d=device: alerts(service, d)[0]["status"] == "resolved", timeout=30)
            assert len(alerts(service, device)) == 1
        data = tmp_path / "service"
        assert readings(stores, data, "sd-z1") == [None, "alarm", None, None, "alarm_clear"]
        # one vendor message, several readings: each message committed (and acknowledged) once
        assert service.health()["messages_committed"] == 9
    finally:
        z2m.close()
        native.close()


def test_availability_bad_vendor_payloads_and_a_gate_controller(
    broker: Broker, service: ServiceProcess
) -> None:
    z2m, hik = bridge(broker, "zigbee2mqtt"), bridge(broker, "hikvision")
    try:
        z2m.publish("zigbee2mqtt/smoke/sd-z2/availability", json.dumps({"state": "online"}))
        z2m.wait_acked()
        wait_for(lambda: service.get("/api/devices/sd-z2")["online"] is True, timeout=30)
        z2m.publish("zigbee2mqtt/smoke/sd-z2/availability", "offline")  # the legacy plain form
        z2m.wait_acked()
        wait_for(lambda: service.get("/api/devices/sd-z2")["online"] is False, timeout=30)

        # Bad vendor payloads are counted dead letters keeping the vendor's topic; never a crash.
        z2m.publish("zigbee2mqtt/smoke/sd-z2", json.dumps({"smoke": "yes"}))
        z2m.publish("zigbee2mqtt/smoke/sd-z2", b"\xff\xfe")
        z2m.publish("zigbee2mqtt/smoke/sd-z2", json.dumps({"battery": 150}))
        z2m.publish("zigbee2mqtt/smoke/bad id", json.dumps(SMOKE_ON))
        # a Zigbee2MQTT name with one level more (smoke/3-1/SD-201) is seen, not missed
        z2m.publish("zigbee2mqtt/smoke/3-1/SD-201", json.dumps(SMOKE_ON))
        z2m.wait_acked()
        wait_for(lambda: service.get("/api/dead-letters/counts")["total"] >= 6, timeout=30)
        letters = service.get("/api/dead-letters?limit=10")["items"]
        assert sorted((d["topic"], d["reason"]) for d in letters) == [
            ("zigbee2mqtt/smoke/3-1/SD-201", "unknown_topic"),
            ("zigbee2mqtt/smoke/bad id", "unknown_topic"),
            ("zigbee2mqtt/smoke/bad id", "unknown_topic"),
            ("zigbee2mqtt/smoke/sd-z2", "bad_utf8"),
            ("zigbee2mqtt/smoke/sd-z2", "out_of_range"),
            ("zigbee2mqtt/smoke/sd-z2", "wrong_type"),
        ]
        assert all("z2m_smoke" in d["detail"] or "no profile" in d["detail"] for d in letters)

        # A Hikvision access controller's event codes: 5/27 is the door forced open.
        event = {
            "ipAddress": "10.0.3.21",
            "dateTime": datetime.now(timezone(timedelta(hours=8))).isoformat(timespec="seconds"),
            "eventType": "AccessControllerEvent",
            "AccessControllerEvent": {
                "deviceName": "gt-h1",
                "majorEventType": 5,
                "subEventType": 27,
                "serialNo": 4127,
            },
        }
        hik.publish("hikvision/gt-h1/event", json.dumps(event))
        hik.wait_acked()
        wait_for(lambda: alerts(service, "gt-h1"), timeout=30)
        assert [a["rule_id"] for a in alerts(service, "gt-h1")] == ["gate_forced"]
        assert service.health()["status"] == "ok"
    finally:
        z2m.close()
        hik.close()


def test_a_bridge_cannot_speak_for_a_native_detector_and_clear_its_fire_alarm(
    broker: Broker, tmp_path: Path, stores: Stores
) -> None:
    """The review's case: Zigbee2MQTT may translate any name, so a Zigbee device named
    smoke/<a native detector's id> reporting smoke:false would be an alarm_clear resolving a
    real fire alarm. Each device id belongs to one way in (the registry's ``via``): that
    message is a dead letter saying how the detector is registered, and its alarm goes on
    firing; a Zigbee detector registered via the profile works as before and has no broker
    account of its own."""
    from devtools.broker import try_connect
    from ingest.access import BrokerAccess, CredentialsFile
    from registry import Building, Device, Registry, write_registry

    reg = tmp_path / "registry"
    write_registry(
        Registry(
            "y",
            buildings=[Building(building="B01", compound="C01")],
            devices=[
                Device(device_id="sd-n1", kind="smoke", compound="C01", building="B01"),
                Device(
                    device_id="sd-z1",
                    kind="smoke",
                    compound="C01",
                    building="B01",
                    via="z2m_smoke",
                ),
            ],
        ),
        reg,
    )
    z2m = bridge(broker, "zigbee2mqtt")  # accounts made before the service rewrites them
    svc = ServiceProcess(
        tmp_path / "service",
        broker,
        registry=reg,
        broker_accounts_dir=broker.auth_dir,
        broker_pid_file=broker.pid_file,
        **stores.settings,
    ).start()
    try:
        creds = CredentialsFile.load(broker.auth_dir / "credentials.json")  # the service's
        assert "sd-n1" in creds.devices and "sd-z1" not in creds.devices
        own = BrokerAccess("sd-n1", creds.devices["sd-n1"])
        wait_for(lambda: try_connect(broker.host, broker.port, own) == "Success", timeout=30)
        detector = Publisher(broker, "sd-n1", access=own)
        try:
            detector.publish("community/y/smoke/sd-n1/event", json.dumps({"event": "alarm"}))
            detector.wait_acked()
            assert detector.refused == 0
        finally:
            detector.close()
        wait_for(lambda: alerts(svc, "sd-n1"), timeout=30)

        z2m.publish("zigbee2mqtt/smoke/sd-n1", json.dumps(SMOKE_OFF))
        z2m.publish("zigbee2mqtt/smoke/sd-z1", json.dumps(SMOKE_ON))
        z2m.wait_acked()
        wait_for(lambda: alerts(svc, "sd-z1"), timeout=30)
        # its battery reading and its alarm_clear: each a dead letter, nothing journaled
        wait_for(lambda: svc.get("/api/dead-letters/counts")["total"] >= 2, timeout=30)
        letters = svc.get("/api/dead-letters?limit=10")["items"]
        assert {(d["topic"], d["reason"], d["detail"]) for d in letters} == {
            (
                "zigbee2mqtt/smoke/sd-n1",
                "unknown_topic",
                "profile z2m_smoke: device sd-n1 is registered to report native MQTT (its own"
                " broker account), not via z2m_smoke",
            )
        }
        (fire,) = alerts(svc, "sd-n1")
        assert (fire["rule_id"], fire["status"]) == ("smoke_alarm", "firing")
        assert readings(stores, tmp_path / "service", "sd-n1") == ["alarm"]
        (zigbee,) = alerts(svc, "sd-z1")
        assert shape(zigbee)[:3] == ("smoke_alarm", fire["severity"], "firing")

        # the Zigbee detector's own smoke clearing still resolves its own alarm
        z2m.publish("zigbee2mqtt/smoke/sd-z1", json.dumps(SMOKE_OFF))
        z2m.wait_acked()
        wait_for(lambda: alerts(svc, "sd-z1")[0]["status"] == "resolved", timeout=30)
        assert alerts(svc, "sd-n1")[0]["status"] == "firing"
    finally:
        z2m.close()
        svc.stop()


def test_two_instances_raise_every_smoke_alarm_of_a_zigbee_detector_in_order(
    broker: Broker, pg_url: str, tmp_path: Path
) -> None:
    """Zigbee2MQTT repeats the detector's whole state in every report; the alarm is the edge
    from smoke false to true, found by comparing a report with the last one. Read through two
    instances' urgent slots on one shared subscription, each instance saw half the reports: a
    smoke on, off, on, off, on, off raised one alarm, not three, and back-to-back reports could
    be journaled in the other order. Now one slot reads the vendors' topics."""
    common: dict[str, Any] = {
        "process_group": True,
        "database_url": pg_url,
        "session_slots": 2,
        "urgent_slots": 2,
        "slot_lease_ttl_s": 5,  # renewed every 1.7 s: a slow heartbeat under load is no lapse
        "partition_lease_ttl_s": 5,
    }
    a = ServiceProcess(tmp_path / "a", broker, instance_id="a", **common).start()
    b = ServiceProcess(tmp_path / "b", broker, instance_id="b", **common).start()
    z2m = bridge(broker, "zigbee2mqtt")
    try:
        wait_for(lambda: len(b.health()["session_slots"]["urgent"]) == 1, 60)
        wait_for(lambda: all_ok(a, b), 60)
        for round_ in range(3):
            z2m.publish("zigbee2mqtt/smoke/sd-z1", json.dumps(SMOKE_ON))
            z2m.wait_acked()
            wait_for(
                lambda n=round_: (
                    [x["status"] for x in alerts(a, "sd-z1")].count("firing") == 1
                    and len(alerts(a, "sd-z1")) == n + 1
                ),
                30,
            )
            z2m.publish("zigbee2mqtt/smoke/sd-z1", json.dumps(SMOKE_OFF))
            z2m.wait_acked()
            wait_for(lambda: all(x["status"] == "resolved" for x in alerts(a, "sd-z1")), 30)
        assert len(alerts(b, "sd-z1")) == 3  # the other instance's console says the same
        stores = Stores(pg_url)
        events = [e for e in readings(stores, tmp_path / "a", "sd-z1") if e is not None]
        assert events == ["alarm", "alarm_clear"] * 3
    finally:
        z2m.close()
        a.stop()
        b.stop()


AIR = """\
profiles:
  - id: z2m_air
    description: a Zigbee2MQTT detector's battery, read as telemetry
    kind: smoke
    mqtt:
      topic: zigbee2mqtt/air/{device}
      urgent: false
    time: {field: last_seen}
    metrics:
      battery: {field: battery}
"""


@pytest.mark.parametrize("in_main", [False, True], ids=["ingest-apart", "ingest-in-main"])
def test_a_telemetry_profiles_topics_are_read_in_every_layout(
    broker: Broker, tmp_path: Path, stores: Stores, in_main: bool
) -> None:
    """A profile with ``urgent: false`` is read on a telemetry session: by the main process, by
    the one ingest process apart (the default) or by telemetry slot 0 on PostgreSQL. Read by no
    process, as it was with ingest processes (they took it for slot 0's), its messages were
    never stored, and nothing said so."""
    (tmp_path / "air.yaml").write_text(AIR)
    z2m = bridge(broker, "zigbee2mqtt")  # accounts made before the service rewrites them
    svc = ServiceProcess(
        tmp_path / "service",
        broker,
        **stores.settings,
        profiles=f"shipped,{tmp_path / 'air.yaml'}",
        ingest_separate=not in_main,
        # the broker's ACL made with these profiles: the service's account reads their topics
        broker_accounts_dir=broker.auth_dir,
        broker_pid_file=broker.pid_file,
    ).start()
    try:
        for battery in (90, 89, 88):
            z2m.publish("zigbee2mqtt/air/sd-a1", json.dumps({"battery": battery}))
        z2m.wait_acked()
        assert z2m.refused == 0
        wait_for(lambda: readings(stores, tmp_path / "service", "sd-a1") == [None] * 3, 60)
    finally:
        z2m.close()
        svc.stop()
