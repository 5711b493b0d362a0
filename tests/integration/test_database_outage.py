"""One `jiayuan run` on PostgreSQL (``JIAYUAN_DATABASE_URL``) while its database goes away and
comes back: /healthz says so, nothing published meanwhile is lost or stored twice."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from devtools.broker import Broker
from devtools.launch import ServiceProcess
from devtools.postgres import TEST_SETTINGS, Postgres
from tests.mqtt import Publisher, wait_for
from tests.stores import Stores

pytestmark = pytest.mark.network

SECRET = "pw-never-logged"


@pytest.fixture
def own_postgres() -> Iterator[Postgres]:
    """A cluster of this test's own: it is stopped and started under the service."""
    with Postgres(settings=TEST_SETTINGS) as pg:
        yield pg


def problems(svc: ServiceProcess) -> list[str]:
    found: list[str] = svc.health()["problems"]
    return found


OUTAGE_ERRORS = (
    'jiayuan_log_errors_total{logger="alerts.dispatch"}',
    "jiayuan_journal_write_failures_total",
    "jiayuan_rules_commit_failures_total",
    'jiayuan_log_errors_total{logger="ingest.pipeline"}',
    'jiayuan_log_errors_total{logger="rules.worker"}',
)
"""The error counters a service moves while its database is away: the pipeline's, the rules
worker's and the dispatcher's failures are logged (the first two once per outage) and counted."""


def test_readings_published_while_the_database_is_down_are_stored_once_after_it_returns(
    broker: Broker, tmp_path: Path, own_postgres: Postgres
) -> None:
    # a password in the URL (trust authentication ignores it): it must never reach the log
    url = own_postgres.create_database("jiayuan").replace("://jiayuan@", f"://jiayuan:{SECRET}@")
    assert SECRET in url
    stores = Stores(url)
    data = tmp_path / "service"
    svc = ServiceProcess(
        data,
        broker,
        **stores.settings,
        expect_errors=OUTAGE_ERRORS,
    ).start()
    pub = Publisher(broker, client_id="wearables")
    topic = "community/y/wearable/wk-{}/telemetry"
    try:
        for i in range(50):
            pub.publish(topic.format(i % 5), json.dumps({"seq": i, "heart_rate": 70, "worn": True}))
        pub.wait_acked()
        wait_for(lambda: stores.journal(data, "SELECT count(*) FROM readings") == 50, timeout=30)
        wait_for(lambda: svc.health()["rules_worker"]["behind"] == 0, timeout=30)
        # evaluated and committed (a quiet batch's commit may be held for a moment). Not the
        # position: on PostgreSQL it is the largest id of the partitions' cursors, and with
        # several writers (the session slots' processes) ids are not in commit order
        wait_for(lambda: svc.health()["rules_worker"]["evaluated"] >= 50, timeout=30)
        assert svc.health()["status"] == "ok"

        own_postgres.halt()
        wait_for(
            lambda: any(p.startswith("database unreachable: ") for p in problems(svc)),
            timeout=30,
        )
        (said,) = [p for p in problems(svc) if p.startswith("database unreachable")]
        assert said.endswith("; nothing acknowledged")
        assert str(own_postgres.port) not in said  # /healthz is public: not where the server is
        assert svc.health()["database"]["reachable"] is False
        for i in range(50, 250):
            pub.publish(topic.format(i % 5), json.dumps({"seq": i, "heart_rate": 70, "worn": True}))
        pub.publish("community/y/wearable/wr-9/event", json.dumps({"event": "fall", "seq": 1}))
        pub.wait_acked()  # the broker has them: queued, unacknowledged by the service
        assert any(p.startswith("database unreachable") for p in problems(svc))

        own_postgres.resume()
        wait_for(lambda: stores.journal(data, "SELECT count(*) FROM readings") == 251, timeout=90)
        wait_for(lambda: svc.health()["status"] == "ok", timeout=60)
        distinct = stores.journal(
            data, "SELECT count(*) FROM (SELECT DISTINCT device_id, seq FROM readings) AS d"
        )
        assert distinct == 251  # none lost, none twice
        wait_for(lambda: svc.get("/api/alerts?device_id=wr-9")["items"], timeout=30)
        (alert,) = svc.get("/api/alerts?device_id=wr-9")["items"]
        assert alert["rule_id"] == "wearable_fall"
    finally:
        svc.stop()
        pub.close()
    logged = svc.log.read_text()
    assert "journal and alert store in PostgreSQL postgresql://jiayuan:***@" in logged
    assert SECRET not in logged
