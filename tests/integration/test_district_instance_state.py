"""What a guard or an operator sees on one instance of a district after another instance acted:
two real ``jiayuan run`` on one Mosquitto and one PostgreSQL. Failed sign-ins spread over both
lock the account on both (the count is the database's, not each instance's), and the alert
counts that ``/metrics`` and the console's ops summary show are the same on both after a fall
raised by whichever instance holds the wearable and acknowledged through the other."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from devtools.broker import Broker
from devtools.launch import ServiceProcess
from jiayuan.auth.limiter import ACCOUNT_FREE
from tests.integration.test_database_auth import PASSWORD, one_guard
from tests.mqtt import Publisher, wait_for

pytestmark = pytest.mark.network


def instance(data: Path, broker: Broker, pg_url: str, name: str, registry: Path) -> ServiceProcess:
    return ServiceProcess(
        data,
        broker,
        process_group=True,
        database_url=pg_url,
        instance_id=name,
        registry=registry,
        slot_lease_ttl_s=5,
        partition_lease_ttl_s=5,
    )


def sign_in(svc: ServiceProcess, password: str) -> httpx.Response:
    return httpx.post(
        svc.url + "/api/auth/login",
        json={"staff_id": "guard-1", "password": password},
        timeout=30,
    )


def counts(svc: ServiceProcess) -> dict[str, float]:
    """``jiayuan_alerts`` by status, as /metrics shows it."""
    text = svc.get_text("/metrics")
    return {
        s.labels["status"]: s.value
        for f in text_string_to_metric_families(text)
        if f.name == "jiayuan_alerts"
        for s in f.samples
    }


def test_two_instances_share_failed_sign_ins_and_alert_counts(
    broker: Broker, pg_url: str, tmp_path: Path
) -> None:
    one_guard(tmp_path / "registry")
    a = instance(tmp_path / "a", broker, pg_url, "a", tmp_path / "registry").start()
    try:
        b = instance(tmp_path / "b", broker, pg_url, "b", tmp_path / "registry").start()
        try:
            a.set_password("guard-1", PASSWORD)
            # guesses spread over both instances: the account's free failures are counted once
            codes = [sign_in((a, b)[i % 2], "wrong guess").status_code for i in range(ACCOUNT_FREE)]
            assert codes == [401] * ACCOUNT_FREE
            for svc in (a, b):
                r = sign_in(svc, PASSWORD)  # even the right password, on either instance
                assert r.status_code == 429 and int(r.headers["Retry-After"]) > 0

            # a fall, raised by whichever instance holds the wearable's partition
            wait_for(lambda: a.ready() and b.ready(), 60)
            pub = Publisher(broker, client_id="wearables")
            pub.publish("community/y/wearable/wr-1/event", json.dumps({"seq": 1, "event": "fall"}))
            pub.wait_acked()
            pub.close()
            wait_for(lambda: counts(a)["firing"] == 1 and counts(b)["firing"] == 1, 60)
            (alert,) = b.get("/api/alerts?status=firing")["items"]
            # acknowledged through a: both count it acknowledged (neither firing, nor -1)
            code, _ = a.post(f"/api/alerts/{alert['id']}/ack", {"note": "on my way"})
            assert code == 200
            one_acked = {"firing": 0.0, "acknowledged": 1.0, "resolved": 0.0}
            wait_for(lambda: counts(a) == one_acked and counts(b) == one_acked, 30)
            summary = b.get("/api/ops/summary")
            assert summary["alerts"]["acknowledged"] == 1 and summary["alerts"]["firing"] == 0
        finally:
            b.stop()
    finally:
        a.stop()
