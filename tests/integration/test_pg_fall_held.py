"""A fall on PostgreSQL alerts while an older transaction on the journal is still open: the real
broker, the real service (``JIAYUAN_DATABASE_URL``), a telemetry row of the same wearable
written in a transaction the test keeps open, which holds back every row read in ``(xid, id)``
order behind it (district/follow.py). The fall is raised before that transaction ends, and once
only after it has ended and the rules worker's ordered read has passed it — also when the
service is SIGKILLed after raising it ahead, before the ordered read reaches it."""

from __future__ import annotations

import json
from pathlib import Path

import psycopg
import pytest

from devtools.broker import Broker
from devtools.launch import ServiceProcess
from district.pg import connect
from tests.integration.test_ingest_processes import children_shown_as, niceness
from tests.integration.test_pg_urgent_ahead import HOLD
from tests.mqtt import Publisher, wait_for
from tests.stores import Stores

pytestmark = pytest.mark.network

DEVICE = "wr-7"
TELEMETRY = f"community/y/wearable/{DEVICE}/telemetry"
FALL = f"community/y/wearable/{DEVICE}/event"


def test_a_fall_alerts_before_an_older_open_journal_transaction_ends_and_once_after(
    broker: Broker, tmp_path: Path, pg_url: str
) -> None:
    data = tmp_path / "service"
    stores = Stores(pg_url)
    pub = Publisher(broker)
    svc = ServiceProcess(data, broker, **stores.settings).start()
    held = connect(pg_url)
    try:
        wait_for(lambda: len(svc.health().get("partitions_held", ())) > 0, timeout=60)
        # the session slots' processes yield the CPU to the main process (JIAYUAN_INGEST_NICE)
        assert svc.proc is not None
        pid, shown = svc.proc.pid, "jiayuan: ingest, telemetry slot"
        wait_for(lambda: children_shown_as(pid, shown), timeout=60)
        assert {niceness(p) for p in children_shown_as(pid, shown)} == {niceness(pid) + 5}
        for seq in range(3):
            pub.publish(TELEMETRY, json.dumps({"seq": seq, "heart_rate": 70, "worn": True}))
        journal = f"SELECT count(*) FROM readings WHERE device_id = '{DEVICE}'"
        wait_for(lambda: stores.journal(data, journal) == 3, timeout=60)
        wait_for(lambda: svc.health()["rules_worker"]["behind"] == 0, timeout=60)

        assert held.execute(HOLD, (DEVICE,)).rowcount == 1  # left open
        (held_xid,) = held.execute("SELECT pg_current_xact_id()::text::bigint").fetchone() or (0,)
        pub.publish(FALL, json.dumps({"event": "fall", "seq": 3}))
        wait_for(lambda: svc.get(f"/api/alerts?device_id={DEVICE}")["items"], timeout=60)

        assert held.info.transaction_status == psycopg.pq.TransactionStatus.INTRANS
        horizon = "SELECT pg_snapshot_xmin(pg_current_snapshot())::text::bigint"
        assert stores.journal(data, horizon) <= held_xid  # still held back by it
        ahead = "SELECT count(*) FROM follower_ahead"
        assert stores.journal(data, ahead) == 1  # the fall, evaluated ahead of the horizon

        held.commit()
        wait_for(lambda: stores.journal(data, ahead) == 0, timeout=60)  # the cursor passed
        wait_for(lambda: svc.health()["rules_worker"]["behind"] == 0, timeout=60)
        (alert,) = svc.get(f"/api/alerts?device_id={DEVICE}")["items"]
        assert (alert["rule_id"], alert["status"]) == ("wearable_fall", "firing")
        matched = "SELECT max(match_count) FROM alerts WHERE rule_id = 'wearable_fall'"
        assert stores.alerts(data, matched) == 1  # not evaluated again by the ordered read
    finally:
        held.close()
        svc.stop()
        pub.close()


def test_a_fall_raised_ahead_is_not_raised_again_after_a_sigkill_before_the_ordered_read(
    broker: Broker, tmp_path: Path, pg_url: str
) -> None:
    """The step after the ahead read's commit: the fall's alert and its ``follower_ahead`` row
    are committed, the cursor is not past it yet. A SIGKILL there, a restart (the same
    instance id: it renews its leases at once) while the older transaction is still open, then
    that transaction's end: one alert, matched once."""
    data = tmp_path / "service"
    stores = Stores(pg_url)
    pub = Publisher(broker)
    settings = {**stores.settings, "instance_id": "a", "process_group": True}
    svc = ServiceProcess(data, broker, **settings).start()
    held = connect(pg_url)
    try:
        wait_for(lambda: len(svc.health().get("partitions_held", ())) > 0, timeout=60)
        pub.publish(TELEMETRY, json.dumps({"seq": 0, "heart_rate": 70, "worn": True}))
        journal = f"SELECT count(*) FROM readings WHERE device_id = '{DEVICE}'"
        wait_for(lambda: stores.journal(data, journal) == 1, timeout=60)
        wait_for(lambda: svc.health()["rules_worker"]["behind"] == 0, timeout=60)
        assert held.execute(HOLD, (DEVICE,)).rowcount == 1  # left open
        pub.publish(FALL, json.dumps({"event": "fall", "seq": 1}))
        ahead = "SELECT count(*) FROM follower_ahead"
        wait_for(lambda: stores.journal(data, ahead) == 1, timeout=60)  # raised ahead

        svc.kill()  # the ordered read has not reached the fall: the horizon is still held
        svc = ServiceProcess(data, broker, http_port=svc.http_port, **settings).start()
        every = "SELECT count(*) FROM alerts WHERE rule_id = 'wearable_fall'"
        matched = "SELECT max(match_count) FROM alerts WHERE rule_id = 'wearable_fall'"
        wait_for(lambda: len(svc.health().get("partitions_held", ())) > 0, timeout=60)
        wait_for(lambda: svc.health()["rules_worker"]["behind"] == 0, timeout=60)
        assert held.info.transaction_status == psycopg.pq.TransactionStatus.INTRANS
        assert (stores.alerts(data, every), stores.alerts(data, matched)) == (1, 1)

        held.commit()
        wait_for(lambda: stores.journal(data, ahead) == 0, timeout=60)  # the cursor passed
        wait_for(lambda: svc.health()["rules_worker"]["behind"] == 0, timeout=60)
        assert (stores.alerts(data, every), stores.alerts(data, matched)) == (1, 1)
        (alert,) = svc.get(f"/api/alerts?device_id={DEVICE}")["items"]
        assert (alert["rule_id"], alert["status"]) == ("wearable_fall", "firing")
    finally:
        held.close()
        svc.stop()
        pub.close()
