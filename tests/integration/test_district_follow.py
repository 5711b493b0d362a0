"""Following a log with concurrent writers (district/follow.py) on the real throwaway
PostgreSQL: nothing is skipped when transactions commit out of id order, and a new holder of a
partition resumes from the cursor the last one committed with its effects."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from district.follow import Position, load_cursor, next_batch, save_cursor
from district.leases import Lease, LeaseLost, ensure_partitions, fence
from district.migrate import migrate

LOG = (
    "CREATE TABLE log (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,"
    " xid xid8 NOT NULL DEFAULT pg_current_xact_id(), partition integer NOT NULL,"
    " payload text NOT NULL)"
)


@pytest.fixture
def db(pg_url: str) -> Iterator[psycopg.Connection[Any]]:
    with psycopg.connect(pg_url, autocommit=True) as conn:
        migrate(conn)
        ensure_partitions(conn, 4)
        conn.execute(LOG)
        yield conn


def payloads(batch: list[tuple[Position, tuple[Any, ...]]]) -> list[Any]:
    return [values[0] for _, values in batch]


def test_a_row_committed_after_a_later_one_is_not_skipped(
    db: psycopg.Connection[Any], pg_url: str
) -> None:
    slow = psycopg.connect(pg_url)
    fast = psycopg.connect(pg_url)
    try:
        slow.execute("INSERT INTO log (partition, payload) VALUES (0, 'first id')")
        fast.execute("INSERT INTO log (partition, payload) VALUES (0, 'second id')")
        fast.commit()
        # what a follower reading "id > cursor" sees now: the second row alone
        naive = db.execute("SELECT payload FROM log WHERE id > 0 ORDER BY id").fetchall()
        assert [r[0] for r in naive] == ["second id"]
        # the horizon holds the follower back while the first transaction runs
        assert next_batch(db, "log", Position()) == []
        slow.commit()
        batch = next_batch(db, "log", Position())
        assert payloads(batch) == ["first id", "second id"]
        assert batch[0][0] < batch[1][0]
        assert next_batch(db, "log", batch[-1][0]) == []
    finally:
        slow.close()
        fast.close()


def test_a_new_holder_resumes_from_the_committed_cursor(db: psycopg.Connection[Any]) -> None:
    for i in range(6):
        db.execute("INSERT INTO log (partition, payload) VALUES (%s, %s)", (i % 2, f"r{i}"))
    # a holds partition 0 at epoch 1 and commits its effects for the first two rows
    db.execute("UPDATE leases SET holder = 'a', epoch = 1, expires_at = now() + interval '1 h'")
    batch = next_batch(db, "log", load_cursor(db, "rules", 0), partitions=[0], limit=2)
    assert payloads(batch) == ["r0", "r2"]
    with db.transaction():
        fence(db, "a", Lease(0, 1))
        save_cursor(db, "rules", 0, batch[-1][0])
    # a dies; b takes partition 0 over (epoch 2) and goes on from a's cursor
    db.execute("UPDATE leases SET holder = 'b', epoch = 2 WHERE number = 0")
    rest = next_batch(db, "log", load_cursor(db, "rules", 0), partitions=[0])
    assert payloads(rest) == ["r4"]
    with pytest.raises(LeaseLost), db.transaction():  # a's late commit is refused
        fence(db, "a", Lease(0, 1))
        save_cursor(db, "rules", 0, rest[-1][0])
    assert load_cursor(db, "rules", 0) == batch[-1][0]
