"""Attacks on the broker, against the real Mosquitto with the project's mosquitto.conf: who may
connect, publish and read (issue 6, parts 1 and 6). Readings are checked where they would land:
the journal, through the real listener and pipeline."""

from __future__ import annotations

import json
import socket
import ssl
import struct
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from devtools.broker import Broker, try_connect
from devtools.launch import ServiceProcess
from ingest.access import BrokerAccess, CredentialsFile
from jiayuan.broker.accounts import CHANGES, CREDENTIALS
from jiayuan.broker.tls import make_tls
from registry import Registry
from tests.conftest import BROKER_REGISTRY
from tests.integration.test_ingest_broker import Ingest
from tests.mqtt import Publisher, wait_for

pytestmark = pytest.mark.network

OWN = "community/y/wearable/wr-1/telemetry"


@pytest.fixture
def ingest(broker: Broker, tmp_path: Path) -> Iterator[Ingest]:
    """The service's listener and pipeline, with its account over TLS, into a journal."""
    i = Ingest(broker, tmp_path / "journal.db", client_id="jiayuan-ingest").start()
    yield i
    i.stop()
    i.journal.close()


class Reader:
    """A client that subscribes to ``filters`` and keeps what it receives."""

    def __init__(self, broker: Broker, access: BrokerAccess, *filters: str) -> None:
        self.got: list[str] = []
        done = threading.Event()
        c = mqtt.Client(callback_api_version=CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
        access.apply(c)
        c.on_message = lambda _c, _u, m: self.got.append(m.topic)
        c.on_subscribe = lambda *_: done.set()
        c.connect(broker.host, broker.port_for(access))
        c.loop_start()
        c.subscribe([(f, 1) for f in filters])
        assert done.wait(10), "no SUBACK"
        self.client = c

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def reading(seq: int, **fields: object) -> str:
    return json.dumps({"seq": seq, **fields})


@pytest.mark.parametrize("tls", [False, True], ids=["plain", "tls"])
def test_anonymous_unknown_and_wrong_password_clients_are_refused(
    broker: Broker, tls: bool
) -> None:
    port = broker.tls_port if tls else broker.port
    ca = broker.ca_file if tls else None
    wr1 = broker.device_access("wr-1")
    for who in (
        BrokerAccess(tls=tls, ca_file=ca),
        BrokerAccess("wr-1", "not-its-password", tls=tls, ca_file=ca),
        BrokerAccess("wr-1", "", tls=tls, ca_file=ca),
        BrokerAccess("intruder", wr1.password, tls=tls, ca_file=ca),
        BrokerAccess("jiayuan.service", wr1.password, tls=tls, ca_file=ca),
    ):
        assert try_connect(broker.host, port, who) == "Not authorized", who.describe()
    ok = BrokerAccess("wr-1", wr1.password, tls=tls, ca_file=ca)
    assert try_connect(broker.host, port, ok) == "Success"


def test_a_device_cannot_publish_as_another_device_nor_another_kind(
    broker: Broker, ingest: Ingest
) -> None:
    dev = Publisher(broker, access=broker.device_access("wr-1", tls=True))
    dev.publish(OWN, reading(1, heart_rate=71))
    forged = [
        ("community/y/wearable/wr-2/telemetry", reading(1, heart_rate=190)),  # another wearable
        ("community/y/wearable/wr-2/event", reading(2, event="fall")),
        ("community/y/smoke/smk-1/event", reading(1, event="alarm")),  # a fire alarm
        ("community/y/gate/gt-1/event", reading(1, event="granted", direction="in")),
        ("community/y/smoke/wr-1/event", reading(3, event="alarm")),  # its own id, another kind
        ("community/z/wearable/wr-1/telemetry", reading(4, heart_rate=72)),  # another community
        ("community/y/wearable/wr-1", reading(5)),  # not a reading topic
    ]
    dev.publish_all(forged)
    dev.publish(OWN, reading(2, heart_rate=72))  # the last one: once it is in, all were handled
    dev.wait_acked()
    assert dev.refused == len(forged)
    wait_for(lambda: ingest.journal.count_readings("wr-1") == 2)
    for other in ("wr-2", "smk-1", "gt-1"):
        assert ingest.journal.count_readings(other) == 0
        assert ingest.journal.get_device(other) is None
    assert ingest.journal.dead_letter_counts() == {}  # refused by the broker: never arrived
    dev.close()


def test_a_gateway_publishes_for_its_compound_only(broker: Broker, ingest: Ingest) -> None:
    gw = Publisher(broker, access=broker.access("gateway.C01", tls=True))
    gw.publish("community/y/wearable/wr-2/telemetry", reading(1, heart_rate=66))
    gw.publish("community/y/smoke/smk-1/telemetry", reading(1, temperature_c=21.0))
    gw.publish("community/y/gate/gt-1/event", reading(1, event="forced"))  # compound C02's
    gw.publish("community/y/wearable/wr-9/telemetry", reading(1, heart_rate=66))  # unregistered
    gw.wait_acked()
    assert gw.refused == 2
    wait_for(lambda: ingest.journal.count_readings("smk-1") == 1)
    assert ingest.journal.count_readings("wr-2") == 1
    assert ingest.journal.count_readings("gt-1") == ingest.journal.count_readings("wr-9") == 0
    gw.close()


def test_the_service_account_reads_but_cannot_publish(broker: Broker) -> None:
    svc = Publisher(broker, access=broker.service_access(tls=True))
    svc.publish(OWN, reading(1, heart_rate=72))
    svc.wait_acked()
    assert svc.refused == 1
    svc.close()


def test_devices_and_gateways_read_nothing(broker: Broker) -> None:
    dev = Publisher(broker, access=broker.device_access("wr-2"))
    dev.publish("community/y/wearable/wr-2/status", json.dumps({"state": "online"}), retain=True)
    dev.wait_acked()
    snoops = [
        Reader(broker, broker.device_access("wr-1"), "community/#", "#", OWN),
        Reader(broker, broker.device_access("smk-1"), "community/y/wearable/wr-2/+"),
        Reader(broker, broker.access("gateway.C01"), "community/+/+/+/+"),
    ]
    service = Reader(broker, broker.service_access(), "community/+/+/+/+")
    dev.publish("community/y/wearable/wr-2/telemetry", reading(1, heart_rate=80, lat=36.05))
    dev.publish("community/y/wearable/wr-2/event", reading(2, event="fall"))
    dev.wait_acked()
    wait_for(lambda: len(service.got) >= 2)  # delivered: to the service, and only to it
    assert [s.got for s in snoops] == [[], [], []]  # not even the retained status
    for r in [*snoops, service]:
        r.close()
    dev.close()


def test_a_last_will_is_published_only_on_the_devices_own_topic(broker: Broker) -> None:
    service = Reader(broker, broker.service_access(), "community/+/+/+/+")
    for will in ("community/y/wearable/wr-2/status", "community/y/wearable/wr-1/status"):
        c = mqtt.Client(callback_api_version=CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
        broker.device_access("wr-1").apply(c)
        c.will_set(will, json.dumps({"state": "offline"}), qos=1, retain=True)
        connected = threading.Event()
        c.on_connect = lambda *_, up=connected: up.set()
        c.connect(broker.host, broker.port, keepalive=5)
        c.loop_start()
        assert connected.wait(10)
        c.loop_stop()
        sock = c.socket()
        assert sock is not None
        sock.close()  # gone without DISCONNECT: the broker publishes the will, if allowed
    wait_for(lambda: service.got == ["community/y/wearable/wr-1/status"])
    time.sleep(0.5)
    assert service.got == ["community/y/wearable/wr-1/status"]  # wr-1 cannot mark wr-2 offline
    service.close()


def _as_the_service(broker: Broker, access: BrokerAccess, clean: bool) -> list[str]:
    """Connect with ``access`` but the service's client id; what arrives within a second."""
    got: list[str] = []
    c = mqtt.Client(
        callback_api_version=CallbackAPIVersion.VERSION2,
        client_id="jiayuan-ingest",
        protocol=mqtt.MQTTv5,
    )
    access.apply(c)
    c.on_message = lambda _c, _u, m: got.append(m.topic)
    c.connect(broker.host, broker.port, clean_start=clean)
    c.loop_start()
    c.subscribe("community/+/+/+/+", 1)
    time.sleep(1.0)
    c.disconnect()
    c.loop_stop()
    return got


def test_a_device_cannot_take_over_or_discard_the_services_session(
    broker: Broker, ingest: Ingest, tmp_path: Path
) -> None:
    """The broker makes the client id the username: a device that connects with the service's
    client id neither disconnects the service, nor receives or discards (clean start) what
    the broker queued for it."""
    wr2 = broker.device_access("wr-2")
    assert _as_the_service(broker, wr2, clean=False) == []
    assert "closing old connection" not in (broker.data_dir / "mosquitto.log").read_text()
    assert ingest.listener.connected.is_set()
    ingest.stop()  # the broker queues for the service's session meanwhile
    dev = Publisher(broker, access=broker.device_access("wr-1"))
    for seq in range(100):
        dev.publish(OWN, reading(seq, heart_rate=70))
    dev.wait_acked()
    assert _as_the_service(broker, wr2, clean=False) == []
    assert _as_the_service(broker, wr2, clean=True) == []
    again = Ingest(broker, tmp_path / "journal.db", client_id="jiayuan-ingest").start()
    assert again.listener.session_present is True
    wait_for(lambda: again.journal.count_readings("wr-1") == 100)
    dev.close()
    again.stop()


def _connect_packet(user: bytes, password: bytes) -> bytes:
    """An MQTT 3.1.1 CONNECT (clean session, username and password) as a plain client sends."""

    def field(b: bytes) -> bytes:
        return struct.pack("!H", len(b)) + b

    body = field(b"MQTT") + bytes([4, 0xC2]) + struct.pack("!H", 30)
    body += field(b"probe") + field(user) + field(password)
    return bytes([0x10, len(body)]) + body


def test_plain_mqtt_is_refused_on_the_tls_listener(broker: Broker) -> None:
    assert try_connect(broker.host, broker.tls_port, broker.service_access(tls=False)) in (
        "no CONNACK",
        "ConnectionResetError: [Errno 104] Connection reset by peer",
    )
    svc = broker.service_access(tls=False)
    with socket.create_connection((broker.host, broker.tls_port), timeout=5) as s:
        s.sendall(_connect_packet((svc.username or "").encode(), (svc.password or "").encode()))
        try:
            answer = s.recv(64)
        except ConnectionResetError:
            answer = b""
    assert not answer.startswith(b"\x20")  # no CONNACK: a TLS alert, or the connection closed


def test_a_client_that_trusts_another_ca_refuses_the_broker(broker: Broker, tmp_path: Path) -> None:
    other = make_tls(tmp_path / "other-installation").ca_cert
    svc = broker.service_access(tls=True)
    impostor_trust = BrokerAccess(svc.username, svc.password, tls=True, ca_file=other)
    answer = try_connect(broker.host, broker.tls_port, impostor_trust)
    assert answer.startswith("SSLCertVerificationError"), answer
    # and without any CA of its own, the system's CAs do not know the installation's either
    system = BrokerAccess(svc.username, svc.password, tls=True)
    assert try_connect(broker.host, broker.tls_port, system).startswith("SSLCertVerification")
    assert try_connect(broker.host, broker.tls_port, svc) == "Success"
    with pytest.raises(ssl.SSLCertVerificationError):
        ctx = ssl.create_default_context(cafile=str(broker.ca_file))
        with (
            socket.create_connection((broker.host, broker.tls_port), timeout=5) as raw,
            ctx.wrap_socket(raw, server_hostname="broker.elsewhere.example"),
        ):
            pass  # the certificate names 127.0.0.1 and localhost only


def test_the_service_connects_over_tls_with_its_account(broker: Broker, tmp_path: Path) -> None:
    svc = ServiceProcess(tmp_path / "service", broker).start()
    try:
        assert svc.env["JIAYUAN_MQTT_PORT"] == str(broker.tls_port)
        assert "JIAYUAN_MQTT_PASSWORD" not in svc.env  # from a 0600 file, not the environment
        dev = Publisher(broker, access=broker.device_access("wr-1", tls=True))
        dev.publish("community/y/wearable/wr-1/event", reading(1, event="fall"))
        dev.wait_acked()
        wait_for(lambda: svc.health()["messages_committed"] == 1, timeout=15)
        dev.close()
        log = (broker.data_dir / "mosquitto.log").read_text()
        assert f"on port {broker.tls_port}" in log and "u'jiayuan.service'" in log
        password = broker.service_access().password
        assert password and password not in (tmp_path / "service" / "service.log").read_text()
    finally:
        svc.stop()


def test_a_removed_device_loses_its_access_on_regeneration_and_reload(broker: Broker) -> None:
    before = CredentialsFile.load(broker.auth_dir / CREDENTIALS)
    wr1, wr2 = broker.device_access("wr-1"), broker.device_access("wr-2")
    connected = Reader(broker, wr2, "community/y/wearable/wr-2/telemetry")
    lost = threading.Event()
    connected.client.on_disconnect = lambda *_: lost.set()
    smaller = Registry(
        "y", devices=[d for d in BROKER_REGISTRY.devices.values() if d.device_id != "wr-2"]
    )
    report = broker.provision(smaller)  # jiayuan broker credentials, then SIGHUP
    assert report.removed == ["wr-2"] and report.added == []
    assert lost.wait(10), "the removed device's connection was not dropped at reload"
    connected.client.loop_stop()
    assert try_connect(broker.host, broker.port, wr2) == "Not authorized"
    assert try_connect(broker.host, broker.tls_port, broker.device_access("wr-1", tls=True)) == (
        "Success"
    )
    after = CredentialsFile.load(broker.auth_dir / CREDENTIALS)
    assert "wr-2" not in after.devices and after.devices["wr-1"] == wr1.password
    assert after.gateways["gateway.C01"].devices == ("smk-1", "wr-1")
    assert after.service == before.service
    gw = Publisher(broker, access=broker.access("gateway.C01"))
    gw.publish("community/y/wearable/wr-2/telemetry", reading(1, heart_rate=70))
    gw.wait_acked()
    assert gw.refused == 1
    gw.close()
    changes = [json.loads(x) for x in (broker.auth_dir / CHANGES).read_text().splitlines()]
    assert changes[-1]["removed"] == ["wr-2"]
