"""The time-series store at district scale: several installations write to one replicated store,
and one community's series stay apart from another's.

Two real ``jiayuan run`` (communities ``y`` and ``x``, each with its own Mosquitto, as two
communities of a district are) write through Debian's ``vmagent`` — which takes the InfluxDB
write API, queues on disk and forwards every sample to each of two VictoriaMetrics nodes — while
one node is stopped and started again. Debian packages no clustered InfluxDB or VictoriaMetrics
cluster (``vminsert``/``vmstorage``); what this shows is the sink's side of such a store: the
line protocol, the ``community`` tag on every series, a write URL with a path (a ``vminsert``
tenant's ``/insert/<account>/influx``), and that nothing the service handed over is lost when a
storage node is down. docs/district.md says what was not tested.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from devtools.broker import Broker
from devtools.launch import ServiceProcess
from devtools.victoria import Victoria, Vmagent
from ingest.influx_writer import InfluxWriter
from registry.models import Registry
from tests.mqtt import Publisher, wait_for

pytestmark = pytest.mark.network

Sample = tuple[str, str, int]
"""(series, device_id, timestamp ms)."""

DEVICES = {"y": ("wr-1", "wr-2", "smk-1"), "x": ("wr-x1", "wr-x2", "smk-x1")}


def registry_file(tmp_path: Path, community: str) -> Path:
    path = tmp_path / f"registry-{community}"
    path.mkdir()
    lines = [
        f"- {{device_id: {d}, kind: {'smoke' if d.startswith('smk') else 'wearable'},"
        f" compound: C01, building: B01}}"
        for d in DEVICES[community]
    ]
    (path / "devices.yaml").write_text("\n".join(lines) + "\n")
    return path


class Community:
    """One community's devices publishing readings, and the samples they must become."""

    def __init__(self, broker: Broker, community: str) -> None:
        self.community = community
        self.pub = Publisher(broker, client_id=f"devices-{community}")
        self.expected: Counter[Sample] = Counter()
        self.messages = 0
        self.t0 = int(time.time() * 1000) - 3_600_000  # an hour ago: believed, and searchable
        self.seq: Counter[str] = Counter()

    def send(self, n: int) -> None:
        for i in range(n):
            for dev in DEVICES[self.community]:
                self.seq[dev] += 1
                ts = self.t0 + self.seq[dev] * 10
                if dev.startswith("smk"):
                    kind, body = "smoke", {"obscuration_pct_m": i / 100}
                else:
                    kind, body = "wearable", {"heart_rate": 60 + i % 50, "spo2": 97}
                self.pub.publish(
                    f"community/{self.community}/{kind}/{dev}/telemetry",
                    json.dumps({"seq": self.seq[dev], "ts": ts, **body}),
                )
                self.messages += 1
                for field in body:
                    self.expected[(f"{kind}_{field}", dev, ts)] += 1
        self.pub.wait_acked(60)


def drained(svc: ServiceProcess, messages: int) -> bool:
    """Every message journaled and handed to the store (the agent accepted it)."""
    h = svc.health()
    return bool(h["messages_committed"] >= messages and h["influx"]["backlog_rows"] == 0)


def holds(vm: Victoria, expected: Counter[Sample]) -> bool:
    vm.flush()
    return set(vm.samples()) >= set(expected)


@pytest.fixture
def second_broker(tmp_path: Path) -> Iterator[Broker]:
    b = Broker(tmp_path / "mosquitto-x", registry=Registry("x", devices=[])).start()
    try:
        yield b
    finally:
        b.stop()


def test_two_communities_write_through_a_replicating_agent_while_a_node_is_down(
    broker: Broker, second_broker: Broker, tmp_path: Path
) -> None:
    nodes = [Victoria(tmp_path / f"vm{i}", dedup=True).start() for i in (1, 2)]
    agent = Vmagent(tmp_path / "vmagent", [n.url for n in nodes]).start()
    services: list[ServiceProcess] = []
    try:
        for community, mq in (("y", broker), ("x", second_broker)):
            services.append(
                ServiceProcess(
                    tmp_path / f"service-{community}",
                    mq,
                    community=community,
                    registry=registry_file(tmp_path, community),
                    influx_url=agent.url,
                    influx_backoff_max_s=0.5,
                ).start()
            )
        y, x = Community(broker, "y"), Community(second_broker, "x")
        y.send(100)
        x.send(100)
        for svc, c in zip(services, (y, x), strict=True):
            wait_for(lambda svc=svc, c=c: drained(svc, c.messages), timeout=60)

        nodes[1].stop()  # one storage node down: the agent queues its copy
        y.send(100)
        x.send(100)
        for svc, c in zip(services, (y, x), strict=True):
            wait_for(lambda svc=svc, c=c: drained(svc, c.messages), timeout=60)
            assert svc.health()["status"] == "ok"  # the service sees no trouble: the agent took it
        nodes[1].start()

        expected = y.expected + x.expected
        for node in nodes:
            wait_for(lambda node=node: holds(node, expected), timeout=90, interval=0.5)
            assert node.samples() == expected  # every reading of both, once, on each node

        # one community's series never carry another's devices
        for community, c in (("y", y), ("x", x)):
            series = nodes[0].export(f'{{community="{community}"}}')
            assert {s["metric"]["device_id"] for s in series} == set(DEVICES[community])
            assert sum(len(s["timestamps"]) for s in series) == sum(c.expected.values())
    finally:
        for svc in services:
            svc.stop()
        agent.stop()
        for n in nodes:
            n.stop()


def test_the_write_url_may_carry_a_path_as_a_tenants_does(victoria: Victoria) -> None:
    """A VictoriaMetrics cluster takes a tenant's writes at ``/insert/<account>/influx`` on
    ``vminsert``; the sink's URL keeps its path. The single node serves the same API under
    ``/influx`` (its own prefix), so the writer's request must go there, not to the root."""
    writer = InfluxWriter(victoria.url + "/influx", "", "jiayuan", "jiayuan", 10)
    try:
        t = int(time.time() * 1000) - 3_600_000
        writer.write(f"wearable,community=x,device_id=wr-x1 heart_rate=71 {t}\n".encode())
    finally:
        writer.close()
    victoria.flush()
    got: list[dict[str, Any]] = victoria.export()
    assert [(s["metric"]["community"], s["values"]) for s in got] == [("x", [71])]
