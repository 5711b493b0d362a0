"""Prometheus metrics of ingestion (one set per process, in the default registry)."""

from __future__ import annotations

from prometheus_client import REGISTRY, Counter, Gauge, Histogram

from ingest.threadcpu import ThreadCpuCollector

MESSAGES = Counter(
    "jiayuan_messages_received_total",
    "MQTT messages received, by device kind and stream",
    ["kind", "stream"],
)
DEAD_LETTERS = Counter(
    "jiayuan_dead_letters_total", "Messages refused as dead letters, by reason", ["reason"]
)
DUPLICATES = Counter("jiayuan_duplicates_total", "Redelivered or repeated messages dropped")
COMMIT_SECONDS = Histogram(
    "jiayuan_journal_commit_seconds",
    "Time to write and commit one batch to the journal",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0),
)
COMMIT_LAG = Gauge(
    "jiayuan_journal_commit_lag_seconds",
    "Receive-to-commit delay of the oldest message in the last committed batch",
)
BATCH_SIZE = Histogram(
    "jiayuan_journal_batch_messages",
    "Messages per committed batch",
    buckets=(1, 10, 50, 100, 250, 500, 1000, 2000, 5000),
)
QUEUE_DEPTH = Gauge("jiayuan_ingest_queue_depth", "Messages received but not yet committed")
CONNECTED = Gauge("jiayuan_mqtt_connected", "1 while the MQTT session is up")
PIPELINE_ERRORS = Counter(
    "jiayuan_ingest_errors_total", "Unexpected errors in the ingest pipeline, by stage", ["stage"]
)
JOURNAL_WRITABLE = Gauge(
    "jiayuan_journal_writable",
    "1 while the journal accepts writes; 0 while the store refuses them (disk full, locked,"
    " read-only, I/O error) and ingestion holds its acknowledgements",
)
JOURNAL_WRITE_FAILURES = Counter(
    "jiayuan_journal_write_failures_total",
    "Journal writes that failed because the store could not write, by SQLite error",
    ["error"],
)
JOURNAL_REFUSED = Counter(
    "jiayuan_journal_refused_total",
    "Messages the journal would not store, kept as dead letters (reason journal_refused)",
)
PARTITIONS_MADE = Counter(
    "jiayuan_journal_partitions_made_total",
    "Day partitions the PostgreSQL journal made on the spot because a reading's day had none"
    " (days are made ahead daily from yesterday on, and older readings are stored on their"
    " receive time's day: so the daily making ahead fell behind)",
)
PTS_FALLBACKS = Counter(
    "jiayuan_journal_pts_fallbacks_total",
    "Readings the PostgreSQL journal stored on their receive time's day, not their own time's:"
    " retention had dropped that day, or the time lies outside decode's window (24 h before to"
    " 2 min after receipt); a redelivery of such a reading is not recognised as a repeat",
)
PARTITION_RETRIES = Counter(
    "jiayuan_journal_partition_retries_total",
    "Batches the PostgreSQL journal wrote a second time because retention (this instance's or"
    " another's) dropped a day partition between the journal's look and its insert",
)
DEADLOCK_RETRIES = Counter(
    "jiayuan_journal_deadlock_retries_total",
    "Batches the PostgreSQL journal wrote a second time after a deadlock with another"
    " instance's batch (one device's repeats written in two orders)",
)
OLDEST_UNACKED = Gauge(
    "jiayuan_ingest_oldest_unacked_seconds",
    "Age of the oldest message received but not yet acknowledged (0: none waiting)",
)
STAGE_CPU = Counter(
    "jiayuan_ingest_cpu_seconds_total",
    "CPU time of the ingest thread by stage, measured per batch: decode (payloads into"
    " readings) and journal (rows built, written and committed)",
    ["stage"],
)
DECODE_CPU = STAGE_CPU.labels("decode")
JOURNAL_CPU = STAGE_CPU.labels("journal")
REGISTRY.register(ThreadCpuCollector())
