"""How many readings the service has committed, counted by the benchmark from the journal
itself rather than asked of the service (:class:`JournalHead`)."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path
from typing import Final

from base.datadir import DataDir
from district.pg import connect

POLL_S: Final = 0.01
"""How often :meth:`JournalHead.wait` looks: as often as the broker's ceiling round looks for
``mosquitto_sub``'s end (:func:`bench.cpu.wait_cpu`), so that both ends are seen as late (they
were 50 ms here and 20 ms in the catch-up, against 10 ms for the ceiling: a round of 2 s
seen ~1 % slower on average than the ceiling's). A look reads no rows: ~20 µs on SQLite."""


class JournalHead:
    """The journal's rows as the bench counts them itself, while the service ingests: a read-only
    connection to the service's SQLite file, or one connection to PostgreSQL (``url``).

    Not the service's ``/healthz`` (its ``messages_committed``), which was late and a load:
    with the ingest process apart (the default), the main process knows the child's count as
    last reported, every 0.5 s (``jiayuan.ingest_procs.REPORT_S``), so a round of about 2 s was
    seen to end up to half a second late; and asked every 50 ms, ``/healthz`` took ~0.5 µs of
    the service's CPU a message (other threads 1.6-1.7 µs against 1.1-1.2 asked every 0.5 s,
    2026-12-04), besides the bench's own HTTP client's on the same cores, a load the service
    does not carry in production, where a monitor asks every few seconds (in the catch-up,
    asked every 20 ms, more). Polled here (:meth:`reached`): the newest row's id (:meth:`top`:
    an index lookup on SQLite, the identity's last value on PostgreSQL), and once that has
    moved ``n`` ids on, the exact count of the rows after the start (:meth:`count_after`),
    since ids may skip (a PostgreSQL identity after a rollback)."""

    def __init__(self, data_dir: Path, url: str | None) -> None:
        self._pg = connect(url, name="bench", autocommit=True) if url else None
        self._lite = (
            None if url else sqlite3.connect(f"file:{DataDir(data_dir).journal}?mode=ro", uri=True)
        )
        self._sequence: str | None = None

    def _one(self, sql: str, *args: int) -> int:
        if self._pg is not None:
            row = self._pg.execute(sql.replace("?", "%s"), args).fetchone()
        else:
            assert self._lite is not None
            row = self._lite.execute(sql, args).fetchone()
        return int(row[0]) if row is not None else 0

    def top(self) -> int:
        """The newest row's id. On PostgreSQL the id the table's identity handed out last (a
        row not committed yet included): ``max(id)`` there reads every row of every day's
        partition (no index leads with ``id``), 14 ms a look at 300,000 rows, and looked for
        every 10 ms it kept a core of the server busy during the rounds it measured. It
        relies on the identity handing ids out one at a time (``CACHE 1``, the default the
        migration keeps): with a cache, a writer could hold ids below a round's base."""
        if self._pg is not None:
            row = self._pg.execute(
                "SELECT CASE WHEN is_called THEN last_value ELSE 0 END FROM " + self._pg_sequence()
            ).fetchone()
            return int(row[0]) if row is not None else 0
        return self._one("SELECT coalesce(max(id), 0) FROM readings")

    def _pg_sequence(self) -> str:
        if self._sequence is None:
            assert self._pg is not None
            row = self._pg.execute("SELECT pg_get_serial_sequence('readings', 'id')").fetchone()
            assert row is not None and row[0], "readings.id has no identity sequence"
            self._sequence = str(row[0])
        return self._sequence

    def count_after(self, base: int) -> int:
        return self._one("SELECT count(*) FROM readings WHERE id > ?", base)

    def reached(self, base: int, n: int) -> bool:
        """Whether ``n`` rows after the id ``base`` are committed."""
        return self.top() >= base + n and self.count_after(base) >= n

    def wait(self, base: int, n: int) -> None:
        """Until :meth:`reached`, looking every :data:`POLL_S`."""
        while not self.reached(base, n):
            time.sleep(POLL_S)

    def __enter__(self) -> JournalHead:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self._pg is not None:
            self._pg.close()
        if self._lite is not None:
            self._lite.close()
