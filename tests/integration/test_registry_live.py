"""The registry changed while the service runs — through the API and by reloading edited files —
against the real service process, the real Mosquitto (password file and ACL) and a real
notification receiver: who is paged, who may connect, what the rules evaluate and what the files
say all follow without a restart; a bad change is refused and changes nothing. Every wait has a
deadline; nothing asserts on timing."""

from __future__ import annotations

import json
import signal
import sys
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import pytest

from devtools.broker import Broker, try_connect
from devtools.launch import ServiceProcess
from devtools.receiver import Receiver
from ingest.access import BrokerAccess, CredentialsFile
from jiayuan.broker.accounts import CREDENTIALS
from jiayuan.registry_admin import BROKER_PROBLEM
from registry import (
    Building,
    Device,
    Registry,
    Resident,
    Shift,
    Staff,
    load_registry,
    write_registry,
)
from registry.models import Role
from rules.model import builtin_pack
from tests.mqtt import Publisher, wait_for
from tests.stores import Stores

pytestmark = pytest.mark.network

TZ = ZoneInfo("Asia/Shanghai")
DIP = """
rules:
  - id: spo2_dip
    kind: wearable
    type: threshold
    metric: spo2
    below: 90
    clear: 92
    override: spo2_dip
    severity: minor
    signal: supervisory
    route: caretaker
    summary: Blood oxygen dipped
"""
"""A rule without a duration, beside the pack: one reading decides."""


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    rx = Receiver(port=0).start()
    yield rx
    rx.stop()


def community(rx: Receiver) -> Registry:
    """Two residents of building B01 with caretakers care-1 (on duty another day of the week
    only) and care-2 (always on call), a guard, and their devices."""

    def url(sid: str) -> str:
        return f"json://127.0.0.1:{rx.port}/notify/{sid}"

    def wearable(n: int) -> Device:
        return Device(
            device_id=f"wr-{n}", kind="wearable", compound="C01", building="B01",
            unit=f"1-1-10{n}", resident_id=f"r-{n}",
        )  # fmt: skip

    def resident(n: int) -> Resident:
        return Resident(
            resident_id=f"r-{n}", building="B01", unit=f"1-1-10{n}", caretakers=("care-1", "care-2")
        )

    def staff(sid: str, role: Role, **kw: Any) -> Staff:
        return Staff(staff_id=sid, name=sid, role=role, channels=(url(sid),), **kw)

    another_day = (datetime.now(TZ).weekday() + 3) % 7
    return Registry(
        "y",
        buildings=[Building(building=b, compound="C01") for b in ("B01", "B02")],
        devices=[
            wearable(1),
            wearable(2),
            Device(device_id="smk-1", kind="smoke", compound="C01", building="B01", unit="1-1-101"),
        ],
        residents=[resident(1), resident(2)],
        staff=[
            staff("care-1", "caretaker", buildings=("B01",), shifts=(Shift(days=(another_day,)),)),
            staff("care-2", "caretaker", buildings=("B01",)),
            staff("guard-1", "security"),
            staff("mgr-1", "manager"),
        ],
    )


@pytest.fixture
def running(
    tmp_path: Path, broker: Broker, receiver: Receiver, stores: Stores
) -> Iterator[tuple[ServiceProcess, Path, Publisher]]:
    """The service over the registry directory, keeping the broker's accounts (its pid file
    reloads it); a publisher with a test-only account made before the service rewrites them."""
    reg_dir = tmp_path / "registry"
    write_registry(community(receiver), reg_dir)
    extra = tmp_path / "dip.yaml"
    extra.write_text(DIP)
    pub = Publisher(broker)
    svc = ServiceProcess(
        tmp_path / "service",
        broker,
        registry=reg_dir,
        rules=f"{builtin_pack()},{extra}",
        broker_accounts_dir=broker.auth_dir,
        broker_pid_file=broker.pid_file,
        **stores.settings,
    ).start()
    try:
        yield svc, reg_dir, pub
    finally:
        try:
            svc.stop()
        finally:
            pub.close()


def put(svc: ServiceProcess, path: str, body: Any, token: str | None = None) -> tuple[int, Any]:
    r = svc.request("PUT", path, json=body, token=token)
    return r.status_code, r.json()


