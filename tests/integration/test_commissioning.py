"""Commissioning and spreadsheet imports against the real service process, the real Mosquitto
(with the accounts the service keeps) and a real notification receiver: a device that reports
but is not in the registry is listed for operators with what it sent, is registered to a place
with one request, and from then on its alerts are paged to its wearer's caretaker and it
connects with its own account; a workbook's import is previewed as a diff and applied, and the
devices it adds alert as any other. Every wait has a deadline; nothing asserts on timing."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from devtools.broker import Broker, try_connect
from devtools.launch import ServiceProcess
from devtools.receiver import Receiver
from ingest.access import BrokerAccess
from registry import Building, Device, Registry, Resident, Staff, write_registry
from tests.mqtt import Publisher, wait_for
from tests.stores import Stores
from tests.xlsx import workbook

pytestmark = pytest.mark.network


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    rx = Receiver(port=0).start()
    yield rx
    rx.stop()


def community(rx: Receiver) -> Registry:
    """Resident r-1 of B01 with caretaker care-1 (always on call), an operator, a manager."""
    url = f"json://127.0.0.1:{rx.port}/notify/"
    return Registry(
        "y",
        buildings=[Building(building="B01", compound="C01")],
        devices=[
            Device(
                device_id="wr-1",
                kind="wearable",
                compound="C01",
                building="B01",
                unit="1-1-101",
                resident_id="r-1",
            ),
        ],
        residents=[
            Resident(resident_id="r-1", building="B01", unit="1-1-101", caretakers=("care-1",))
        ],
        staff=[
            Staff(
                staff_id="care-1",
                name="care-1",
                role="caretaker",
                channels=(url + "care-1",),
                buildings=("B01",),
            ),
            Staff(staff_id="op-1", name="op-1", role="operator"),
            Staff(staff_id="mgr-1", name="mgr-1", role="manager"),
        ],
    )


@pytest.fixture
def running(
    tmp_path: Path, broker: Broker, receiver: Receiver, stores: Stores
) -> Iterator[tuple[ServiceProcess, Publisher]]:
    reg_dir = tmp_path / "registry"
    write_registry(community(receiver), reg_dir)
    pub = Publisher(broker)  # a test account, made before the service rewrites the accounts
    svc = ServiceProcess(
        tmp_path / "service",
        broker,
        registry=reg_dir,
        broker_accounts_dir=broker.auth_dir,
        broker_pid_file=broker.pid_file,
        **stores.settings,
    ).start()
    try:
        yield svc, pub
    finally:
        try:
            svc.stop()
        finally:
            pub.close()


def send(pub: Publisher, device: str, stream: str, **body: Any) -> None:
    pub.publish(f"community/y/wearable/{device}/{stream}", json.dumps(body))
    pub.wait_acked()


def sos_pages(rx: Receiver, recipient: str) -> int:
    return sum(1 for m in rx.messages(recipient) if "SOS" in m.title + m.message)


def unregistered(svc: ServiceProcess, token: str) -> dict[str, dict[str, Any]]:
    return {d["device_id"]: d for d in svc.get("/api/devices/unregistered", token=token)["items"]}


def test_an_operator_sees_an_unregistered_device_registers_it_and_its_alerts_are_paged(
    running: tuple[ServiceProcess, Publisher], receiver: Receiver, broker: Broker
) -> None:
    svc, pub = running
    operator = svc.token_for("op-1")
    send(pub, "wr-new", "telemetry", heart_rate=71, battery=64, worn=True, seq=1)
    send(pub, "wr-new", "status", state="online", fw="2.4.1")

    wait_for(lambda: "wr-new" in unregistered(svc, operator))
    wait_for(lambda: unregistered(svc, operator)["wr-new"]["messages"] == 2)
    # its battery and last seen are written up to a second after its readings (ingest/seen.py),
    # by the process that took the telemetry: on PostgreSQL a session slot's, not the status's
    wait_for(lambda: unregistered(svc, operator)["wr-new"]["battery"] == 64)
    seen = unregistered(svc, operator)["wr-new"]
    assert seen["kind"] == "wearable" and seen["first_seen"] and seen["last_seen"]
    last = seen["last"]
    assert last["stream"] in ("telemetry", "status")
    # what it sent, less its wearer's body: nobody is its caretaker yet
    shown = last["values"]
    # (not "71" anywhere: a timestamp's microseconds may hold it)
    assert "heart_rate" not in shown and 71 not in shown.values()
    if last["stream"] == "telemetry":  # said to be withheld, by name only
        assert last["withheld"] == ["heart_rate"]
    assert shown.get("battery") == 64 or shown.get("fw") == "2.4.1"

    # one request registers it to its wearer
    place = {"compound": "C01", "building": "B01", "unit": "1-1-101", "resident_id": "r-1",
             "name": "r-1's new watch"}  # fmt: skip
    r = svc.request("POST", "/api/devices/unregistered/wr-new/register", json=place, token=operator)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["changes"] == "devices +1 -0 ~0"
    assert body["diff"]["devices"]["added_records"]["wr-new"]["resident_id"] == "r-1"
    assert body["broker"]["accounts"] == "updated"
    password = body["broker"]["passwords"]["wr-new"]
    assert "wr-new" not in unregistered(svc, operator)
    assert svc.get("/api/devices/wr-new")["registered"] is True
    (entry,) = svc.get("/api/audit?action=device.register")["items"]
    assert entry["actor"] == "op-1" and entry["target"] == "wr-new"

    # it connects with its own account now, and its SOS is paged to the wearer's caretaker
    access = BrokerAccess("wr-new", password)
    wait_for(lambda: try_connect(broker.host, broker.port, access) == "Success", timeout=30)
    own = Publisher(broker, "wr-new", access=access)
    try:
        send(own, "wr-new", "event", event="sos", seq=2)
        assert own.refused == 0
    finally:
        own.close()
    receiver.wait_for(lambda _ms: sos_pages(receiver, "care-1") >= 1)
    (alert,) = svc.get("/api/alerts?device_id=wr-new&rule_id=wearable_sos")["items"]
    assert alert["labels"]["building"] == "B01" and alert["labels"]["unit"] == "1-1-101"
    # the caretaker sees it among their resident's devices, health readings and all — from
    # when it became hers (README "A wearable's history belongs to its wearer"): what it sent
    # before it was registered to her is not shown as hers
    own = Publisher(broker, "wr-new", access=access)
    try:
        send(own, "wr-new", "telemetry", heart_rate=73, battery=63, worn=True, seq=3)
    finally:
        own.close()
    care = svc.token_for("care-1")
    readings = svc.get("/api/devices/wr-new/readings", token=care)["items"]
    rates = [r["values"].get("heart_rate") for r in readings]
    assert 73 in rates and 71 not in rates


def test_a_workbook_import_is_previewed_applied_and_its_devices_alert(
    running: tuple[ServiceProcess, Publisher], receiver: Receiver
) -> None:
    svc, pub = running
    manager = svc.token_for("mgr-1")
    book = workbook(
        设备=[
            ["设备编号", "类型", "小区", "楼栋", "户号", "居民编号", "名称"],
            ["wr-1", "手环", "C01", "B01", "1-1-101", "r-1", None],
            ["wr-5", "手环", "C01", "B01", "1-1-101", "r-1", "spare watch"],
        ],
        说明=[["每个设备一行"]],
    )

    def post(**params: str) -> Any:
        return svc.request(
            "POST",
            "/api/registry/import",
            params={"name": "台账.xlsx", **params},
            content=book,
            headers={"Content-Type": "application/octet-stream"},
            token=manager,
        )

    preview = post()
    assert preview.status_code == 200, preview.text
    shown = preview.json()
    assert shown["applied"] is False
    assert shown["text"].splitlines() == [
        "devices: 1 added, 0 removed, 0 changed",
        "  + device wr-5 (kind=wearable, compound=C01, building=B01, unit=1-1-101,"
        " resident_id=r-1, name=spare watch)",
    ]
    assert "wr-5" not in {d["device_id"] for d in svc.get("/api/devices")["items"]}

    applied = post(apply=shown["version"])
    assert applied.status_code == 200, applied.text
    assert applied.json()["applied"] is True
    assert applied.json()["broker"]["passwords"].keys() == {"wr-5"}
    (entry,) = svc.get("/api/audit?action=registry.import")["items"]
    assert entry["actor"] == "mgr-1" and entry["detail"]["changes"] == "devices +1 -0 ~0"

    send(pub, "wr-5", "event", event="sos", seq=1)
    receiver.wait_for(lambda _ms: sos_pages(receiver, "care-1") >= 1)
    (alert,) = svc.get("/api/alerts?device_id=wr-5&rule_id=wearable_sos")["items"]
    assert alert["labels"]["unit"] == "1-1-101"

    # applying the same preview again: the registry is no longer the one it was made against
    assert post(apply=shown["version"]).status_code == 409


def test_a_spreadsheet_imported_with_the_command_is_taken_on_reload(
    running: tuple[ServiceProcess, Publisher], receiver: Receiver, tmp_path: Path
) -> None:
    svc, pub = running
    sheet = tmp_path / "devices.csv"
    sheet.write_text(
        "设备编号,类型,小区,楼栋,户号,居民编号\n"
        "wr-1,手环,C01,B01,1-1-101,r-1\n"
        "wr-7,手环,C01,B01,1-1-101,r-1\n",
        encoding="gbk",  # as Chinese Excel saves it
    )

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "jiayuan.cli", "registry", "import", str(sheet),
             "--registry", str(tmp_path / "registry"), *args],
            capture_output=True, text=True, check=False, timeout=60,
        )  # fmt: skip

    shown = cli()
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.splitlines()[:2] == [
        "devices: 1 added, 0 removed, 0 changed",
        "  + device wr-7 (kind=wearable, compound=C01, building=B01, unit=1-1-101,"
        " resident_id=r-1)",
    ]
    applied = cli("--apply")
    assert applied.returncode == 0, applied.stderr
    assert "a running service takes it on SIGHUP or POST /api/registry/reload" in applied.stdout

    code, body = svc.post("/api/registry/reload", {})
    assert code == 200, body
    assert body["changes"] == "devices +1 -0 ~0"
    send(pub, "wr-7", "event", event="sos", seq=1)
    receiver.wait_for(lambda _ms: sos_pages(receiver, "care-1") >= 1)
    (alert,) = svc.get("/api/alerts?device_id=wr-7&rule_id=wearable_sos")["items"]
    assert alert["labels"]["unit"] == "1-1-101"


def test_a_device_first_heard_through_a_profile_is_registered_with_that_way_in(
    running: tuple[ServiceProcess, Publisher], broker: Broker
) -> None:
    """A Zigbee detector reports through Zigbee2MQTT's bridge before it is registered: the
    unregistered list says how it came (``via: z2m_smoke``), registering it keeps that way in
    (no broker account of its own is made), and its alarms come through the bridge as before."""
    svc, _ = running
    operator = svc.token_for("op-1")
    z2m = Publisher(
        broker, client_id="bridge.zigbee2mqtt", access=broker.access("bridge.zigbee2mqtt")
    )
    smoke = {"smoke": False, "battery": 97, "tamper": False, "battery_low": False}
    try:
        z2m.publish("zigbee2mqtt/smoke/sd-new", json.dumps(smoke))
        z2m.wait_acked()
        wait_for(lambda: "sd-new" in unregistered(svc, operator))
        assert unregistered(svc, operator)["sd-new"]["via"] == "z2m_smoke"

        place = {"compound": "C01", "building": "B01", "unit": "1-1-101"}
        r = svc.request(
            "POST", "/api/devices/unregistered/sd-new/register", json=place, token=operator
        )
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["diff"]["devices"]["added_records"]["sd-new"]["via"] == "z2m_smoke"
        assert body["broker"]["passwords"] == {}  # reports through the bridge: no account
        assert svc.get("/api/registry/devices/sd-new")["via"] == "z2m_smoke"

        z2m.publish("zigbee2mqtt/smoke/sd-new", json.dumps({**smoke, "smoke": True}))
        z2m.wait_acked()
        wait_for(lambda: svc.get("/api/alerts?device_id=sd-new&rule_id=smoke_alarm")["items"])
        assert svc.get("/api/dead-letters/counts")["total"] == 0
    finally:
        z2m.close()
