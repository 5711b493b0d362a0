"""An instance whose clock is out is told, on PostgreSQL: /healthz names the offset past
``JIAYUAN_HEALTH_CLOCK_OFFSET_S`` as a problem and /metrics shows it (district/clock.py).

The clocks are really apart: the database's runs 90 s behind under Debian's libfaketime
(``LD_PRELOAD`` into a throwaway PostgreSQL of its own), the service on the true time. (The
service itself cannot run under libfaketime: Python's timed waits fail there.)"""

from __future__ import annotations

import glob
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from devtools.broker import Broker
from devtools.launch import ServiceProcess
from devtools.postgres import TEST_SETTINGS, Postgres
from district import clock
from district.pg import connect

pytestmark = pytest.mark.network

BEHIND_S = 90


def test_the_offset_is_the_databases_clock_minus_the_instances(pg_url: str) -> None:
    with connect(pg_url, autocommit=True) as db:
        true = clock.measure(db)
        ahead = clock.measure(db, clock=lambda: time.time() + 42)
        behind = clock.measure(db, clock=lambda: time.time() - 42)
    assert abs(true.offset_s) <= 1 + true.error_s  # same machine, same clock
    assert clock.problem(true, 10) is None
    assert ahead.offset_s == pytest.approx(-42, abs=1)
    assert behind.offset_s == pytest.approx(42, abs=1)
    assert clock.problem(ahead, 41) == (
        "this instance's clock and the database's are 42 s apart (this one ahead; more than"
        " 41 s): receive times, rule timers and escalation steps are off by as much; set the"
        " wrong one right (NTP)"
    )
    assert "42 s apart (this one behind;" in (clock.problem(behind, 41) or "")
    assert clock.problem(ahead, 43) is None
    # only an offset surely past the limit: not while the round trip leaves it in doubt
    assert clock.problem(clock.ClockOffset(-12.0, 2.5), 10) is None
    assert clock.problem(clock.ClockOffset(-12.6, 2.5), 10) is not None


@pytest.fixture
def late_postgres() -> Iterator[Postgres]:
    """A throwaway PostgreSQL whose clock is :data:`BEHIND_S` behind the machine's."""
    found = glob.glob("/usr/lib/*/faketime/libfaketime.so.1")
    assert found, "libfaketime is missing: make deps installs it (Debian's faketime)"
    pg = Postgres(
        settings=TEST_SETTINGS, env={"LD_PRELOAD": found[0], "FAKETIME": f"-{BEHIND_S}s"}
    ).start()
    try:
        yield pg
    finally:
        pg.stop()


def offset_on_metrics(svc: ServiceProcess) -> float:
    families = text_string_to_metric_families(svc.get_text("/metrics"))
    found = [
        s.value for f in families for s in f.samples if s.name == "jiayuan_clock_offset_seconds"
    ]
    assert len(found) == 1, found
    return found[0]


def clock_problems(health: dict[str, object]) -> list[str]:
    problems = health["problems"]
    assert isinstance(problems, list)
    return [p for p in problems if "clock" in p]


def test_health_says_when_the_instances_clock_is_out(
    broker: Broker, tmp_path: Path, late_postgres: Postgres, pg_url: str
) -> None:
    url = late_postgres.create_database("jiayuan")
    svc = ServiceProcess(tmp_path / "late", broker, database_url=url).start()
    try:
        health = svc.health()
        assert health["status"] == "degraded"
        assert clock_problems(health) == [
            f"this instance's clock and the database's are {BEHIND_S} s apart (this one ahead;"
            " more than 60 s): receive times, rule timers and escalation steps are off by as"
            " much; set the wrong one right (NTP)"
        ]
        assert health["database"]["reachable"] is True
        assert health["database"]["clock_offset_s"] == pytest.approx(-BEHIND_S, abs=2)
        assert offset_on_metrics(svc) == pytest.approx(-BEHIND_S, abs=2)
    finally:
        svc.stop()

    true = ServiceProcess(tmp_path / "true", broker, database_url=pg_url).start()
    try:
        health = true.health()
        assert clock_problems(health) == []
        assert abs(health["database"]["clock_offset_s"]) < 1
        assert abs(offset_on_metrics(true)) < 1
    finally:
        true.stop()
