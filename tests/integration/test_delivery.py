"""Delivery against real receivers on loopback: apprise sends to a real HTTP server
(``json://``, the demo's receiver) and a real SMTP server (aiosmtpd, ``mailto://``); failures
are retried or become a trouble alert; and the whole service, killed mid-escalation, takes the
next step on time and never twice. Every wait has a deadline; nothing asserts on timing."""

from __future__ import annotations

import email
import email.policy
import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller

from alerts import AlertStore
from alerts.config import NotifyConfig
from alerts.dispatch import Config, Dispatcher
from alerts.notify import AppriseSender
from devtools.broker import Broker, free_port
from devtools.launch import ServiceProcess
from devtools.receiver import Receiver
from registry import write_registry
from registry.models import Building, Device, Registry, Resident
from tests.alerting import RULES, fire, staff
from tests.mqtt import Publisher, wait_for
from tests.stores import Stores

pytestmark = pytest.mark.network


@dataclass
class Mailbox:
    messages: list[EmailMessage] = field(default_factory=list)
    cond: threading.Condition = field(default_factory=threading.Condition)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        msg = email.message_from_bytes(envelope.content, policy=email.policy.default)
        assert isinstance(msg, EmailMessage)
        with self.cond:
            self.messages.append(msg)
            self.cond.notify_all()
        return "250 OK"

    def wait(self, n: int, timeout: float = 30.0) -> list[EmailMessage]:
        with self.cond:
            if not self.cond.wait_for(lambda: len(self.messages) >= n, timeout):
                raise AssertionError(f"SMTP: {len(self.messages)} messages, wanted {n}")
            return list(self.messages)


@pytest.fixture
def smtp() -> Iterator[tuple[Mailbox, int]]:
    box, port = Mailbox(), free_port()
    controller = Controller(box, hostname="127.0.0.1", port=port)
    controller.start()
    yield box, port
    controller.stop()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    rx = Receiver(port=0).start()
    yield rx
    rx.stop()


def registry(rx: Receiver, smtp_port: int | None = None) -> Registry:
    def json_url(sid: str) -> str:
        return f"json://127.0.0.1:{rx.port}/notify/{sid}"

    care1 = [json_url("care-1")]
    if smtp_port is not None:
        care1.append(
            f"mailto://127.0.0.1:{smtp_port}?from=jiayuan@example.org&to=care1@example.org"
        )
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
                floor=1,
                resident_id="r-1",
            )
        ],
        residents=[
            Resident(
                resident_id="r-1",
                building="B01",
                unit="1-1-101",
                floor=1,
                caretakers=("care-1", "care-2"),
            )
        ],
        staff=[
            staff("care-1", "caretaker", channels=tuple(care1), buildings=("B01",)),
            staff("care-2", "caretaker", channels=(json_url("care-2"),), buildings=("B01",)),
            staff("sec-desk", "security", channels=(json_url("sec-desk"),)),
            staff("ops-1", "operator", channels=(json_url("ops-1"),)),
        ],
    )


@pytest.fixture
def make(alerts_at: Path | str, receiver: Receiver) -> Iterator[Any]:
    """A started dispatcher over an alert store of each backend (its outbox, attempts and
    trouble alerts are the store's)."""
    made: list[tuple[Dispatcher, AlertStore]] = []

    def _make(reg: Registry, **config: Any) -> Dispatcher:
        store = AlertStore(alerts_at)
        d = Dispatcher(store, reg, RULES, Config(notify=NotifyConfig(backoff_s=0.05), **config))
        d.start()
        made.append((d, store))
        return d

    yield _make
    for d, store in made:
        d.stop()
        store.close()


