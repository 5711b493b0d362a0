"""The InfluxDB sink end to end: devices publish to the real Mosquitto, ``jiayuan run`` (a child
process) journals and writes to a real VictoriaMetrics through the InfluxDB v2 write API, and
what the server stored is read back through its export API, sample by sample.

VictoriaMetrics keeps numbers only: each field is a series ``<measurement>_<field>`` and a
string field (an event's name) a series of zeros, so events are checked by series and count.
Tests marked ``victoria(dedup=True)`` count what InfluxDB would hold (one point per series and
time: a batch sent again after a crash overwrites itself) and bound the resends separately.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from devtools.broker import Broker
from devtools.launch import ServiceProcess
from devtools.victoria import Victoria
from district.pg import connect as pg_connect
from tests.influx_front import StrictFront
from tests.mqtt import Publisher, wait_for
from tests.stores import Stores

pytestmark = pytest.mark.network

REGISTRY = """\
- {device_id: wr-1, kind: wearable, compound: C01, building: B01}
- {device_id: wr-2, kind: wearable, compound: C01, building: B02}
- {device_id: smk-1, kind: smoke, compound: C01, building: B01}
- {device_id: gate-1, kind: gate, compound: C01}
"""
Sample = tuple[str, str, int]
"""(series, device_id, timestamp ms) as VictoriaMetrics exports it."""


class Devices:
    """Publishes readings and remembers the samples each must become."""

    def __init__(self, broker: Broker, client_id: str = "devices") -> None:
        self.pub = Publisher(broker, client_id=client_id)
        self.expected: Counter[Sample] = Counter()
        self.messages = 0
        self.t0 = int(time.time() * 1000) - 3_600_000  # an hour ago: ts are believed
        self.seq: Counter[str] = Counter()

    def _send(self, kind: str, dev: str, stream: str, body: dict[str, Any]) -> int:
        self.seq[dev] += 1
        ts = self.t0 + self.seq[dev] * 10  # distinct per device, 10 ms apart
        self.pub.publish(
            f"community/y/{kind}/{dev}/{stream}",
            json.dumps({"seq": self.seq[dev], "ts": ts, **body}),
        )
        self.messages += 1
        return ts

    def wearable(self, dev: str, n: int) -> None:
        for i in range(n):
            body = {"heart_rate": 60 + i % 50, "spo2": 97, "steps": i, "worn": i % 7 != 0}
            ts = self._send("wearable", dev, "telemetry", body)
            for field in body:
                self.expected[(f"wearable_{field}", dev, ts)] += 1

    def smoke(self, dev: str, n: int) -> None:
        for i in range(n):
            ts = self._send("smoke", dev, "telemetry", {"obscuration_pct_m": i / 100})
            self.expected[("smoke_obscuration_pct_m", dev, ts)] += 1

    def events(self, n: int) -> None:
        for _ in range(n):
            ts = self._send("gate", "gate-1", "event", {"event": "granted", "direction": "in"})
            for field in ("event", "count", "direction"):
                self.expected[(f"gate_event_{field}", "gate-1", ts)] += 1
            self._send("gate", "gate-1", "telemetry", {})  # a keep-alive: nothing to write
        ts = self._send("wearable", "wr-2", "status", {"state": "online"})
        self.expected[("wearable_status_online", "wr-2", ts)] += 1

    def close(self) -> None:
        self.pub.wait_acked(60)
        self.pub.close()


@pytest.fixture
def registry(tmp_path: Path) -> Path:
    path = tmp_path / "registry"
    path.mkdir()
    (path / "devices.yaml").write_text(REGISTRY)
    return path


def start_service(
    broker: Broker,
    url: str,
    tmp_path: Path,
    registry: Path,
    stores: Stores | None = None,
    **settings: Any,
) -> ServiceProcess:
    """The service with the sink on, its journal on ``stores`` (SQLite files by default)."""
    options: dict[str, Any] = {"influx_backoff_max_s": 0.5, "registry": registry}
    options.update(stores.settings if stores is not None else {})
    options.update(settings)
    return ServiceProcess(tmp_path / "service", broker.port, influx_url=url, **options).start()


def rejects(stores: Stores, data: Path) -> list[tuple[Any, ...]]:
    """(status, reason, line) of the points set aside, from the journal's database."""
    query = "SELECT status, reason, line FROM sink_rejects"
    if stores.url is None:
        db = sqlite3.connect(data / "journal.db")
        try:
            return db.execute(query).fetchall()
        finally:
            db.close()
    with pg_connect(stores.url) as pg:
        return pg.execute(query).fetchall()


