"""The dispatcher while the PostgreSQL database is out of reach: one WARNING line when it begins
(the driver's words, not the server's address), no traceback and no error counted at every
tick, a reminder at most every few minutes, one INFO line when the database answers again; and
the next fall is paged. The real outage, under ``jiayuan run``, is in
tests/integration/test_pg_outage_answers.py."""

from __future__ import annotations

import logging
from pathlib import Path

import psycopg
import pytest

from alerts.escalation import Timer
from alerts.outage import REMIND_S, Outage, database_away
from tests.alerting import FakeClock, FakeSender, dispatcher, fire, settle

REFUSED = psycopg.OperationalError(
    'connection failed: connection to server at "127.0.0.1", port 5432 failed: Connection refused'
    "\n\tIs the server running on that host and accepting TCP/IP connections?"
)


def records(caplog: pytest.LogCaptureFixture, level: int) -> list[str]:
    """The dispatcher's lines at ``level``, but for its duty coverage check's: that runs in a
    thread of its own from the start, and under load logged its holes after ``caplog.clear()``
    (CI once)."""
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == "alerts.dispatch"
        and r.levelno == level
        and not r.getMessage().startswith("duty coverage")
    ]


def test_ticks_that_meet_the_outage_say_it_once_and_the_return_once(
    alerts_at: Path | str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="alerts.dispatch")
    clock, sender = FakeClock(), FakeSender()
    with dispatcher(alerts_at, clock, sender) as d:
        real = d.timers.due
        away = True

        def due(now: float, limit: int = 200) -> list[Timer]:
            if away:
                raise REFUSED
            return real(now, limit)

        d.timers.due = due  # type: ignore[method-assign]
        caplog.clear()
        for _ in range(5):
            assert d.poll() == 0
        assert d.alive
        (warning,) = records(caplog, logging.WARNING)
        assert warning == (
            "dispatch: reading the due steps failed, the database cannot be reached"
            " (Connection refused); due steps and deliveries wait until it answers"
        )
        assert records(caplog, logging.INFO) == []
        assert not [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]

        away = False
        d.poll()
        (back,) = records(caplog, logging.INFO)
        assert back.startswith("dispatch: the database answers again after ")
        assert back.endswith("(5 failed attempts); due steps taken again")
        d.poll()
        assert len(records(caplog, logging.INFO)) == 1  # said once

        d.store.apply(fire("smoke_alarm", "smk-101"))
        settle(d)
        assert sender.sent, "nobody was paged after the outage"
    # (the fixture asserts no error was counted: an outage is no bug)


def test_a_long_outage_is_recalled_at_most_every_few_minutes(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger="alerts.dispatch")
    clock = FakeClock()
    outage = Outage(logging.getLogger("alerts.dispatch"), clock)
    reason = database_away(REFUSED)
    assert reason == "Connection refused"
    for _ in range(int(REMIND_S)):  # a tick a second
        outage.failed("reading the due steps", reason)
        clock.advance(1.0)
    outage.failed("adopt", reason)
    warnings = records(caplog, logging.WARNING)
    assert len(warnings) == 2
    assert warnings[1] == (
        "dispatch: the database still cannot be reached after 300 s (Connection refused);"
        " due steps and deliveries wait"
    )
    assert database_away(ValueError("a bug")) is None  # a bug keeps its traceback
