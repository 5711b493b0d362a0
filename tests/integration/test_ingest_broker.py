"""Ingest against the real Mosquitto: listener → pipeline → journal, with manual PUBACK."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from devtools.broker import Broker
from ingest.inbox import Inbox
from ingest.journal import Journal
from ingest.listener import Listener
from ingest.pipeline import Pipeline
from tests.mqtt import Publisher, wait_for

pytestmark = pytest.mark.network

T = "community/y/wearable/wr-1/telemetry"


class Ingest:
    def __init__(self, broker: Broker, path: Path, client_id: str = "jiayuan-test") -> None:
        self.inbox = Inbox()
        self.journal = Journal(path, synchronous="NORMAL")
        access = broker.service_access(tls=True)  # as the service: its accounts, over TLS
        self.listener = Listener(
            broker.host,
            broker.port_for(access),
            client_id,
            self.inbox,
            access=access,
            urgent_access=broker.urgent_access(tls=True),
        )
        self.pipeline = Pipeline(self.inbox, self.journal, self.listener.ack)

    def start(self) -> Ingest:
        self.pipeline.start()
        self.listener.start()
        assert self.listener.connected.wait(10), "listener never connected"
        return self

    def stop(self) -> None:
        self.pipeline.stop()
        self.listener.stop()


@pytest.fixture
def ingest(broker: Broker, tmp_path: Path) -> Iterator[Ingest]:
    i = Ingest(broker, tmp_path / "journal.db").start()
    yield i
    i.stop()
    i.journal.close()


def test_valid_readings_are_journaled_once_and_bad_ones_become_dead_letters(
    broker: Broker, ingest: Ingest
) -> None:
    pub = Publisher(broker)
    for seq in range(200):
        pub.publish(T, json.dumps({"seq": seq, "heart_rate": 70 + seq % 20, "worn": True}))
    for seq in range(50):  # redelivered by the device: duplicates
        pub.publish(T, json.dumps({"seq": seq, "heart_rate": 70 + seq % 20, "worn": True}))
    bad = [
        (T, b"{not json"),
        (T, b"\xff\xfe\xfd"),
        (T, b'{"heart_rate": "fast"}'),
        (T, b'{"heart_rate": 999}'),
        ("community/y/toaster/t-1/telemetry", b"{}"),
        (T, b'{"x": "' + b"a" * 5000 + b'"}'),
        ("community/y/wearable/wr-1/event", b'{"event": "explode"}'),
    ]
    pub.publish_all(bad)
    pub.wait_acked()
    wait_for(lambda: ingest.pipeline.committed >= 257)
    assert ingest.journal.count_readings("wr-1") == 200
    counts = ingest.journal.dead_letter_counts()
    assert counts == {
        "not_json": 1,
        "bad_utf8": 1,
        "wrong_type": 1,
        "out_of_range": 1,
        "unknown_topic": 1,
        "too_large": 1,
        "bad_value": 1,
    }
    items, total = ingest.journal.dead_letters(reason="too_large")
    assert total == 1 and len(items[0]["payload"]) <= 4096
    wait_for(lambda: ingest.journal.get_device("wr-1"))  # last-seen times are written each second
    dev = ingest.journal.get_device("wr-1")
    assert dev is not None and dev["registered"] is False and dev["last_seen"] is not None
    pub.close()


def test_messages_published_while_the_service_is_down_arrive_after_it_returns(
    broker: Broker, tmp_path: Path
) -> None:
    first = Ingest(broker, tmp_path / "j.db", client_id="jiayuan-session").start()
    first.stop()  # the broker keeps the session and queues for it
    first.journal.close()
    pub = Publisher(broker)
    for seq in range(500):
        pub.publish(T, json.dumps({"seq": seq, "steps": seq}))
    pub.wait_acked()
    second = Ingest(broker, tmp_path / "j.db", client_id="jiayuan-session").start()
    assert second.listener.session_present is True
    wait_for(lambda: second.journal.count_readings("wr-1") == 500)
    second.stop()
    second.journal.close()
    pub.close()


def test_a_broker_restart_is_ridden_out(broker: Broker, ingest: Ingest) -> None:
    pub = Publisher(broker, client_id="dev-a")
    for seq in range(100):
        pub.publish(T, json.dumps({"seq": seq, "battery": 90}))
    pub.wait_acked()
    wait_for(lambda: ingest.journal.count_readings("wr-1") == 100)
    pub.close()
    broker.restart()
    wait_for(ingest.listener.connected.is_set, timeout=60)
    pub = Publisher(broker, client_id="dev-a")
    for seq in range(100, 200):
        pub.publish(T, json.dumps({"seq": seq, "battery": 90}))
    pub.wait_acked()
    wait_for(lambda: ingest.journal.count_readings("wr-1") == 200)
    pub.close()


def test_status_and_last_will_keep_online_state(broker: Broker, ingest: Ingest) -> None:
    pub = Publisher(broker)
    s = "community/y/smoke/smk-1/status"
    pub.publish(s, json.dumps({"state": "online", "fw": "1.2.3"}), retain=True)
    pub.wait_acked()
    wait_for(lambda: (ingest.journal.get_device("smk-1") or {}).get("online") is True)
    pub.publish(s, json.dumps({"state": "offline"}), retain=True)
    pub.wait_acked()
    wait_for(lambda: (ingest.journal.get_device("smk-1") or {}).get("online") is False)
    dev = ingest.journal.get_device("smk-1")
    assert dev is not None and dev["fw"] == "1.2.3"
    pub.close()
