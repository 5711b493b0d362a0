"""Prometheus metrics of rule evaluation (one set per process, in the default registry)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge

RULES_COMMITS = Counter(
    "jiayuan_rules_commits_total",
    "Transactions of the rules worker (alert changes, rule state and cursor together)",
)
RULES_RETRIES = Counter(
    "jiayuan_rules_commit_failures_total",
    "Commits of the rules worker the alert store refused (the cursor held, retried)",
)
RULES_FAILING = Gauge(
    "jiayuan_rules_failing", "1 while the rules worker cannot commit to the alert store"
)
RULES_BEHIND = Gauge(
    "jiayuan_rules_behind_rows", "Journal rows committed but not evaluated by the rules yet"
)
RULE_ERRORS = Counter(
    "jiayuan_rule_errors_total",
    "Exceptions of one rule on one reading (the others go on)",
    ["rule"],
)
