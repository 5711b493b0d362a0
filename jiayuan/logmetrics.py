"""Errors written to the log, counted on ``/metrics`` by logger (as Micrometer's
``logback_events_total``): every ``log.error`` and ``log.exception`` of the process, those of
parts that keep no counter of their own included (the dispatcher, the notifier, the journal
followers, uvicorn's "Exception in ASGI application"). An operator alerts on its rate; the
integration tests fail when it moved and the test did not expect it (devtools/launch.py)."""

from __future__ import annotations

import logging

from prometheus_client import Counter

LOG_ERRORS = Counter(
    "jiayuan_log_errors_total", "Records logged at ERROR or above, by logger", ["logger"]
)


class ErrorCounter(logging.Handler):
    """Counts the records at ERROR and above that reach it; writes nothing."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)

    def emit(self, record: logging.LogRecord) -> None:
        LOG_ERRORS.labels(record.name).inc()


COUNTER = ErrorCounter()


def count_errors(*loggers: str) -> None:
    """Count the errors reaching the root logger and ``loggers`` (those that do not propagate,
    as uvicorn's); once each, however often called."""
    for name in ("", *loggers):
        logger = logging.getLogger(name or None)
        if COUNTER not in logger.handlers:
            logger.addHandler(COUNTER)
