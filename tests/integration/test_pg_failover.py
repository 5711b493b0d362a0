"""The PostgreSQL primary SIGKILLed mid-stream and its synchronous standby promoted: nothing
acknowledged is lost and nothing is evaluated twice.

``JIAYUAN_DATABASE_URL`` names both servers, as libpq reads several hosts
(``…@primary:p1,standby:p2/jiayuan?target_session_attrs=read-write``: the one that takes
writes). The primary waits for the standby to have each commit's WAL before the commit returns
(``synchronous_standby_names``), so every reading the service acknowledged to the broker, and
every alert it committed, is on the standby when the primary goes. The service's connections
fail, it holds what it has not committed (the broker redelivers it), reconnects to the promoted
standby and carries on; the readings stream on throughout (docs/district.md, "Failover")."""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from devtools.broker import Broker
from devtools.launch import ServiceProcess
from devtools.postgres import SUPERUSER, Postgres
from district.partitions import DEFAULT_PARTITIONS
from district.pg import connect
from tests.integration.test_database_outage import OUTAGE_ERRORS
from tests.integration.test_exactly_once import each_stored_and_alerted_once
from tests.mqtt import Publisher, wait_for, wearables_and_falls
from tests.stores import Stores

pytestmark = pytest.mark.network

WEARABLES = 300
ROUNDS = 11  # 3,300 messages, 300 of them falls, spread through the stream
STANDBY = "standby"


@pytest.fixture
def primary_and_standby() -> Iterator[tuple[Postgres, Postgres]]:
    """A primary whose commits wait for its standby's flush, and that standby, streaming.
    (``fsync`` off: processes are killed here, not the machine.)"""
    # (dynamic shared memory in files of the data directory: removed with it after a SIGKILL)
    dsm = {"fsync": "off", "dynamic_shared_memory_type": "mmap"}
    primary = Postgres(settings=dsm).start()
    standby = Postgres(settings={**dsm, "cluster_name": STANDBY})
    try:
        primary.create_database("jiayuan")
        standby.start(standby_of=primary)
        with connect(primary.url(), autocommit=True) as db:
            # from now on each commit waits for the standby's flush of its WAL
            db.execute(f"ALTER SYSTEM SET synchronous_standby_names = '{STANDBY}'")
            db.execute("SELECT pg_reload_conf()")
            wait_for(
                lambda: (
                    db.execute(
                        "SELECT count(*) FROM pg_stat_replication"
                        " WHERE application_name = %s AND sync_state = 'sync'",
                        (STANDBY,),
                    ).fetchone()
                    == (1,)
                ),
                timeout=60,
            )
        yield primary, standby
    finally:
        try:
            standby.stop()
        finally:
            primary.stop()


def test_a_primary_killed_mid_stream_loses_nothing_once_its_standby_takes_over(
    broker: Broker, tmp_path: Path, primary_and_standby: tuple[Postgres, Postgres]
) -> None:
    primary, standby = primary_and_standby
    url = (
        f"postgresql://{SUPERUSER}@{primary.host}:{primary.port},{standby.host}:{standby.port}"
        "/jiayuan?target_session_attrs=read-write"
    )
    stores = Stores(url)
    data = tmp_path / "service"
    svc = ServiceProcess(
        data,
        broker,
        **stores.settings,
        expect_errors=OUTAGE_ERRORS,  # while no server takes writes, as in an outage
    ).start()
    pub = Publisher(broker, client_id="wearables")
    total = WEARABLES * ROUNDS

    def journal(query: str) -> int:
        return stores.journal(data, query)

    try:
        t = threading.Thread(
            target=pub.publish_all, args=(wearables_and_falls("wf-", WEARABLES, ROUNDS),)
        )
        t.start()
        wait_for(lambda: journal("SELECT count(*) FROM readings") >= total // 3, timeout=120)
        # the standby falls behind (the primary's WAL sender stopped): the primary's commits
        # wait for it, so the batches in flight stay unacknowledged, their commit records in
        # the primary's WAL alone; with asynchronous replication they would be acknowledged,
        # then lost with the primary (that mutation fails this test)
        with connect(primary.url(), autocommit=True) as db:
            found = db.execute(
                "SELECT pid FROM pg_stat_replication WHERE application_name = %s", (STANDBY,)
            ).fetchone()
        assert found is not None and found[0] > 0, "the standby's WAL sender is not listed"
        os.kill(found[0], signal.SIGSTOP)
        time.sleep(1.0)
        primary.kill()  # mid-stream: batches in flight on every connection, the sender too
        standby.promote()
        t.join()
        pub.wait_acked(timeout=120)
        wait_for(lambda: journal("SELECT count(*) FROM readings") == total, timeout=180)
        every = range(DEFAULT_PARTITIONS)
        wait_for(lambda: len(svc.health().get("partitions_held", ())) == len(every), timeout=120)
        wait_for(lambda: svc.health()["rules_worker"]["behind"] == 0, timeout=120)
        wait_for(lambda: svc.health()["status"] == "ok", timeout=60)
    finally:
        svc.stop()
        pub.close()

    each_stored_and_alerted_once(stores, data, total, WEARABLES)
    # the alert history's positions the failover skipped are no reason for consoles to resync
    assert "were pruned before this instance read them" not in svc.log.read_text()