def test_a_fall_reaches_the_caretakers_http_and_email_channels(
    make: Any, receiver: Receiver, smtp: tuple[Mailbox, int]
) -> None:
    box, port = smtp
    d = make(registry(receiver, port))
    change = d.store.apply(fire("wearable_fall", "wr-1", d.clock()))
    assert change is not None
    (got,) = receiver.wait_for(lambda ms: len(ms) >= 1)
    assert got.recipient == "care-1" and got.title == "【紧急】跌倒报警"
    assert "位置：C01小区 B01楼 1-1-101室" in got.message
    assert f"/#/alerts/{change.alert.id}" in got.message
    (mail,) = box.wait(1)
    assert mail["To"] == "care1@example.org" and mail["Subject"] == "【紧急】跌倒报警"
    text = mail.get_body(("plain",))
    assert text is not None
    assert text.get_content().splitlines()[:2] == [
        "位置：C01小区 B01楼 1-1-101室",
        got.message.splitlines()[1],
    ]
    wait_for(lambda: [x.status for x in d.outbox.of_alert(change.alert.id)] == ["sent", "sent"])
    labels = sorted(x.label for x in d.outbox.of_alert(change.alert.id))
    assert labels[0].startswith("json://127.0.0.1:") and labels[1].startswith("mailto://")


def test_a_server_error_is_retried_until_it_gets_through(make: Any, receiver: Receiver) -> None:
    receiver.fail["care-1"] = 503
    d = make(registry(receiver))
    change = d.store.apply(fire("wearable_fall", "wr-1", d.clock()))
    assert change is not None
    wait_for(lambda: receiver.refused >= 2)
    del receiver.fail["care-1"]
    receiver.wait_for(lambda ms: any(m.recipient == "care-1" for m in ms))
    wait_for(lambda: d.outbox.of_alert(change.alert.id)[0].status == "sent")
    (delivery,) = d.outbox.of_alert(change.alert.id)
    outcomes = [r["outcome"] for r in d.outbox.attempts([delivery.id])[delivery.id]]
    assert outcomes[-1] == "sent" and set(outcomes[:-1]) == {"retrying"}
    assert "error=503" in d.outbox.attempts([delivery.id])[delivery.id][0]["error"]


def test_a_refused_channel_makes_the_person_a_trouble_alert_for_the_operators(
    make: Any, receiver: Receiver
) -> None:
    receiver.fail["care-1"] = 404
    d = make(registry(receiver))
    change = d.store.apply(fire("wearable_fall", "wr-1", d.clock()))
    assert change is not None
    ops = receiver.wait_for(lambda ms: any(m.recipient == "ops-1" for m in ms))
    assert any("值班人员所有通知渠道均无法送达" in m.title for m in ops)
    # and the fall went on to the next step at once instead of waiting for it
    receiver.wait_for(lambda ms: any(m.recipient == "care-2" for m in ms))
    delivery = next(x for x in d.outbox.of_alert(change.alert.id) if x.staff_id == "care-1")
    assert (delivery.status, delivery.attempts) == ("failed", 1)


CHAINS = """\
chains:
  - id: quick
    steps:
      - to: [own_caretaker:1]
      - after: 4s
        to: [own_caretaker:2]
      - after: 1h
        to: [security_desk]
"""


