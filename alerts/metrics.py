"""Prometheus metrics of the alert lifecycle (one set per process, in the default registry)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge

ALERTS = Gauge("jiayuan_alerts", "Alerts in the alert store, by status", ["status"])
CHANGES = Counter(
    "jiayuan_alert_changes_total", "Alert history entries written, by action", ["action"]
)
SUBSCRIBER_ERRORS = Counter(
    "jiayuan_alert_subscriber_errors_total",
    "Exceptions raised by alert change subscribers (logged, never passed on)",
)
NOTIFY_FAILING = Gauge(
    "jiayuan_notify_failing",
    "1 while recent notification attempts to several people all failed (nobody can be reached)",
)
