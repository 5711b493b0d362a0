"""A fire through the whole service (`jiayuan run` as a child process, the real Mosquitto, a
real HTTP receiver for the staff's messages): two detectors in alarm and their confirmation are
one incident and one page; the detectors clear while the service is down, and after the restart
the confirmed fire and its incident are resolved, with nobody escalated to."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from devtools.broker import Broker
from devtools.launch import ServiceProcess
from devtools.receiver import Receiver
from registry import write_registry
from registry.models import Building, Device, Registry
from tests.alerting import staff
from tests.mqtt import Publisher, wait_for
from tests.stores import Stores

pytestmark = pytest.mark.network


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    rx = Receiver(port=0).start()
    yield rx
    rx.stop()


def registry(rx: Receiver) -> Registry:
    def url(sid: str) -> str:
        return f"json://127.0.0.1:{rx.port}/notify/{sid}"

    return Registry(
        "y",
        buildings=[Building(building="B01", compound="C01")],
        devices=[
            Device(device_id=f"smk-{i}", kind="smoke", compound="C01", building="B01",
                   unit="1-1-101", floor=1)
            for i in (1, 2)
        ],
        staff=[
            staff("sec-desk", "security", channels=(url("sec-desk"),)),
            staff("mgr-1", "manager", channels=(url("mgr-1"),)),
            staff("ops-1", "operator", channels=(url("ops-1"),)),
        ],
    )  # fmt: skip


def fires(svc: ServiceProcess) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = svc.get("/api/alerts?rule_id=fire_confirmed")["items"]
    return items


def test_a_confirmed_fire_resolves_when_its_detectors_cleared_across_a_restart(
    broker: Broker, tmp_path: Path, receiver: Receiver, stores: Stores
) -> None:
    reg_dir = tmp_path / "registry"
    write_registry(registry(receiver), reg_dir)
    data = tmp_path / "service"
    svc = ServiceProcess(data, broker, registry=reg_dir, **stores.settings).start()
    pub = Publisher(broker)
    try:
        for i in (1, 2):
            pub.publish(
                f"community/y/smoke/smk-{i}/event", json.dumps({"event": "alarm", "seq": 1})
            )
        pub.wait_acked()
        wait_for(lambda: len(fires(svc)) == 1)
        (confirmed,) = fires(svc)
        assert confirmed["title_zh"] == "火警确认"
        assert [d["device_id"] for d in confirmed["related_devices"]] == ["smk-1", "smk-2"]
        wait_for(lambda: len(svc.get("/api/incidents")["items"][0]["alert_ids"]) == 3)
        (incident,) = svc.get("/api/incidents")["items"]  # one incident of the three
        assert incident["severity"] == "critical" and incident["building"] == "B01"
        assert fires(svc)[0]["incident_id"] == incident["id"]
        receiver.wait_for(lambda ms: any("火警确认" in m.title for m in ms))
        desk = [m.title for m in receiver.messages() if m.recipient == "sec-desk"]
        assert len(desk) == 2 and "烟雾报警" in desk[0]  # one page, then the confirmation
        svc.stop()
        # the detectors clear while the service is down: the broker keeps it for the session
        for i in (1, 2):
            pub.publish(
                f"community/y/smoke/smk-{i}/event",
                json.dumps({"event": "alarm_clear", "seq": 2}),
            )
        pub.wait_acked()
        svc = ServiceProcess(
            data, broker, http_port=svc.http_port, registry=reg_dir, **stores.settings
        ).start()
        wait_for(lambda: fires(svc)[0]["status"] == "resolved")
        (confirmed,) = fires(svc)
        assert confirmed["resolved_by"] == "rule"
        wait_for(lambda: svc.get(f"/api/incidents/{incident['id']}")["status"] == "resolved")
        assert svc.get("/api/escalation/timers")["total"] == 0
        assert not any(m.recipient == "mgr-1" for m in receiver.messages())
    finally:
        svc.stop()
        pub.close()