def influx(svc: ServiceProcess) -> dict[str, Any]:
    health: dict[str, Any] = svc.health()["influx"]
    return health


def committed(svc: ServiceProcess) -> int:
    return int(svc.health()["messages_committed"])


def stored(vm: Victoria, expected: Counter[Sample]) -> Counter[Sample]:
    """Once every expected sample is searchable: what the server holds."""
    names = "|".join(sorted({name for name, _, _ in expected}))
    match = f'{{__name__=~"{names}"}}'

    def complete() -> bool:
        vm.flush()
        return set(vm.samples(match)) >= set(expected)

    wait_for(complete, timeout=60, interval=0.5)
    return vm.samples(match)


def drained(svc: ServiceProcess, messages: int) -> bool:
    h = svc.health()
    return bool(h["messages_committed"] >= messages and h["influx"]["backlog_rows"] == 0)


def trouble_alerts(svc: ServiceProcess) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = svc.get("/api/alerts?device_id=influxdb")["items"]
    return [a for a in items if a["rule_id"] == "timeseries_store_unreachable"]


def test_every_reading_arrives_once_in_steady_flow(
    broker: Broker, victoria: Victoria, tmp_path: Path, registry: Path, stores: Stores
) -> None:
    """On both journals: the PostgreSQL one's sink follows it by partition cursors."""
    svc = start_service(broker, victoria.url, tmp_path, registry, stores)
    try:
        devices = Devices(broker)
        for dev in ("wr-1", "wr-2"):
            devices.wearable(dev, 300)
        devices.smoke("smk-1", 100)
        devices.events(20)
        devices.close()
        wait_for(lambda: drained(svc, devices.messages), timeout=60)
        got = stored(victoria, devices.expected)
        assert got == devices.expected  # each sample once, nothing else
        assert victoria.samples_received() == sum(devices.expected.values())  # nothing resent
        labels = {
            s["metric"]["device_id"]: s["metric"]
            for s in victoria.export('{__name__=~"wearable_heart_rate|gate_event_count"}')
        }
        assert labels["wr-2"] == {
            "__name__": "wearable_heart_rate",
            "community": "y",
            "compound": "C01",
            "building": "B02",
            "device_id": "wr-2",
        }
        assert labels["gate-1"] == {
            "__name__": "gate_event_count",
            "community": "y",
            "compound": "C01",
            "device_id": "gate-1",
        }
        h = influx(svc)
        assert (h["enabled"], h["status"], h["rejected_points"]) == (True, "ok", 0)
        metrics = svc.get_text("/metrics")
        assert "jiayuan_influx_backlog_rows 0.0" in metrics
        assert "jiayuan_influx_backlog_age_seconds" in metrics
    finally:
        svc.stop()


@pytest.mark.victoria(dedup=True)
def test_an_outage_stalls_nothing_raises_trouble_and_the_backlog_drains(
    broker: Broker, victoria: Victoria, tmp_path: Path, registry: Path, stores: Stores
) -> None:
    svc = start_service(
        broker,
        victoria.url,
        tmp_path,
        registry,
        stores,
        influx_trouble_after_s=2,
        influx_batch=200,
        expect_errors={  # the outage below
            'jiayuan_influx_write_errors_total{kind="connection"}',
            'jiayuan_log_errors_total{logger="ingest.influx"}',
        },
    )
    try:
        devices = Devices(broker)
        devices.wearable("wr-1", 200)
        devices.pub.wait_acked()
        wait_for(lambda: drained(svc, devices.messages), timeout=60)

        stop_publishing = threading.Event()

        def keep_publishing() -> None:  # devices go on while the server goes away
            while not stop_publishing.is_set():
                devices.wearable("wr-2", 20)
                devices.smoke("smk-1", 5)
                time.sleep(0.05)

        publisher = threading.Thread(target=keep_publishing)
        mark = committed(svc)
        publisher.start()
        try:
            wait_for(lambda: committed(svc) > mark + 200, timeout=30)
            victoria.stop()
            mark = committed(svc)
            wait_for(lambda: influx(svc)["status"] == "unreachable", timeout=30)
            wait_for(lambda: [a["status"] for a in trouble_alerts(svc)] == ["firing"], timeout=30)
            wait_for(lambda: committed(svc) > mark + 500, timeout=30)  # ingestion goes on
        finally:
            stop_publishing.set()
            publisher.join()
        devices.close()
        wait_for(lambda: committed(svc) == devices.messages, timeout=60)
        h = influx(svc)
        assert h["backlog_rows"] > 500 and h["backlog_age_s"] > 0 and h["last_error"]
        (alert,) = trouble_alerts(svc)
        assert (alert["severity"], alert["signal"], alert["route"]) == (
            "major",
            "trouble",
            "operator",
        )

        victoria.start()
        wait_for(lambda: drained(svc, devices.messages), timeout=90)
        wait_for(lambda: [a["status"] for a in trouble_alerts(svc)] == ["resolved"], timeout=30)
        assert stored(victoria, devices.expected) == devices.expected
        assert influx(svc)["status"] == "ok"
    finally:
        svc.stop()


