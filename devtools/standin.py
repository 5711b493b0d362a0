"""A stand-in district instance for the tests and the lease measurements, run as a real process:
it holds partitions by lease and works through the claimable queue, as ``jiayuan run`` will on
PostgreSQL until the service is wired to district/ (docs/district.md).

    python -m devtools.standin URL INSTANCE_ID --partitions 8 --ttl 2 --claim 3 [--hold N]
        [--advisory KEY]

Each claimed ``notification`` is "sent" by inserting a row into ``sent`` in the transaction that
completes the claim (the receipt commits with the completion). ``--hold N``: claim up to N items
once and never finish them (an instance that dies in the middle of sending), while the lease
heartbeat goes on. ``--advisory KEY``: also take the session advisory lock KEY on a
connection of its own and keep it (to compare the two ways of holding a partition). It prints
``ready`` once it holds what it was asked to, and runs until killed.
"""

from __future__ import annotations

import argparse
import sys
import time

from district.claims import WorkQueue
from district.leases import LeaseKeeper
from district.pg import connect, open_pool

SENT_TABLE = (
    "CREATE TABLE IF NOT EXISTS sent ("
    " key text NOT NULL, by_instance text NOT NULL, at timestamptz NOT NULL DEFAULT now())"
)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser()
    p.add_argument("url")
    p.add_argument("instance_id")
    p.add_argument("--partitions", type=int, default=8)
    p.add_argument("--ttl", type=float, default=2.0)
    p.add_argument("--claim", type=float, default=3.0)
    p.add_argument("--hold", type=int, default=0)
    p.add_argument("--advisory", type=int, default=None)
    args = p.parse_args(argv)
    pool = open_pool(args.url, name=args.instance_id, max_size=3)
    if args.advisory is not None:
        locked = connect(args.url, name=f"{args.instance_id}-advisory", autocommit=True)
        locked.execute("SELECT pg_advisory_lock(%s)", (args.advisory,))
    with pool.connection() as db:
        db.execute(SENT_TABLE)
    keeper = LeaseKeeper(pool, args.instance_id, count=args.partitions, ttl_s=args.ttl)
    keeper.start()
    queue = WorkQueue(pool, args.instance_id, claim_s=args.claim)
    if args.hold:
        while not queue.claim(["notification"], limit=args.hold):
            time.sleep(0.05)
        print("ready", flush=True)
        while True:  # holding the claims, heartbeat still going: killed in the middle of a send
            time.sleep(3600)
    print("ready", flush=True)
    while True:
        claims = queue.claim(["notification"], limit=5)
        for c in claims:
            with pool.connection() as db, db.transaction():
                if queue.complete(c, db):
                    db.execute(
                        "INSERT INTO sent (key, by_instance) VALUES (%s, %s)",
                        (c.key, args.instance_id),
                    )
        if not claims:
            time.sleep(0.05)


if __name__ == "__main__":
    sys.exit(main())
