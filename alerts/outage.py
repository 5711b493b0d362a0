"""The alert database out of reach, as the dispatcher tells it: one WARNING line when the outage
begins (what failed, in the driver's words, without where the server is: the log is read by
people who need not know), a reminder at most every :data:`REMIND_S` while it lasts, and one
INFO line when the database answers again. No traceback: nothing is wrong with the service, and
``/healthz`` says "database unreachable" already."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Final

import psycopg

REMIND_S: Final = 300.0
"""While the outage lasts, a line at most this often (the first one when it begins)."""


def database_away(e: BaseException) -> str | None:
    """What the driver says when ``e`` is the PostgreSQL database out of reach (a lost or
    refused connection, the pool's wait for one): its first line, less the server's address
    (``Connection refused``, ``terminating connection due to …``). None when ``e`` is anything
    else: a bug, or the SQLite file failing (rare, local: worth its traceback)."""
    if not isinstance(e, psycopg.OperationalError):
        return None
    line = (str(e).strip().splitlines() or [type(e).__name__])[0]
    return line.rsplit("failed: ", 1)[-1][:200]


class Outage:
    """Whether the dispatcher's last try at the database met it out of reach, and what was
    said of it: one line when it begins, a reminder at most every :data:`REMIND_S`, one line
    when it answers again."""

    def __init__(self, log: logging.Logger, clock: Callable[[], float] = time.monotonic) -> None:
        self._log, self._clock = log, clock
        self.since: float | None = None
        """When the outage began (``clock``), None while the database answers."""
        self._told = 0.0
        self.failures = 0

    def failed(self, doing: str, reason: str) -> None:
        """``doing`` ("reading the due steps") failed, the database out of reach (``reason``:
        :func:`database_away`)."""
        now = self._clock()
        self.failures += 1
        if self.since is None:
            self.since, self._told = now, now
            self._log.warning(
                "dispatch: %s failed, the database cannot be reached (%s); due steps and"
                " deliveries wait until it answers",
                doing,
                reason,
            )
        elif now - self._told >= REMIND_S:
            self._told = now
            self._log.warning(
                "dispatch: the database still cannot be reached after %.0f s (%s); due steps"
                " and deliveries wait",
                now - self.since,
                reason,
            )
        else:
            self._log.debug("dispatch: %s failed again: %s", doing, reason)

    def answered(self) -> None:
        """The database answered: if it was out of reach, say it is back."""
        if self.since is None:
            return
        self._log.info(
            "dispatch: the database answers again after %.0f s (%d failed attempts);"
            " due steps taken again",
            self._clock() - self.since,
            self.failures,
        )
        self.since, self.failures = None, 0
