"""bench/journal_head.py: the benchmark counts the service's committed readings from the journal
file itself (not by asking the service), and ends a round only when the rows are there, not
when the newest id has merely moved far enough (ids may skip)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from base.datadir import DataDir
from bench.journal_head import JournalHead
from ingest.journal import Journal


def test_a_round_ends_when_its_rows_are_committed_not_when_the_id_has_moved(
    tmp_path: Path,
) -> None:
    path = DataDir(tmp_path).journal
    path.parent.mkdir(parents=True, exist_ok=True)
    Journal(path).close()  # the service's own schema
    w = sqlite3.connect(path, isolation_level=None)

    def add(*ids: int) -> None:
        w.executemany(
            "INSERT INTO readings (id, device_id, shape, ts, received, payload)"
            " VALUES (?, 'w1', 0, ?, ?, x'')",
            [(i, float(i), float(i)) for i in ids],
        )

    add(1, 2, 3)
    with JournalHead(tmp_path, None) as head:
        base = head.top()
        assert base == 3
        assert not head.reached(base, 3)
        add(4, 5)
        assert head.top() == 5 and head.count_after(base) == 2
        assert not head.reached(base, 3)
        add(7)  # an id skipped: the newest has moved 4 on, but 3 rows are there, not 4
        assert head.top() == base + 4
        assert not head.reached(base, 4)
        assert head.reached(base, 3)
    w.close()
