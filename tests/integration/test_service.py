"""The whole service (`jiayuan run` as a child process) against the real Mosquitto."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from devtools.broker import Broker
from devtools.launch import ServiceProcess
from tests.mqtt import Publisher, wait_for
from tests.stores import Stores

pytestmark = pytest.mark.network


@pytest.fixture
def service(broker: Broker, tmp_path: Path, stores: Stores) -> Iterator[ServiceProcess]:
    """The service on each store: SQLite files, and PostgreSQL (``JIAYUAN_DATABASE_URL``)."""
    svc = ServiceProcess(tmp_path / "service", broker, **stores.settings).start()
    yield svc
    svc.stop()


def journal_counts(stores: Stores, data_dir: Path) -> tuple[int, int]:
    """(rows, distinct (device, seq)) in the journal, read straight from its database."""
    rows = stores.journal(data_dir, "SELECT count(*) FROM readings")
    distinct = stores.journal(
        data_dir, "SELECT count(*) FROM (SELECT DISTINCT device_id, seq FROM readings) AS d"
    )
    return rows, distinct


def alerts(svc: ServiceProcess, **query: str) -> list[dict[str, object]]:
    qs = "&".join(f"{k}={v}" for k, v in query.items())
    items: list[dict[str, object]] = svc.get(f"/api/alerts?{qs}")["items"]
    return items


def test_a_fall_raises_an_alert_that_staff_acknowledge_and_resolve(
    broker: Broker, service: ServiceProcess
) -> None:
    pub = Publisher(broker)
    pub.publish("community/y/wearable/wr-7/event", json.dumps({"event": "fall", "seq": 1}))
    pub.wait_acked()
    wait_for(lambda: alerts(service, device_id="wr-7"), timeout=10)
    (alert,) = alerts(service, device_id="wr-7")
    assert (alert["rule_id"], alert["severity"], alert["status"]) == (
        "wearable_fall",
        "critical",
        "firing",
    )
    # no registry here, so no staff: the admin token acts, and its name is what is recorded
    code, body = service.post(f"/api/alerts/{alert['id']}/ack", {"note": "going"})
    assert code == 200 and body["status"] == "acknowledged"
    code, body = service.post(f"/api/alerts/{alert['id']}/resolve", {"note": "ok"})
    assert code == 200 and body["status"] == "resolved"
    history = service.get(f"/api/alerts/{alert['id']}")["history"]
    assert [(h["action"], h["by"]) for h in history] == [
        ("raised", "rule"),
        ("acknowledged", "admin-token"),
        ("resolved", "admin-token"),
    ]
    pub.close()


def test_a_smoke_alarm_resolves_itself_on_alarm_clear_but_not_when_the_device_goes_offline(
    broker: Broker, service: ServiceProcess
) -> None:
    pub = Publisher(broker)
    pub.publish("community/y/smoke/smk-1/event", json.dumps({"event": "alarm", "seq": 1}))
    pub.publish("community/y/smoke/smk-2/event", json.dumps({"event": "alarm", "seq": 1}))
    pub.wait_acked()
    wait_for(lambda: len(alerts(service, rule_id="smoke_alarm")) == 2, timeout=10)
    pub.publish("community/y/smoke/smk-1/event", json.dumps({"event": "alarm_clear", "seq": 2}))
    pub.publish("community/y/smoke/smk-2/status", json.dumps({"state": "offline"}))
    pub.wait_acked()
    wait_for(lambda: alerts(service, device_id="smk-1")[0]["status"] == "resolved", timeout=10)
    wait_for(lambda: alerts(service, device_id="smk-2")[0]["offline"] is True, timeout=10)
    assert alerts(service, device_id="smk-2")[0]["status"] == "firing"
    pub.close()


def test_a_service_killed_mid_stream_loses_no_accepted_message(
    broker: Broker, tmp_path: Path, stores: Stores
) -> None:
    data = tmp_path / "service"
    svc = ServiceProcess(data, broker, **stores.settings).start()
    pub = Publisher(broker, client_id="wearables")
    total = 20_000
    devices = 20
    stop = threading.Event()

    def publish() -> None:
        for i in range(total):
            if stop.is_set():
                return
            dev = i % devices
            pub.publish(
                f"community/y/wearable/wk-{dev}/telemetry",
                json.dumps({"seq": i // devices, "heart_rate": 72, "worn": True}),
            )

    t = threading.Thread(target=publish)
    t.start()
    wait_for(lambda: svc.health()["messages_committed"] >= 3_000, timeout=60, interval=0.01)
    svc.kill()  # SIGKILL while messages keep arriving
    t.join()
    pub.wait_acked(timeout=120)  # the broker has them all, queued in the service's session
    svc = ServiceProcess(data, broker, http_port=svc.http_port, **stores.settings).start()
    wait_for(lambda: journal_counts(stores, data)[0] == total, timeout=120)
    svc.stop()
    rows, distinct = journal_counts(stores, data)
    assert rows == distinct == total  # every message once: none lost, none doubled
    pub.close()


BAD = [
    ("community/y/wearable/wb-1/telemetry", b"{not json"),
    ("community/y/wearable/wb-1/telemetry", b"\xff\xfe\xfd"),
    ("community/y/wearable/wb-1/telemetry", b'{"heart_rate": "fast"}'),
    ("community/y/wearable/wb-1/telemetry", b'{"spo2": 12}'),
    ("community/y/toaster/t-1/telemetry", b"{}"),
    ("community/y/wearable/wb-1/telemetry", b'{"pad": "' + b"x" * 5000 + b'"}'),
    ("community/y/wearable/wb-1/event", b'{"event": "explode"}'),
    ("community/y/wearable/wb-1/event", b"{}"),
    ("community/y/wearable/wb-1/telemetry", b"[1, 2, 3]"),
    ("elsewhere/y/wearable/wb-1/telemetry", b"{}"),
]


def test_a_flood_of_bad_input_is_counted_and_never_stops_ingestion(
    broker: Broker, service: ServiceProcess
) -> None:
    pub = Publisher(broker)
    # The service subscribes to community/+/+/+/+ only; 'elsewhere/...' never reaches it.
    reaching = [b for b in BAD if b[0].startswith("community/")]
    rounds = 200
    for r in range(rounds):
        pub.publish_all(reaching)
        pub.publish("community/y/wearable/wg-1/telemetry", json.dumps({"seq": r, "spo2": 97}))
    pub.wait_acked()
    want = rounds * len(reaching)
    wait_for(lambda: service.get("/api/dead-letters/counts")["total"] >= want, timeout=60)
    counts = service.get("/api/dead-letters/counts")["counts"]
    assert {k: v for k, v in counts.items() if v} == {
        "not_json": rounds,
        "bad_utf8": rounds,
        "wrong_type": rounds,
        "out_of_range": rounds,
        "unknown_topic": rounds,
        "too_large": rounds,
        "bad_value": rounds,
        "missing_field": rounds,
        "not_object": rounds,
    }
    wait_for(lambda: service.get("/api/devices/wg-1")["last_seen"] is not None, timeout=10)
    assert service.health()["status"] == "ok"
    # on PostgreSQL the session slots' ingest processes count them, and hand their counts to
    # the main process's /metrics every 0.5 s: soon, not at once
    line = f'jiayuan_dead_letters_total{{reason="bad_utf8"}} {float(rounds)}'
    wait_for(lambda: line in service.get_text("/metrics"), timeout=10)
    pub.close()


def test_a_late_burst_of_buffered_readings_raises_its_alert_marked_late(
    broker: Broker, service: ServiceProcess
) -> None:
    """A wearable out of range for half an hour uploads what it buffered: a heart rate high
    for 15 minutes, 30 minutes ago. The alert is raised now, from the readings' own times."""
    import time

    pub = Publisher(broker)
    start_ms = int((time.time() - 1800) * 1000)
    for i in range(16):  # one reading a minute
        pub.publish(
            "community/y/wearable/wl-1/telemetry",
            json.dumps({"seq": i, "ts": start_ms + i * 60_000, "heart_rate": 150}),
        )
    pub.wait_acked()
    wait_for(lambda: alerts(service, device_id="wl-1"), timeout=10)
    (alert,) = alerts(service, device_id="wl-1")
    assert alert["rule_id"] == "wearable_heart_rate_high"
    assert alert["late"] is True
    pub.close()


