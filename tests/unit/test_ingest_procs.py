"""The ingest processes' identities and settings (jiayuan/ingest_procs.py); the processes
themselves are tested against the real broker and service in
tests/integration/test_ingest_processes.py."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from ingest.listener import shared
from jiayuan.broker.accounts import INGEST_PROCESSES_MAX, telemetry_users
from jiayuan.ingest_procs import ChildSpec, identity, title
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
