"""The simulator against the real Mosquitto: everything it publishes arrives, QoS 1."""

from __future__ import annotations

import threading
from collections import defaultdict
from collections.abc import Iterator

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from devtools.broker import Broker
from simulators.__main__ import main
from simulators.fleet import Fleet, build_fleet
from simulators.player import DayPlayer, play_scenarios
from simulators.publisher import Publisher
from simulators.scenarios import merge
from tests.mqtt import wait_for

pytestmark = pytest.mark.network


class Subscriber:
    """A plain paho client subscribed to every community topic with QoS 1."""

    def __init__(self, broker: Broker) -> None:
        access = broker.test_access("sim-test-subscriber")  # test-only: may read everything
        self.messages: list[tuple[str, bytes, int]] = []
        self._lock = threading.Lock()
        self.subscribed = threading.Event()
        c = mqtt.Client(
            callback_api_version=CallbackAPIVersion.VERSION2,
            client_id="sim-test-subscriber",
            protocol=mqtt.MQTTv5,
        )
        c.on_connect = lambda cl, *_: cl.subscribe("community/#", qos=1)
        c.on_subscribe = lambda *_: self.subscribed.set()
        c.on_message = self._on_message
        access.apply(c)
        c.connect(broker.host, broker.port)
        c.loop_start()
        assert self.subscribed.wait(10), "subscriber never subscribed"
        self.client = c

    def _on_message(self, client: mqtt.Client, userdata: object, msg: mqtt.MQTTMessage) -> None:
        with self._lock:
            self.messages.append((msg.topic, bytes(msg.payload), msg.qos))

    def count(self) -> int:
        with self._lock:
            return len(self.messages)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
def subscriber(broker: Broker) -> Iterator[Subscriber]:
    s = Subscriber(broker)
    yield s
    s.close()


@pytest.fixture
def publisher(broker: Broker) -> Iterator[Publisher]:
    p = Publisher(broker.host, broker.port, access=broker.test_access("sim")).start()
    yield p
    p.stop()


@pytest.fixture(scope="module")
def fleet() -> Fleet:
    return build_fleet(seed=11, devices=400)


def test_scenarios_arrive_complete_and_in_order(
    fleet: Fleet, publisher: Publisher, subscriber: Subscriber
) -> None:
    names = ["fire", "late_burst", "denied_burst", "sos", "bad_input"]
    played = play_scenarios(fleet, publisher, names, realtime=False)
    expected = [(s.topic, s.payload) for s in merge(played)]
    assert publisher.flush(30)
    assert (publisher.stats.acked, publisher.stats.failed) == (len(expected), 0)
    wait_for(lambda: subscriber.count() >= len(expected))
    assert subscriber.count() == len(expected)
    assert all(qos == 1 for _, _, qos in subscriber.messages)
    assert sorted((t, p) for t, p, _ in subscriber.messages) == sorted(expected)
    sent_by_topic: dict[str, list[bytes]] = defaultdict(list)
    got_by_topic: dict[str, list[bytes]] = defaultdict(list)
    for t, p in expected:
        sent_by_topic[t].append(p)
    for t, p, _ in subscriber.messages:
        got_by_topic[t].append(p)
    assert got_by_topic == sent_by_topic  # each device's messages in the order sent


def test_the_day_through_one_gateway_connection(
    fleet: Fleet, publisher: Publisher, subscriber: Subscriber
) -> None:
    # Played until readings follow the 400 devices' statuses, not for a wall-clock time: with
    # ``run(duration=1.5)`` a loaded machine (CI, 2026-12-05) spent the 1.5 s announcing.
    player = DayPlayer(fleet, publisher, speed=60.0, incidents=None)
    playing = threading.Thread(target=player.run, daemon=True)
    playing.start()
    try:
        wait_for(lambda: publisher.stats.sent > len(fleet.sims) + 50, timeout=120)
    finally:
        player.stop.set()
        playing.join(30)
    assert not playing.is_alive()
    assert publisher.flush(30)
    sent = publisher.stats.sent
    assert sent > len(fleet.sims) and publisher.stats.acked == sent
    wait_for(lambda: subscriber.count() >= sent)
    assert subscriber.count() == sent
    online = {t.split("/")[3] for t, _, _ in subscriber.messages if t.endswith("/status")}
    assert online == set(fleet.sims)


def test_publisher_survives_a_broker_restart(broker: Broker, publisher: Publisher) -> None:
    topic = "community/y/wearable/wr-00001/telemetry"
    for i in range(50):
        publisher.publish(topic, b'{"seq": %d}' % i)
    assert publisher.flush(30)
    broker.restart()
    for i in range(50, 100):
        publisher.publish(topic, b'{"seq": %d}' % i)
    assert publisher.flush(60)
    assert publisher.stats.acked == 100 and publisher.stats.reconnects >= 1


def test_the_command_plays_a_scenario(broker: Broker, subscriber: Subscriber) -> None:
    user = broker.test_access("sim-command").username
    assert user is not None
    argv = [
        "--host",
        broker.host,
        "--port",
        str(broker.port),
        "--scenario",
        "bad_input",
        "--username",
        user,
        "--password-file",
        str(broker.password_file(user)),
    ]
    assert main([*argv, "--quiet", "--devices", "50"]) == 0
    wait_for(lambda: subscriber.count() >= 21)
    assert subscriber.count() == 21


def test_the_command_plays_through_gateway_accounts_over_tls(
    broker: Broker, subscriber: Subscriber
) -> None:
    """As in the demo: the fleet's registry gives one account per compound's gateway; the
    simulator connects each over TLS and sends every device's messages through its own
    compound's gateway. The two bad_input messages for devices of no compound (``lamp-01``,
    ``smk.01!``) are refused by the broker; the rest arrive."""
    fleet = build_fleet(seed=1, devices=50)
    broker.provision(fleet.registry)
    argv = [
        "--host",
        broker.host,
        "--port",
        str(broker.tls_port),
        "--tls-ca",
        str(broker.ca_file),
        "--credentials",
        str(broker.auth_dir / "credentials.json"),
        "--scenario",
        "bad_input",
        "--quiet",
        "--devices",
        "50",
    ]
    assert main(argv) == 0
    wait_for(lambda: subscriber.count() >= 19)
    topics = [t for t, _, _ in subscriber.messages]
    assert len(topics) == 19
    assert not any("lamp-01" in t or "smk.01!" in t for t in topics)