def sos(pub: Publisher, device: str, seq: int = 1) -> None:
    pub.publish(f"community/y/wearable/{device}/event", json.dumps({"event": "sos", "seq": seq}))
    pub.wait_acked()


def alerts(svc: ServiceProcess, device: str, rule: str = "wearable_sos") -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = svc.get(f"/api/alerts?device_id={device}&rule_id={rule}")["items"]
    return items


def audit(svc: ServiceProcess) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = svc.get("/api/audit?action=registry.&limit=100")["items"]
    return items


def test_a_shift_added_through_the_api_changes_who_is_paged_for_the_next_alert(
    running: tuple[ServiceProcess, Path, Publisher], receiver: Receiver
) -> None:
    svc, reg_dir, pub = running
    sos(pub, "wr-1")  # care-1 is off duty today: their colleague is the first on duty
    receiver.wait_for(lambda ms: any(m.recipient == "care-2" for m in ms))
    assert receiver.messages("care-1") == []

    code, body = svc.post(
        "/api/registry/staff/care-1/shifts", {"start": "00:00", "end": "23:59:59"}
    )
    assert code == 201, body
    assert body["changes"] == "staff +0 -0 ~1"
    (changed,) = body["diff"]["staff"]["changed"]
    assert changed["id"] == "care-1" and changed["fields"][0]["field"] == "shifts"

    sos(pub, "wr-2")  # no restart: the next alert finds care-1 on duty, first
    receiver.wait_for(lambda ms: any(m.recipient == "care-1" for m in ms))
    # the files say the same: a restart would page the same person
    on_file = load_registry(reg_dir)
    assert len(on_file.staff["care-1"].shifts) == 2
    assert svc.get("/api/registry/staff/care-1/shifts")[1]["start"] == "00:00:00"
    (entry,) = [e for e in audit(svc) if e["action"] == "registry.shift_add"]
    assert entry["actor"] == "admin-token" and entry["target"] == "care-1"
    assert entry["detail"]["changes"] == "staff +0 -0 ~1"

    # a manager may change the roster, a caretaker may not
    caretaker = svc.token_for("care-2")
    code, _ = put(svc, "/api/registry/staff/care-2/shifts", [], token=caretaker)
    assert code == 403
    code, body = put(svc, "/api/registry/staff/care-2/shifts", [], token=svc.token_for("mgr-1"))
    assert code == 200 and body["changes"] == "no changes"

    # scopes follow at the next request, with the token already held
    def mine() -> set[str]:
        return {r["resident_id"] for r in svc.get("/api/residents", token=caretaker)["items"]}

    assert mine() == {"r-1", "r-2"}
    r3 = {"resident_id": "r-3", "building": "B02", "unit": "2-1-101", "caretakers": ["care-2"]}
    assert put(svc, "/api/registry/residents/r-3", r3)[0] == 200
    assert mine() == {"r-1", "r-2", "r-3"}
    guard = svc.token_for("guard-1")
    assert svc.request("GET", "/api/alerts", token=guard).status_code == 200
    assert svc.request("DELETE", "/api/registry/staff/guard-1").status_code == 200
    assert svc.request("GET", "/api/alerts", token=guard).status_code == 401


