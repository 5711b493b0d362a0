"""``make bench`` kept honest, without timing anything: the whole benchmark in a tiny
configuration (a few hundred messages a round) runs the real service on SQLite and then on a
throwaway PostgreSQL against the same real Mosquitto, and prints both stores side by side and
each store's ``key=value`` lines: SQLite's keys as they always were, PostgreSQL's with ``pg_``
and the server's figures. Only counts and presence are asserted, never a rate's size."""

from __future__ import annotations

import json
import re

import pytest

from bench import fall_path
from bench.__main__ import main
from bench.cpu import STAGES
from jiayuan.settings import Settings

pytestmark = pytest.mark.network

MESSAGES, CATCHUP, PROBES, CATCHUP_PROBES = 400, 400, 5, 2
TINY = [
    *("--messages", str(MESSAGES), "--rounds", "1", "--publishers", "2"),
    *("--catchup", str(CATCHUP), "--probes", str(PROBES)),
    *("--catchup-probes", str(CATCHUP_PROBES), "--background-rate", "200"),
    *("--no-sink", "--no-stores"),
]

CPU_KEYS = [f"cpu_us_{k}" for k, _ in STAGES] + ["cpu_us_service", "cpu_us_broker"]
CATCHUP_KEYS = [
    "catchup_msgs_per_s",
    "catchup_sub_msgs_per_s",
    "catchup_ratio",
    "catchup_fall_p50_ms",
    "catchup_fall_max_ms",
    "catchup_falls",
    "during_drain",
]
INGEST_KEYS = ["ingest_msgs_per_s", "broker_msgs_per_s", "ratio", "p50_ms", "p99_ms"]
SERVER_KEYS = [
    "pg_server_cpu_us",
    "pg_server_commits_per_msg",
    "pg_server_xacts_per_msg",
    "pg_server_rows_per_msg",
    "pg_server_inserts_per_msg",
    "pg_server_updates_per_msg",
    "pg_server_deletes_per_msg",
    "pg_server_wal_bytes_per_msg",
    "pg_server_commits_per_s",
    "pg_server_rows_per_s",
    "pg_bytes_per_reading",
    "pg_readings",
]


def key_lines(out: str) -> list[dict[str, str]]:
    """The output's ``key=value`` lines, each as a dict, in order."""
    return [
        dict(kv.split("=", 1) for kv in line.split())
        for line in out.splitlines()
        if re.fullmatch(r"(\S+=\S+ ?)+", line)
    ]


def test_make_bench_prints_postgresql_beside_sqlite(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(TINY) == 0
    out = capsys.readouterr().out
    lines = key_lines(out)
    # PostgreSQL's lines first, SQLite's after, its ingest line last of all (as always)
    assert [list(line) for line in lines] == [
        ["pg_" + k for k in CPU_KEYS],
        ["pg_" + k for k in CATCHUP_KEYS],
        SERVER_KEYS,
        ["pg_" + k for k in INGEST_KEYS],
        CPU_KEYS,
        CATCHUP_KEYS,
        [*INGEST_KEYS, "ingest_processes", "ingest_separate"],
    ]
    keys = {k: v for line in lines for k, v in line.items()}
    for p in ("", "pg_"):
        assert float(keys[f"{p}ingest_msgs_per_s"]) > 0
        assert float(keys[f"{p}cpu_us_service"]) > 0
        # every probe's fall alerted on the live stream, during the catch-up too
        assert keys[f"{p}catchup_falls"] == f"{CATCHUP_PROBES}/{CATCHUP_PROBES}"
    alerted = re.findall(r"probes alerted\s+(\S+)\s+(\S+)", out)
    assert alerted == [(f"{PROBES}/{PROBES}", f"{PROBES}/{PROBES}")]  # SQLite, PostgreSQL
    # the service knows the bench's devices, as the broker does (an alert says when it does not)
    for store in ("sqlite", "postgres"):
        assert (
            f"{store}: probe alerts from devices in the service's registry: {PROBES}/{PROBES}"
            in out
        )
    # the server did the journal's work: every message of the rounds a row at least, on disk
    assert int(keys["pg_readings"]) >= MESSAGES + CATCHUP
    assert float(keys["pg_server_rows_per_msg"]) >= 1
    assert float(keys["pg_server_inserts_per_msg"]) >= 1  # a reading's row each, at least
    assert float(keys["pg_server_cpu_us"]) > 0
    assert float(keys["pg_server_wal_bytes_per_msg"]) > 0
    assert float(keys["pg_bytes_per_reading"]) > 0
    rounds = json.loads(next(line for line in out.splitlines() if line.startswith("{")))
    assert list(rounds) == ["broker_rounds", "ingest_rounds", "pg_ingest_rounds"]
    # one table, a column a store
    header = next(line for line in out.splitlines() if "SQLite" in line and "PostgreSQL" in line)
    assert header.index("SQLite") < header.index("PostgreSQL")
    assert re.search(r"journal partitions: readings_p\d{8} [\d,]+ readings", out)
    # PostgreSQL's targets name its ingest processes: one a session slot (4 by default)
    slots = Settings.model_fields["session_slots"].default
    assert f"bench: issue 11's targets, PostgreSQL, {slots} telemetry ingest processes:" in out


def test_one_store_alone(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([*TINY, "--stores", "sqlite", "--catchup", "0"]) == 0
    out = capsys.readouterr().out
    # SQLite's lines as make bench printed them before PostgreSQL was measured beside it
    assert [list(line) for line in key_lines(out)] == [
        CPU_KEYS,
        [*INGEST_KEYS, "ingest_processes", "ingest_separate"],
    ]
    assert "PostgreSQL" not in out
    # issue 11's targets: each judged, or said to be skipped (no catch-up in this run)
    head = (
        "bench: issue 11's targets, SQLite, 1 telemetry ingest process apart from the main process"
    )
    block = out[out.index(head) :]
    verdicts = re.findall(r"^bench:   (\S.*?)  .*  (met|NOT met|skipped)$", block, re.MULTILINE)
    assert [name for name, _ in verdicts] == [
        "live ingest ratio ≥ 0.75",
        "catch-up ratio ≥ 0.4",
        "fall during catch-up ≤ 1,000 ms",
        "p99 publish→alert ≤ 20 ms at 5,000 msg/s",
        "CPU ≤ 35 µs a message",
        "journal ≤ 100 B a reading",
    ]
    assert [v for _, v in verdicts][1:3] == ["skipped", "skipped"]


def test_fall_path_times_every_stage_of_each_fall() -> None:
    """``python -m bench.fall_path``: each fall alerted is split into every stage, from the
    reading's receipt and commit to the alert's raise, commit and arrival on the stream; with
    ``--statements``, the server's statements that took longest, the journal's among them."""
    stages, top = fall_path.measure(falls=3, rate=100, settings={}, statements=50)
    assert 0 < len(top) <= 50
    assert any(text.startswith("INSERT INTO readings") and rows > 0 for *_, rows, text in top)
    assert list(stages) == list(fall_path.STAGES)
    assert [len(v) for v in stages.values()] == [3] * len(fall_path.STAGES)
    total = stages["publish → on the stream"]
    parts = [stages[s] for s in fall_path.STAGES[:-1]]
    for i, whole in enumerate(total):  # the stages add up to the whole, fall by fall
        assert sum(p[i] for p in parts) == pytest.approx(whole, abs=1e-6)