def test_the_service_killed_mid_escalation_takes_the_next_step_on_time_and_never_twice(
    broker: Broker, tmp_path: Path, receiver: Receiver, stores: Stores
) -> None:
    reg_dir = tmp_path / "registry"
    write_registry(registry(receiver), reg_dir)
    chains = tmp_path / "chains.yaml"
    chains.write_text(CHAINS)
    data = tmp_path / "service"
    settings: dict[str, Any] = {"registry": reg_dir, "escalation_file": chains, **stores.settings}
    svc = ServiceProcess(data, broker.port, **settings).start()
    pub = Publisher(broker)
    pub.publish("community/y/wearable/wr-1/event", json.dumps({"event": "fall", "seq": 1}))
    pub.wait_acked()
    # the pack's fall waits its 30 s cancel window (verify.within) before the first page
    receiver.wait_for(lambda ms: any(m.recipient == "care-1" for m in ms), timeout=90)
    (alert,) = svc.get("/api/alerts?device_id=wr-1")["items"]
    path = f"/api/alerts/{alert['id']}/deliveries"
    wait_for(lambda: svc.get(path)["items"][0]["status"] == "sent")
    svc.kill()  # SIGKILL before step 2 is due
    svc = ServiceProcess(data, broker.port, http_port=svc.http_port, **settings).start()
    try:
        receiver.wait_for(lambda ms: any(m.recipient == "care-2" for m in ms))
        wait_for(lambda: all(x["status"] == "sent" for x in svc.get(path)["items"]))
        steps = [(x["staff_id"], x["step"]) for x in svc.get(path)["items"]]
        assert steps == [("care-1", 0), ("care-2", 1)]
        history = svc.get(f"/api/alerts/{alert['id']}")["history"]
        escalated = [h["note"] for h in history if h["action"] == "escalated"]
        assert len(escalated) == 1 and escalated[0].startswith("step 2/3 → care-2")
        (timer,) = svc.get("/api/escalation/timers")["items"]
        assert timer["next_step"] == 2
        care2 = svc.token_for("care-2")  # a caretaker of the resident: sees the alert
        code, body = svc.post(f"/api/alerts/{alert['id']}/ack", {}, token=care2)
        assert code == 200 and body["acknowledged_by"] == "care-2"
        wait_for(lambda: svc.get("/api/escalation/timers")["total"] == 0)
        # those paged before hear that someone is on it
        receiver.wait_for(lambda ms: len(ms) == 3)
    finally:
        svc.stop()
        pub.close()
    got = [(m.recipient, m.title) for m in receiver.messages()]
    assert got == [
        ("care-1", "【紧急】跌倒报警"),
        ("care-2", "【升级 紧急】跌倒报警"),
        ("care-1", "【已确认】跌倒报警"),
    ]


def test_the_demo_receiver_logs_one_line_per_message_and_lists_the_latest(
    tmp_path: Path,
) -> None:
    import urllib.request

    import apprise

    log = tmp_path / "notifications.log"
    rx = Receiver(port=0, log=log).start()
    try:
        channel = apprise.Apprise.instantiate(f"json://127.0.0.1:{rx.port}/notify/care-7")
        assert channel is not None
        ok = channel.notify(body="位置：C01小区 B01楼\n开始：08-01 10:00", title="【紧急】跌倒报警")
        assert ok
        (line,) = log.read_text(encoding="utf-8").splitlines()
        assert line.endswith(
            "care-7           【紧急】跌倒报警 | 位置：C01小区 B01楼 | 开始：08-01 10:00"
        )
        with urllib.request.urlopen(rx.url + "/", timeout=10) as r:
            page = r.read().decode()
        assert "跌倒报警" in page and "care-7" in page
        with urllib.request.urlopen(rx.url + "/messages", timeout=10) as r:
            (item,) = json.loads(r.read())
        assert item["recipient"] == "care-7" and item["type"] == "info"
    finally:
        rx.stop()


def test_the_delivery_id_rides_along_as_an_idempotency_key(
    receiver: Receiver, smtp: tuple[Mailbox, int]
) -> None:
    """A webhook gets it as its ``Idempotency-Key`` header and an e-mail as
    ``X-Idempotency-Key`` (apprise's ``+`` URL arguments), so a receiver can drop the one
    message a dead instance's taken-over send repeats."""
    box, port = smtp
    send = AppriseSender()
    hook = f"json://127.0.0.1:{receiver.port}/notify/care-1"
    mail = f"mailto://127.0.0.1:{port}?from=jiayuan@example.org&to=care1@example.org"
    assert send(hook, "跌倒", "B01", key="41").ok
    assert send(mail, "跌倒", "B01", key="42").ok
    (got,) = receiver.wait_for(lambda m: len(m) == 1)
    assert (got.recipient, got.key) == ("care-1", "41")
    (msg,) = box.wait(1)
    assert msg["X-Idempotency-Key"] == "42" and msg["Message-ID"]