def test_a_device_added_through_the_api_connects_within_seconds_and_a_retired_one_cannot(
    running: tuple[ServiceProcess, Path, Publisher], broker: Broker
) -> None:
    svc, reg_dir, pub = running
    device = {"device_id": "wr-9", "kind": "wearable", "compound": "C01", "building": "B01",
              "unit": "1-1-109"}  # fmt: skip
    code, body = put(svc, "/api/registry/devices/wr-9", device)
    assert code == 200, body
    assert body["action"] == "registry.device_add" and body["broker"]["accounts"] == "updated"
    password = body["broker"]["passwords"]["wr-9"]
    assert CredentialsFile.load(broker.auth_dir / CREDENTIALS).devices["wr-9"] == password
    access = BrokerAccess("wr-9", password)
    wait_for(lambda: try_connect(broker.host, broker.port, access) == "Success", timeout=30)
    assert "password" not in json.dumps(audit(svc))  # the password is in no audit entry

    # it publishes with its own account; the service places it where the registry says
    own = Publisher(broker, "wr-9", access=access)
    try:
        sos(own, "wr-9")
        assert own.refused == 0
    finally:
        own.close()
    wait_for(lambda: len(alerts(svc, "wr-9")) == 1)
    first = alerts(svc, "wr-9")[0]
    assert first["labels"]["building"] == "B01"

    # moved to B02: its next alert is labelled (and so routed) by its new place
    code, body = put(svc, "/api/registry/devices/wr-9", device | {"building": "B02"})
    assert code == 200 and body["action"] == "registry.device_change"
    assert body["diff"]["devices"]["changed"][0]["fields"] == [
        {"field": "building", "before": "B01", "after": "B02"}
    ]
    code, _ = svc.post(f"/api/alerts/{first['id']}/resolve", {})
    assert code == 200
    sos(pub, "wr-9", seq=2)
    wait_for(lambda: len(alerts(svc, "wr-9")) == 2)
    assert {a["labels"]["building"] for a in alerts(svc, "wr-9")} == {"B01", "B02"}

    # retired: its account goes at once; its open alert stays, visible and resolvable
    r = svc.request("DELETE", "/api/registry/devices/wr-9")
    assert r.status_code == 200 and r.json()["diff"]["devices"]["removed"] == ["wr-9"]
    wait_for(lambda: try_connect(broker.host, broker.port, access) == "Not authorized", timeout=30)
    assert "wr-9" not in CredentialsFile.load(broker.auth_dir / CREDENTIALS).devices
    assert "wr-9" not in load_registry(reg_dir).devices
    (still,) = [a for a in alerts(svc, "wr-9") if a["status"] == "firing"]
    code, resolved = svc.post(f"/api/alerts/{still['id']}/resolve", {})
    assert code == 200 and resolved["status"] == "resolved"
    # the other devices and the service itself keep their accounts
    broker.reload()
    assert try_connect(broker.host, broker.port, broker.device_access("wr-1")) == "Success"
    assert svc.health()["mqtt_connected"]
    assert svc.get("/healthz")["registry"]["broker_problem"] is None


def test_a_threshold_override_changed_through_the_api_changes_the_next_evaluation(
    running: tuple[ServiceProcess, Path, Publisher],
) -> None:
    svc, _, pub = running

    def spo2(value: int, seq: int) -> None:
        pub.publish("community/y/wearable/wr-1/telemetry", json.dumps({"spo2": value, "seq": seq}))
        pub.wait_acked()
        wait_for(lambda: svc.health()["rules_worker"]["behind"] == 0 and evaluated() >= seq)

    def evaluated() -> int:
        n: int = svc.health()["rules_worker"]["evaluated"]
        return n

    resident = svc.get("/api/registry/residents/r-1")
    spo2(93, 1)
    assert alerts(svc, "wr-1", "spo2_dip") == []
    code, body = put(
        svc, "/api/registry/residents/r-1", resident | {"thresholds": {"spo2_dip": 95}}
    )
    assert code == 200 and body["changes"] == "residents +0 -0 ~1"
    spo2(93, 2)
    wait_for(lambda: len(alerts(svc, "wr-1", "spo2_dip")) == 1)


