"""What staff and operators see while the district's PostgreSQL is stopped under a running
`jiayuan run`: a console request is answered 503 with words within seconds (not after the
pool's 30 s), and the hourly pruning that meets the outage is one WARNING line, tried again
within minutes, with /healthz fine once the database is back."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from devtools.broker import Broker
from devtools.launch import ServiceProcess
from devtools.postgres import TEST_SETTINGS, Postgres
from registry import write_registry
from tests.mqtt import wait_for
from tests.staffworld import registry
from tests.stores import Stores

pytestmark = pytest.mark.network

DATABASE_AWAY = (
    'jiayuan_log_errors_total{logger="alerts.dispatch"}',
    "jiayuan_journal_write_failures_total",
    "jiayuan_rules_commit_failures_total",
    'jiayuan_log_errors_total{logger="ingest.pipeline"}',
    'jiayuan_log_errors_total{logger="rules.worker"}',
)
DEADLINE_S = 20.0
"""Generous for an answer due within a few seconds; well short of the workers' 30 s wait."""


@pytest.fixture
def own_postgres() -> Iterator[Postgres]:
    """A cluster of this test's own: it is stopped and started under the service."""
    with Postgres(settings=TEST_SETTINGS) as pg:
        yield pg


def lines(svc: ServiceProcess, words: str) -> list[str]:
    return [line for line in svc.log.read_text().splitlines() if words in line]


def service(
    tmp_path: Path,
    broker: Broker,
    own_postgres: Postgres,
    expect_errors: tuple[str, ...] = DATABASE_AWAY,
) -> ServiceProcess:
    reg = tmp_path / "registry"
    write_registry(registry(), reg)
    stores = Stores(own_postgres.create_database("jiayuan"))
    return ServiceProcess(
        tmp_path / "service", broker, registry=reg, expect_errors=expect_errors, **stores.settings
    ).start()


def test_a_console_request_is_answered_503_in_words_within_seconds(
    broker: Broker, tmp_path: Path, own_postgres: Postgres
) -> None:
    svc = service(tmp_path, broker, own_postgres)
    try:
        guard = svc.token_for("guard")
        assert svc.request("GET", "/api/alerts", token=guard).status_code == 200
        own_postgres.halt()
        wait_for(lambda: svc.health()["database"]["reachable"] is False, timeout=30)
        for token in (guard, svc.token) * 3:  # a guard's token is looked up, the admin's not
            r = httpx.get(
                f"{svc.url}/api/alerts",
                headers={"Authorization": f"Bearer {token}"},
                timeout=DEADLINE_S,
            )
            assert r.status_code == 503, r.text
            assert r.json() == {"detail": "the database cannot be reached now; try again shortly"}
            assert int(r.headers["retry-after"]) > 0
        own_postgres.resume()
        wait_for(lambda: svc.health()["status"] == "ok", timeout=90)
        wait_for(lambda: svc.request("GET", "/api/alerts", token=guard).status_code == 200)
        # a restart while nobody asks: the pool's idle connections were ended by the server;
        # they are replaced as they are drawn, not handed to a request (every one of them 200)
        own_postgres.halt()
        own_postgres.resume()
        wait_for(lambda: svc.health()["status"] == "ok", timeout=90)
        for token in (guard, svc.token) * 3:
            r = svc.request("GET", "/api/alerts", token=token)
            assert r.status_code == 200, r.text
    finally:
        svc.stop()


def test_pruning_that_meets_the_outage_warns_once_and_runs_again_within_minutes(
    broker: Broker, tmp_path: Path, own_postgres: Postgres
) -> None:
    svc = service(tmp_path, broker, own_postgres)
    try:
        own_postgres.halt()  # the first pruning is due 30 s after the start: it meets this
        wait_for(lambda: lines(svc, "retention: pruning failed"), timeout=90)
        failed = lines(svc, "retention: pruning failed")[0]
        assert " WARNING jiayuan.service: " in failed
        assert "the database refused it" in failed and "trying again in" in failed
        assert str(own_postgres.port) not in failed
        own_postgres.resume()
        # tried again within minutes, not at the next hour
        wait_for(
            lambda: lines(svc, "retention: pruned, the database back"), timeout=300, interval=1
        )
        wait_for(lambda: svc.health()["status"] == "ok", timeout=90)
    finally:
        svc.stop()  # and no ERROR counted: the scheduler's "raised an exception" would be
    assert not lines(svc, "raised an exception")
    assert len(lines(svc, "retention: pruning failed")) <= 5  # one line per attempt


def test_the_dispatcher_meeting_the_outage_warns_once_and_says_when_the_database_is_back(
    broker: Broker, tmp_path: Path, own_postgres: Postgres
) -> None:
    # the dispatcher logs no ERROR now: its error counter must stay at zero (stop() checks)
    away = tuple(e for e in DATABASE_AWAY if "alerts.dispatch" not in e)
    svc = service(tmp_path, broker, own_postgres, expect_errors=away)
    failed_words, back_words = "the database cannot be reached", "dispatch: the database answers"
    try:
        own_postgres.halt()
        wait_for(lambda: lines(svc, "WARNING alerts.dispatch: dispatch: "), timeout=90)
        # the outage lasts many of the dispatcher's ticks (one a second): until the first
        # pruning (30 s after the start) has met it too
        wait_for(lambda: lines(svc, "retention: pruning failed"), timeout=90)
        own_postgres.resume()
        wait_for(lambda: lines(svc, back_words), timeout=120, interval=0.5)
        wait_for(lambda: svc.health()["status"] == "ok", timeout=90)
    finally:
        svc.stop()
    (failed,) = [line for line in lines(svc, failed_words) if "alerts.dispatch" in line]
    assert " WARNING alerts.dispatch: dispatch: " in failed  # once, not at every tick
    assert "due steps and deliveries wait until it answers" in failed
    assert str(own_postgres.port) not in failed and "127.0.0.1" not in failed
    (back,) = lines(svc, back_words)
    assert " INFO alerts.dispatch: " in back
    assert "due steps taken again" in back
    assert "Traceback" not in svc.log.read_text()
