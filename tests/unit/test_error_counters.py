"""The error counters that fail a test (devtools/launch.py, tests/conftest.py): each is a metric
the service exports, a logged error counts, and a declaration covers what it names and no more."""

from __future__ import annotations

import logging

import pytest
from prometheus_client import REGISTRY

import ingest.influx  # noqa: F401 - imported by the service when a sink is set
import jiayuan.logmetrics  # ``jiayuan run`` counts its logged errors
import jiayuan.service  # noqa: F401 - every part's metrics
from devtools.launch import (
    ERROR_COUNTERS,
    _error_records,
    error_samples,
    logged_errors,
    unexpected,
)

SERVICE_LOG = """\
2026-12-03 10:00:00,001 INFO ingest.pipeline: started
2026-12-03 10:00:01,002 ERROR alerts.dispatch: dispatch: _handle failed
Traceback (most recent call last):
  File "alerts/dispatch.py", line 1, in _handle
KeyError: 'x'
2026-12-03 10:00:02,003 WARNING rules.worker: behind
2026-12-03 10:00:03,004 CRITICAL jiayuan: gone
"""


def test_every_error_counter_is_a_metric_of_the_service() -> None:
    counters = {f"{f.name}_total" for f in REGISTRY.collect() if f.type == "counter"}
    missing = ERROR_COUNTERS - counters
    assert not missing, f"renamed or gone (update devtools/launch.py): {missing}"


@pytest.mark.expect_errors('jiayuan_log_errors_total{logger="tests.unit.errors"}')
def test_an_error_logged_anywhere_is_counted_by_its_logger() -> None:
    def logged() -> float:
        value = REGISTRY.get_sample_value(
            "jiayuan_log_errors_total", {"logger": "tests.unit.errors"}
        )
        return value or 0.0

    before = logged()
    log = logging.getLogger("tests.unit.errors")
    log.warning("not an error")
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        log.exception("an exception caught and only logged")
    assert logged() == before + 1


def test_a_declaration_covers_the_counter_or_the_labels_it_names_only() -> None:
    samples = [
        ("jiayuan_rule_errors_total", {"rule": "bad"}, 2.0),
        ("jiayuan_log_errors_total", {"logger": "rules.engine"}, 2.0),
        ("jiayuan_log_errors_total", {"logger": "alerts.dispatch"}, 1.0),
        ("jiayuan_ingest_errors_total", {"stage": "journal"}, 0.0),  # never moved
        ("jiayuan_dead_letters_total", {"reason": "bad_json"}, 5.0),  # bad input, no error
    ]
    errors = error_samples(samples)
    assert errors == {
        'jiayuan_rule_errors_total{rule="bad"}': 2.0,
        'jiayuan_log_errors_total{logger="rules.engine"}': 2.0,
        'jiayuan_log_errors_total{logger="alerts.dispatch"}': 1.0,
    }
    declared = ["jiayuan_rule_errors_total", 'jiayuan_log_errors_total{logger="rules.engine"}']
    assert unexpected(errors, declared) == {'jiayuan_log_errors_total{logger="alerts.dispatch"}': 1}
    assert (
        len(unexpected(errors, ["jiayuan_rule_errors", 'jiayuan_log_errors_total{logger="rules"}']))
        == 3
    )
    with pytest.raises(ValueError, match="not name or name"):
        unexpected(errors, ["jiayuan_log_errors_total{logger=rules.engine}"])  # no quotes
    assert unexpected(errors, ["jiayuan_rule_errors_total", "jiayuan_log_errors_total"]) == {}


def test_the_failure_quotes_the_error_records_of_the_service_log() -> None:
    quoted = _error_records(SERVICE_LOG)
    assert quoted.startswith("2026-12-03 10:00:01,002 ERROR alerts.dispatch")
    assert "KeyError: 'x'" in quoted and "CRITICAL jiayuan: gone" in quoted
    assert "INFO" not in quoted and "WARNING" not in quoted
    assert _error_records("") == "  (none logged)"


def test_what_the_service_logs_while_stopping_is_counted_from_its_log() -> None:
    """After the counters are read the service still stops (last batch, followers, the
    dispatcher): its log's error records are counted by logger, as the service counts them."""
    assert logged_errors(SERVICE_LOG) == {
        'jiayuan_log_errors_total{logger="alerts.dispatch"}': 1,
        'jiayuan_log_errors_total{logger="jiayuan"}': 1,
    }
    assert logged_errors("") == {}