def test_an_edited_file_is_taken_on_reload_or_sighup_and_a_bad_file_or_body_changes_nothing(
    running: tuple[ServiceProcess, Path, Publisher], receiver: Receiver
) -> None:
    svc, reg_dir, _ = running
    before = community(receiver)
    devices = reg_dir / "devices.yaml"

    # an edited file, reloaded through the API
    edited = Registry(
        "y",
        buildings=list(before.buildings.values()),
        devices=[*before.devices.values(), Device(device_id="gt-7", kind="gate", compound="C01")],
        residents=list(before.residents.values()),
        staff=list(before.staff.values()),
    )
    write_registry(edited, reg_dir)
    code, body = svc.post("/api/registry/reload", {})
    assert code == 200, body
    assert body["diff"]["devices"]["added"] == ["gt-7"] and body["broker"]["accounts"] == "updated"
    assert svc.get("/api/registry/devices/gt-7")["kind"] == "gate"

    # ... and by SIGHUP to `jiayuan run`
    text = devices.read_text()
    devices.write_text(text.replace("device_id: gt-7", "device_id: gt-8"))
    assert svc.proc is not None
    svc.proc.send_signal(signal.SIGHUP)
    wait_for(lambda: svc.request("GET", "/api/registry/devices/gt-8").status_code == 200)
    assert svc.request("GET", "/api/registry/devices/gt-7").status_code == 404

    # a bad file: refused with the file, line and field named; the running registry stays
    good = devices.read_text()
    devices.write_text(good.replace("building: B01", "building: B99", 1))
    code, body = svc.post("/api/registry/reload", {})
    assert code == 409
    (problem,) = body["detail"]["problems"]
    assert str(devices) in problem and "field 'building'" in problem and "B99" in problem
    assert svc.get("/api/registry/devices/wr-1")["building"] == "B01"
    devices.write_text(good)

    # bad bodies: refused, naming what is wrong; nothing changes, files included
    files = {p.name: p.read_bytes() for p in reg_dir.iterdir() if p.is_file()}
    device = {"device_id": "wr-5", "kind": "wearable", "compound": "C01", "building": "B77"}
    code, body = put(svc, "/api/registry/devices/wr-5", device)
    assert code == 409
    assert body["detail"]["problems"] == ["devices[wr-5], field 'building': unknown building 'B77'"]
    code, body = put(svc, "/api/registry/devices/wr-6", device | {"building": "B01"})
    assert code == 422 and body["detail"][0]["loc"] == ["body", "device_id"]
    code, body = put(svc, "/api/registry/devices/wr-5", device | {"kind": "toaster"})
    assert code == 422 and body["detail"][0]["loc"] == ["body", "kind"]
    r = svc.request("DELETE", "/api/registry/residents/r-1")  # wr-1 is still worn by r-1
    assert r.status_code == 409
    assert r.json()["detail"]["problems"] == [
        "devices[wr-1], field 'resident_id': unknown resident 'r-1'"
    ]
    assert svc.request("DELETE", "/api/registry/staff/nobody").status_code == 404
    assert {p.name: p.read_bytes() for p in reg_dir.iterdir() if p.is_file()} == files
    assert svc.request("GET", "/api/registry/devices/wr-5").status_code == 404

    entries = audit(svc)
    refused = [(e["action"], e["outcome"]) for e in entries if e["outcome"] == "refused"]
    assert ("registry.reload", "refused") in refused
    assert ("registry.device_add", "refused") in refused
    assert ("registry.resident_retire", "refused") in refused
    actors = {e["actor"] for e in entries if e["action"] == "registry.reload"}
    assert actors == {"admin-token", "system:SIGHUP"}


def test_healthz_says_the_broker_accounts_are_behind_without_paths_or_commands(
    tmp_path: Path, broker: Broker, receiver: Receiver, stores: Stores
) -> None:
    said = "cannot reach /run/secret-broker.sock"
    reg_dir = tmp_path / "registry"
    write_registry(community(receiver), reg_dir)
    svc = ServiceProcess(
        tmp_path / "service",
        broker,
        registry=reg_dir,
        broker_accounts_dir=tmp_path / "accounts",  # not what this broker reads
        broker_reload_command=f"{sys.executable} -c \"import sys; sys.exit('{said}')\"",
        **stores.settings,
    ).start()
    try:
        # the accounts written at start, the broker not told
        health = svc.health()
        assert health["status"] == "degraded" and BROKER_PROBLEM in health["problems"]
        public = json.dumps(health)
        for secret in ("secret-broker.sock", str(tmp_path), "sys.exit", sys.executable):
            assert secret not in public
        details = svc.get("/api/health")
        assert said in details["registry"]["broker_problem"]
        assert str(tmp_path / "accounts") in details["registry"]["broker_accounts"]
        assert any(said in p for p in details["problems"])
        manager = svc.request("GET", "/api/health", token=svc.token_for("mgr-1"))
        assert manager.status_code == 403
        assert httpx.get(svc.url + "/api/health", timeout=10).status_code == 401
    finally:
        svc.stop()
