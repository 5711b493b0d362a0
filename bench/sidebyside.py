"""The two stores' figures in one table, and each store's ``key=value`` lines: SQLite's keys as
they always were (``cpu_us_…``, ``catchup_…``, ``ingest_msgs_per_s=…``), PostgreSQL's the same
with the prefix ``pg_`` plus the server's (``pg_server_…``, ``pg_bytes_per_reading``)."""

from __future__ import annotations

import math
from collections.abc import Callable

from bench.cpu import STAGES, Ceiling
from bench.service_run import StoreRun, percentile

PREFIX = {"sqlite": "", "postgres": "pg_"}


def _num(v: float, digits: int = 0) -> str:
    return "—" if math.isnan(v) else f"{v:,.{digits}f}"


def _rows(run: StoreRun, ceiling: float) -> list[tuple[str, str]]:
    c = run.catchup
    lat = [x * 1000 for x in run.latencies]
    falls = sorted(c.fall_ms) if c is not None else []
    out = [
        ("messages an ingest round", f"{run.messages:,} × {len(run.rates)}"),
        ("ingest, median round (msg/s)", _num(run.ingest)),
        ("ratio to the broker's ceiling", _num(run.ingest / ceiling, 3)),
        ("background load of the latency phase (msg/s)", _num(run.background)),
        (
            "publish→alert p50 / p99 / slowest (ms) under it",
            f"{_num(percentile(lat, 50), 1)} / {_num(percentile(lat, 99), 1)}"
            f" / {_num(max(lat, default=math.nan), 1)}",
        ),
        ("probes alerted", f"{len(lat)}/{run.probes}"),
        (
            "catch-up drain (msg/s), ratio to mosquitto_sub",
            "skipped"
            if c is None
            else f"{c.service_msgs_per_s:,.0f}, {c.service_msgs_per_s / c.sub_msgs_per_s:.2f}",
        ),
        (
            "catch-up: slowest fall (ms), alerted",
            "skipped"
            if c is None
            else f"{_num(falls[-1] if falls else math.nan)}, {len(falls)}/{c.falls_sent}",
        ),
    ]
    us = run.cpu.us
    out += [(f"CPU µs/msg {k}", _num(us(run.cpu.stages.get(k, 0.0)), 1)) for k, _ in STAGES]
    out += [
        ("CPU µs/msg service total", _num(us(run.cpu.service), 1)),
        ("CPU µs/msg broker (mosquitto)", _num(us(run.cpu.broker), 1)),
    ]
    pg = run.store == "postgres"
    s = run.server
    per = run.per_message
    out += [
        ("CPU µs/msg PostgreSQL server", _num(us(s.cpu_s), 1) if pg else "—"),
        ("CPU µs/msg service + server", _num(run.spent_us, 1)),
        ("PostgreSQL commits/msg (all)", _num(per(s.commits), 3) if pg else "—"),
        ("PostgreSQL write transactions/msg", _num(per(s.xids), 3) if pg else "—"),
        (
            "PostgreSQL rows written/msg (inserted + updated + deleted)",
            f"{per(s.rows):.2f} ({per(s.inserted):.2f} + {per(s.updated):.2f}"
            f" + {per(s.deleted):.2f})"
            if pg
            else "—",
        ),
        ("PostgreSQL WAL bytes/msg", _num(per(s.wal_bytes)) if pg else "—"),
        (
            "PostgreSQL commits/s, rows/s at the median round",
            f"{per(s.commits) * run.ingest:,.0f}, {per(s.rows) * run.ingest:,.0f}" if pg else "—",
        ),
        ("journal bytes a reading on disk", _num(run.bytes_per_reading)),
        ("readings in the journal at the end", f"{run.readings:,}"),
    ]
    return out


def table(runs: list[StoreRun], ceiling: float, ceiling_cpu: Ceiling) -> str:
    """Both stores side by side (one column each), the broker's ceiling above."""
    columns = [dict(_rows(r, ceiling)) for r in runs]
    labels = [  # without the rows no store has a figure for (PostgreSQL's, on SQLite alone)
        label for label, _ in _rows(runs[0], ceiling) if any(col[label] != "—" for col in columns)
    ]
    heads = [
        "SQLite" if r.store == "sqlite" else f"PostgreSQL {r.server_version}".strip() for r in runs
    ]
    width = max(len(label) for label in labels)
    cw = max(14, *(len(v) for col in columns for v in col.values()), *(len(h) for h in heads))
    lines = [
        f"bench: the whole service on each store, the same broker (ceiling {ceiling:,.0f} msg/s;"
        f" mosquitto {ceiling_cpu.us(ceiling_cpu.broker):.1f} µs/msg there)",
        "bench:   " + " " * width + "".join(f"  {h:>{cw}}" for h in heads),
    ]
    for label in labels:
        lines.append(
            f"bench:   {label:<{width}}" + "".join(f"  {col[label]:>{cw}}" for col in columns)
        )
    return "\n".join(lines)


def key_lines(run: StoreRun, ceiling: float) -> list[str]:
    """The store's machine-readable lines: CPU by stage, catch-up, PostgreSQL's server (on
    PostgreSQL), and the ingest line (SQLite's last of all, as always)."""
    p = PREFIX[run.store]
    us: Callable[[float], float] = run.cpu.us
    lat = run.latencies
    cpu = " ".join(
        [f"{p}cpu_us_{k}={us(run.cpu.stages.get(k, 0.0)):.1f}" for k, _ in STAGES]
        + [
            f"{p}cpu_us_service={us(run.cpu.service):.1f}",
            f"{p}cpu_us_broker={us(run.cpu.broker):.1f}",
        ]
    )
    lines = [cpu]
    if run.catchup is not None:
        lines.append(" ".join(p + kv for kv in run.catchup.line().split()))
    if run.store == "postgres":
        s, per = run.server, run.per_message
        lines.append(
            f"pg_server_cpu_us={us(s.cpu_s):.1f} pg_server_commits_per_msg={per(s.commits):.3f}"
            f" pg_server_xacts_per_msg={per(s.xids):.3f} pg_server_rows_per_msg={per(s.rows):.2f}"
            f" pg_server_inserts_per_msg={per(s.inserted):.2f}"
            f" pg_server_updates_per_msg={per(s.updated):.2f}"
            f" pg_server_deletes_per_msg={per(s.deleted):.2f}"
            f" pg_server_wal_bytes_per_msg={per(s.wal_bytes):.0f}"
            f" pg_server_commits_per_s={per(s.commits) * run.ingest:.0f}"
            f" pg_server_rows_per_s={per(s.rows) * run.ingest:.0f}"
            f" pg_bytes_per_reading={run.bytes_per_reading:.0f} pg_readings={run.readings}"
        )
    lines.append(
        f"{p}ingest_msgs_per_s={run.ingest:.0f} {p}broker_msgs_per_s={ceiling:.0f} "
        f"{p}ratio={run.ingest / ceiling:.3f} {p}p50_ms={percentile(lat, 50) * 1000:.1f}"
        f" {p}p99_ms={percentile(lat, 99) * 1000:.1f}"
        + (
            f" ingest_processes={run.ingest_processes} ingest_separate={int(run.ingest_separate)}"
            if run.store == "sqlite"
            else ""
        )
    )
    return lines
