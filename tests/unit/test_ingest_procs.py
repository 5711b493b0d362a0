"""The ingest processes' identities and settings (jiayuan/ingest_procs.py); the processes
themselves are tested against the real broker and service in
tests/integration/test_ingest_processes.py."""

from __future__ import annotations

from typing import Any

import pytest
from prometheus_client import REGISTRY, Counter
from pydantic import ValidationError

from ingest.listener import shared
from ingest.metrics import DEADLOCK_RETRIES, PARTITION_RETRIES, PARTITIONS_MADE, PTS_FALLBACKS
from ingest.pipeline import StoreHealth
from jiayuan.broker.accounts import INGEST_PROCESSES_MAX, telemetry_users
from jiayuan.ingest_procs import ChildSpec, IngestProcesses, Report, _counters, identity, title
from jiayuan.settings import Settings
from registry import Registry


def settings(**kw: object) -> Settings:
    return Settings.model_validate({"demo": True, **kw})


def test_the_first_process_is_the_single_processs_session_and_the_others_their_own() -> None:
    with_account = settings(
        mqtt_username="jiayuan.service",
        mqtt_password="p" * 32,
        mqtt_urgent_username="jiayuan.urgent",
        mqtt_urgent_password="u" * 32,
    )
    assert identity(with_account, 1) == ("jiayuan-ingest", "jiayuan.service")
    assert identity(with_account, 2) == ("jiayuan-ingest-t2", "jiayuan.service-t2")
    assert identity(settings(), 3) == ("jiayuan-ingest-t3", None)
    # an account for every process the setting allows
    assert [identity(with_account, i)[1] for i in range(2, INGEST_PROCESSES_MAX + 1)] == (
        telemetry_users()
    )


def test_the_setting_is_one_by_default_and_bounded() -> None:
    assert settings().ingest_processes == 1
    assert settings(ingest_processes=2).ingest_processes == 2
    for bad in (0, INGEST_PROCESSES_MAX + 1):
        with pytest.raises(ValidationError):
            settings(ingest_processes=bad)


def test_telemetry_is_read_apart_with_more_processes_or_when_asked_and_only_on_sqlite() -> None:
    assert settings().ingest_apart()  # the default: one process apart reads it
    assert not settings(ingest_separate=False).ingest_apart()  # the main process reads it
    assert settings(ingest_processes=3).ingest_apart()
    # on PostgreSQL the session slots' processes read telemetry: the setting changes nothing
    pg = settings(ingest_separate=True, database_url="postgresql://jiayuan@127.0.0.1/jiayuan")
    assert not pg.ingest_apart()


def test_shared_filters_name_the_group() -> None:
    assert shared(("community/+/+/+/telemetry",)) == (
        "$share/jiayuan-ingest/community/+/+/+/telemetry",
    )


def test_each_process_is_named_in_ps_as_health_names_it() -> None:
    def spec(**kw: Any) -> ChildSpec:
        return ChildSpec(settings=settings(), registry=Registry(), **kw)

    assert title(spec(index=1, count=1)) == "jiayuan: ingest process 1 of 1"
    assert title(spec(index=3, count=2, retiring=True)) == "jiayuan: ingest process 3 (draining)"
    assert title(spec(index=0, count=4, client_id="jiayuan-t0", username="u")) == (
        "jiayuan: ingest, telemetry slot 0"
    )


@pytest.mark.parametrize(
    ("name", "counter"),
    [
        ("jiayuan_journal_partitions_made_total", PARTITIONS_MADE),
        ("jiayuan_journal_pts_fallbacks_total", PTS_FALLBACKS),
        ("jiayuan_journal_partition_retries_total", PARTITION_RETRIES),
        ("jiayuan_journal_deadlock_retries_total", DEADLOCK_RETRIES),
    ],
)
def test_a_childs_journal_partition_counts_are_added_into_the_main_processs(
    name: str, counter: Counter
) -> None:
    """On PostgreSQL a session slot's process journals telemetry with a PgJournal of its own:
    what it counts reaches the main process's /metrics by its reports, as its other counters."""
    procs = IngestProcesses(settings(), Registry(), lambda: None, 1)
    slot = procs._slots[0]
    slot.counters = _counters()  # the child's last report, already added in
    counter.inc(3)  # the child counts (its report is read from this process's counters)
    report = Report(
        pid=1,
        up=True,
        session_present=True,
        store=StoreHealth(ok=True),
        oldest_unacked_s=None,
        committed=0,
        queued=0,
        counters=_counters(),
        threads={},
    )
    before = REGISTRY.get_sample_value(name)
    assert before is not None
    procs._handle(slot, ("report", report))
    assert REGISTRY.get_sample_value(name) == before + 3
