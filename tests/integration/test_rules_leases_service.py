"""Two `jiayuan run` on one PostgreSQL share the device partitions by lease; one is SIGKILLed and
the other takes its partitions over after the lease ttl and evaluates their rows from the
committed cursors: every fall alerted exactly once (rules/worker.py ``leases``)."""

from __future__ import annotations

import json
from pathlib import Path

import psycopg
import pytest

from devtools.broker import Broker
from devtools.launch import ServiceProcess
from district.partitions import DEFAULT_PARTITIONS, partition_of
from tests.mqtt import Publisher, wait_for
from tests.stores import Stores

pytestmark = pytest.mark.network


def held(svc: ServiceProcess) -> set[int]:
    return set(svc.health()["partitions_held"])


def test_a_killed_instances_partitions_are_taken_over_and_every_fall_alerted_once(
    broker: Broker, tmp_path: Path, pg_url: str
) -> None:
    stores = Stores(pg_url)
    a, b = (
        ServiceProcess(
            tmp_path / name,
            broker,
            **stores.settings,
            instance_id=name,
            partition_lease_ttl_s=5,
            mqtt_client_id=f"jiayuan-ingest-{name}",
            mqtt_urgent_client_id=f"jiayuan-urgent-{name}",
        )
        for name in ("a", "b")
    )
    pub = Publisher(broker, client_id="wearables")

    def falls(devices: list[str], seq: int) -> None:
        for d in devices:
            pub.publish(
                f"community/y/wearable/{d}/event", json.dumps({"event": "fall", "seq": seq})
            )
        pub.wait_acked()

    def alerted() -> dict[str, int]:
        with psycopg.connect(pg_url) as db:
            rows = db.execute(
                "SELECT device_id, count(*) FROM alerts WHERE rule_id = 'wearable_fall'"
                " GROUP BY device_id"
            ).fetchall()
        return {str(d): int(n) for d, n in rows}

    try:
        a.start()
        b.start()
        halves: list[set[int]] = []

        def balanced() -> bool:
            # one read of each, so the half recorded is the half that was balanced
            ha, hb = held(a), held(b)
            halves[:] = [ha]
            return bool(
                ha | hb == set(range(DEFAULT_PARTITIONS)) and not ha & hb and len(ha) == len(hb)
            )

        wait_for(balanced, timeout=60)
        assert a.health()["partitions_evaluated"] is not None
        first = [f"wr-{i}" for i in range(20)]
        falls(first, 1)
        wait_for(lambda: len(alerted()) == 20, timeout=60)

        # a's half, read again when balanced: under load a short lease can lapse locally for
        # a moment and a then reports holding nothing
        wait_for(balanced, timeout=60)
        a_had = halves[0]
        a.kill()  # no release: its leases lapse after the ttl
        later = [f"wr-{i}" for i in range(20, 40)]
        assert any(partition_of(d, DEFAULT_PARTITIONS) in a_had for d in later)
        falls(later, 2)
        falls(first, 3)  # again, with their alerts open: nothing new
        wait_for(lambda: held(b) == set(range(DEFAULT_PARTITIONS)), timeout=60)
        wait_for(lambda: len(alerted()) == 40, timeout=60)
        wait_for(lambda: b.health()["rules_worker"]["behind"] == 0, timeout=60)
        assert alerted() == {f"wr-{i}": 1 for i in range(40)}
    finally:
        pub.close()
        a.kill()
        b.stop()