@pytest.mark.victoria(dedup=True)
def test_a_kill_during_a_drain_loses_nothing_and_resends_at_most_one_batch(
    broker: Broker, victoria: Victoria, tmp_path: Path, registry: Path
) -> None:
    batch = 20
    victoria.stop()
    svc = start_service(broker, victoria.url, tmp_path, registry, influx_batch=batch)
    try:
        devices = Devices(broker)
        for dev in ("wr-1", "wr-2"):
            devices.wearable(dev, 1500)
        devices.close()
        wait_for(lambda: committed(svc) == devices.messages, timeout=60)
        backlog = devices.messages
        wait_for(lambda: influx(svc)["backlog_rows"] == backlog, timeout=30)

        victoria.start()
        wait_for(
            lambda: 0 < influx(svc)["backlog_rows"] < backlog - 2 * batch, timeout=60, interval=0.01
        )
        svc.kill()
        db = sqlite3.connect(tmp_path / "service" / "journal.db")
        cursor = db.execute("SELECT last_id FROM cursors WHERE name LIKE 'influx:%'").fetchone()[0]
        db.close()
        assert 0 < cursor < devices.messages  # killed half way through

        svc.start()  # its counters start again from zero; the journal and cursor remain
        wait_for(lambda: influx(svc)["backlog_rows"] == 0, timeout=90)
        assert stored(victoria, devices.expected) == devices.expected
        resent = victoria.samples_received() - sum(devices.expected.values())
        assert 0 <= resent <= batch * 4  # at most the batch in flight (4 fields a reading)
    finally:
        svc.stop()


@pytest.mark.victoria(dedup=True)
def test_points_refused_for_good_are_set_aside_without_blocking(
    broker: Broker, victoria: Victoria, tmp_path: Path, registry: Path, stores: Stores
) -> None:
    # the bucket already holds ``steps`` as a float: InfluxDB refuses our integer steps
    front = StrictFront(victoria.url, {("wearable", "steps"): "float"}).start()
    svc = start_service(
        broker,
        front.url,
        tmp_path,
        registry,
        stores,
        influx_batch=100,
        expect_errors={
            'jiayuan_influx_write_errors_total{kind="refused"}',
            "jiayuan_influx_points_rejected_total",
        },
    )
    try:
        devices = Devices(broker)
        devices.smoke("smk-1", 150)
        devices.wearable("wr-1", 7)  # refused: steps=…i
        devices.smoke("smk-1", 150)
        devices.close()
        wait_for(lambda: drained(svc, devices.messages), timeout=60)
        refused = Counter({k: v for k, v in devices.expected.items() if k[1] == "wr-1"})
        accepted = devices.expected - refused
        assert stored(victoria, accepted) == accepted
        assert not victoria.samples('{__name__=~"wearable_.+"}')
        assert influx(svc)["rejected_points"] == 7
        rows = rejects(stores, tmp_path / "service")
        assert len(rows) == 7 and all(
            status == 400 and "field type conflict" in reason and "device_id=wr-1" in line
            for status, reason, line in rows
        )
        assert "jiayuan_influx_points_rejected_total 7.0" in svc.get_text("/metrics")
    finally:
        svc.stop()
        front.stop()