def test_a_device_whose_connection_dies_is_marked_offline_by_its_last_will(
    broker: Broker, service: ServiceProcess
) -> None:
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    status = "community/y/gate/gt-1/status"
    dev = mqtt.Client(
        callback_api_version=CallbackAPIVersion.VERSION2, client_id="gt-1", protocol=mqtt.MQTTv5
    )
    broker.device_access("gt-1").apply(dev)  # its own account: its status and last will
    dev.will_set(status, json.dumps({"state": "offline"}), qos=1, retain=True)
    dev.connect(broker.host, broker.port, keepalive=5)
    dev.loop_start()
    dev.publish(status, json.dumps({"state": "online", "fw": "2.1"}), qos=1, retain=True)
    wait_for(lambda: service.get("/api/devices/gt-1")["online"] is True, timeout=10)
    dev.loop_stop()
    sock = dev.socket()
    assert sock is not None
    sock.close()  # the connection dies without a DISCONNECT: the broker sends the will
    wait_for(lambda: service.get("/api/devices/gt-1")["online"] is False, timeout=30)


def test_a_service_that_cannot_listen_exits_non_zero(broker: Broker, tmp_path: Path) -> None:
    """A supervisor (systemd, the demo) must see a failed start as a failure, not a clean exit."""
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        svc = ServiceProcess(tmp_path / "service", broker, http_port=taken.getsockname()[1])
        with pytest.raises(RuntimeError, match=r"exited with [1-9]"):
            svc.start(timeout=60)
        svc.proc = None  # it exited; nothing to stop
    assert "address already in use" in svc.log.read_text()
