"""The PostgreSQL journal's follower reads against the days the journal keeps: wall time of a
read of ~50 new rows over 64 device partitions (``rows_after_each``) and of the urgent look
before it (``urgent_ahead``), with the day partitions bounded as the rules worker reads
(:class:`ingest.journal_pg.DayBound`, anchored once a second as the rules worker's commits
anchor it) and without (every day up to a day and an hour ahead).

``python -m bench.follower_days [--past 40] [--reads 150] [--rounds 3]``: a throwaway
PostgreSQL, a journal with ``--past`` day partitions before today (and the 7 made ahead),
5,000 wearable readings of 500 devices; then, per round and way, the followers drain it and
time ``--reads`` reads, each after a batch of 50 new readings. Prints one line per way with
each round's mean, in ms. The machine is shared: compare rounds of one run.
"""

from __future__ import annotations

import argparse
import json
import random
import time

from devtools.postgres import Postgres
from district import follow, timeparts
from district.pg import connect
from ingest.journal_pg import (
    _ANCHOR,
    DAY,
    DayBound,
    PgJournal,
    _day,
    rows_after_each,
    urgent_ahead,
)
from ingest.payloads import Reading, decode

PARTITIONS = 64


def reading(device: str, seq: int) -> Reading:
    now = time.time()
    body = {"ts": round(now * 1000), "seq": seq, "heart_rate": 70}
    r = decode(f"community/y/wearable/{device}/telemetry", json.dumps(body).encode(), now)
    assert isinstance(r, Reading)
    return r


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--past", type=int, default=40, help="day partitions before today")
    ap.add_argument("--reads", type=int, default=150)
    ap.add_argument("--rounds", type=int, default=3)
    a = ap.parse_args()
    rng = random.Random(1)
    seq = iter(range(10**9))
    with Postgres() as pg:
        url = pg.create_database("follower_days")
        j = PgJournal(url, partitions=PARTITIONS)
        for k in range(1, a.past + 1):
            j._make_day(_day(time.time()) - k * DAY)
        for _ in range(50):
            j.write_batch([reading(f"w-{rng.randrange(500)}", next(seq)) for _ in range(100)], [])
        db = connect(url, name="bench-follower-days", autocommit=True)
        days = len(timeparts.partitions(db, "readings", "day"))
        out: dict[str, list[float]] = {}
        for _ in range(a.rounds):
            for way in ("every day", "bounded"):
                after = {p: follow.Position() for p in range(PARTITIONS)}
                bound = DayBound() if way == "bounded" else None
                while got := rows_after_each(db, after, 500, bound):
                    for p, pos, _row in got:
                        after[p] = max(after[p], pos)
                read = look = 0.0
                for _ in range(a.reads):
                    j.write_batch(
                        [reading(f"w-{rng.randrange(500)}", next(seq)) for _ in range(50)], []
                    )
                    t0 = time.perf_counter()
                    urgent_ahead(db, after, {}, bound=bound)
                    t1 = time.perf_counter()
                    got = rows_after_each(db, after, 500, bound)
                    t2 = time.perf_counter()
                    look, read = look + t1 - t0, read + t2 - t1
                    for p, pos, _row in got:
                        after[p] = max(after[p], pos)
                    if bound is not None and bound.due():  # as the rules worker's commit does
                        with db.transaction():
                            xid, start = db.execute(_ANCHOR).fetchone() or (0, 0.0)
                        bound.anchor(int(xid), float(start))
                out.setdefault(f"{way}: read", []).append(1000 * read / a.reads)
                out.setdefault(f"{way}: urgent look", []).append(1000 * look / a.reads)
        db.close()
        j.close()
    print(f"day partitions: {days} ({a.past} before today); ms, each round's mean:")
    for name, values in out.items():
        print(f"  {name:<24} " + ", ".join(f"{v:.2f}" for v in values))


if __name__ == "__main__":
    main()
