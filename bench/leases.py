"""How fast a dead or frozen partition holder is replaced: lease rows against session advisory
locks, with real processes (devtools/standin.py) on a throwaway PostgreSQL.

    .venv/bin/python -m bench.leases [--runs 3] [--ttl 2] [--give-up 30]

For each way of failing (SIGKILL: the process dies and the kernel closes its sockets; SIGSTOP:
the process stops answering but its TCP sessions stay up, as with a hung process, a paused VM,
or a host cut off without a FIN until keepalives notice), it starts a holder and a second
instance, fails the holder, and times until the second holds all the holder's partitions
(leases) and until the holder's advisory lock can be taken. It prints one line per case with the
median over the runs; ``never`` is longer than ``--give-up`` seconds.
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import psycopg

from devtools import children
from devtools.postgres import Postgres
from district.leases import counts, ensure_partitions, holders
from district.pg import connect, open_pool

PARTITIONS = 8
KEY = 4242


def _one(
    pg: Postgres, run: str, how: signal.Signals, ttl: float, give_up: float
) -> tuple[float, float]:
    url = pg.create_database(run)
    pool = open_pool(url, name="setup", max_size=1)
    with pool.connection() as db:
        ensure_partitions(db, PARTITIONS)
    pool.close()
    logs = Path(tempfile.mkdtemp(prefix="bench-leases-"))
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    args = [sys.executable, "-m", "devtools.standin", url]
    opts = ["--ttl", str(ttl), "--partitions", str(PARTITIONS)]
    watch = connect(url, name="watch", autocommit=True)

    def held() -> dict[str, int]:
        return counts(holders(watch).values())

    def advisory_free() -> bool:
        with psycopg.connect(url, autocommit=True) as probe:
            row = probe.execute("SELECT pg_try_advisory_lock(%s)", (KEY,)).fetchone()
            return bool(row and row[0])

    def wait(check: Callable[[], bool], limit: float) -> None:
        deadline = time.monotonic() + limit
        while not check():
            if time.monotonic() > deadline:
                raise TimeoutError
            time.sleep(0.02)

    holder = children.spawn([*args, "holder", *opts, "--advisory", str(KEY)], logs / "h.log", env)
    other = children.spawn([*args, "other", *opts], logs / "o.log", env)
    try:
        wait(lambda: held() == {"holder": 4, "other": 4}, 120)
        holder.send_signal(how)
        t0 = time.monotonic()
        lease_s = advisory_s = float("inf")
        while time.monotonic() - t0 < give_up and (
            lease_s == float("inf") or advisory_s == float("inf")
        ):
            now = time.monotonic() - t0
            if lease_s == float("inf") and held() == {"other": PARTITIONS}:
                lease_s = now
            if advisory_s == float("inf") and advisory_free():
                advisory_s = now
            time.sleep(0.02)
        return lease_s, advisory_s
    finally:
        for p in (holder, other):
            p.send_signal(signal.SIGKILL)
            p.send_signal(signal.SIGCONT)
            p.wait()
        watch.close()
        pg.drop_database(run)


def _fmt(s: float) -> str:
    return "never" if s == float("inf") else f"{s:.2f}s"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--ttl", type=float, default=2.0)
    p.add_argument("--give-up", type=float, default=30.0)
    args = p.parse_args(argv)
    with Postgres() as pg:
        for how in (signal.SIGKILL, signal.SIGSTOP):
            results = [
                _one(pg, f"r_{how.name.lower()}_{i}", how, args.ttl, args.give_up)
                for i in range(args.runs)
            ]
            lease = statistics.median(r[0] for r in results)
            advisory = statistics.median(r[1] for r in results)
            print(
                f"{how.name}: lease takeover (ttl {args.ttl:g}s) {_fmt(lease)},"
                f" advisory lock free {_fmt(advisory)} (median of {args.runs})",
                flush=True,
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
