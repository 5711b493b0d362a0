"""The one SQLite helper (base/sqlite.py) and the durability each store asks of it: a journal
acknowledged to the broker and an alert committed must survive a power cut (synchronous FULL),
a follower's cursor may move back (NORMAL)."""

from __future__ import annotations

import sqlite3
from contextlib import closing
from pathlib import Path
from typing import cast

import pytest

from alerts import db as alerts_db
from alerts.lifecycle import AlertStore
from base.datadir import DataDir
from base.sqlite import Writer, connect, transaction
from ingest import follower
from ingest.journal import Journal
from jiayuan.auth.store import AuthStore

FULL, NORMAL = 2, 1


def _pragma(db: sqlite3.Connection, name: str) -> object:
    return db.execute(f"PRAGMA {name}").fetchone()[0]


def test_a_transaction_commits_at_the_end_and_rolls_back_on_any_exception(tmp_path: Path) -> None:
    with closing(connect(tmp_path / "t.db")) as db:
        db.execute("CREATE TABLE t (x INTEGER)")
        with transaction(db):
            db.execute("INSERT INTO t VALUES (1)")
        with pytest.raises(KeyboardInterrupt), transaction(db):
            db.execute("INSERT INTO t VALUES (2)")
            raise KeyboardInterrupt
        assert not db.in_transaction
        assert [r[0] for r in db.execute("SELECT x FROM t")] == [1]
        with transaction(db, immediate=False):  # a deferred one reads the same
            assert db.execute("SELECT count(*) FROM t").fetchone()[0] == 1


def test_a_commit_that_fails_is_rolled_back_and_the_connection_stays_usable(
    tmp_path: Path,
) -> None:
    with closing(connect(tmp_path / "t.db", foreign_keys=True)) as db:
        db.executescript(
            "CREATE TABLE p (id INTEGER PRIMARY KEY);"
            " CREATE TABLE c (p INTEGER REFERENCES p (id) DEFERRABLE INITIALLY DEFERRED);"
        )
        with pytest.raises(sqlite3.IntegrityError), transaction(db):
            db.execute("INSERT INTO c VALUES (7)")  # checked only at COMMIT
        assert not db.in_transaction
        with transaction(db):
            db.execute("INSERT INTO p VALUES (7)")
            db.execute("INSERT INTO c VALUES (7)")
        assert db.execute("SELECT count(*) FROM c").fetchone()[0] == 1


def test_connect_sets_what_it_is_asked_for(tmp_path: Path) -> None:
    path = tmp_path / "t.db"
    with closing(
        connect(path, synchronous="NORMAL", foreign_keys=True, max_page_count=50, query_only=True)
    ) as db:
        assert _pragma(db, "journal_mode") == "wal"
        assert _pragma(db, "synchronous") == NORMAL
        assert _pragma(db, "foreign_keys") == 1
        assert _pragma(db, "max_page_count") == 50
        assert _pragma(db, "busy_timeout") == 10_000
        with pytest.raises(sqlite3.OperationalError, match="readonly"):
            db.execute("CREATE TABLE t (x)")
    with pytest.raises(sqlite3.OperationalError):  # read_only never creates a file
        connect(tmp_path / "missing.db", read_only=True)
    with closing(connect(path, read_only=True, row_factory=sqlite3.Row)) as ro:
        assert ro.execute("SELECT 1 AS one").fetchone()["one"] == 1
        with pytest.raises(sqlite3.OperationalError, match="readonly"):
            ro.execute("CREATE TABLE t (x)")


def test_each_store_keeps_its_durability(tmp_path: Path) -> None:
    files = DataDir(tmp_path)
    journal = Journal(files.journal)
    try:
        assert _pragma(journal._w.db, "synchronous") == FULL  # acknowledged = on disk
        assert _pragma(journal._reader(), "query_only") == 1
    finally:
        journal.close()
    normal = Journal(tmp_path / "n.db", synchronous="NORMAL", max_pages=10_000)
    try:
        assert _pragma(normal._w.db, "synchronous") == NORMAL
        assert _pragma(normal._w.db, "max_page_count") == 10_000
    finally:
        normal.close()
    with closing(follower.connect(files.journal)) as cursor_db:
        assert _pragma(cursor_db, "synchronous") == NORMAL
    store = AlertStore(files.alerts)
    try:
        with closing(alerts_db.connect(files.alerts)) as db:
            assert _pragma(db, "synchronous") == FULL
            assert _pragma(db, "foreign_keys") == 1
            assert _pragma(db, "journal_mode") == "wal"
    finally:
        store.close()
    auth = AuthStore(files.auth)
    with auth.db() as db:
        assert isinstance(db, sqlite3.Connection)
        assert _pragma(db, "journal_mode") == "wal"


class _RollbackFails:
    """A real connection whose ROLLBACK fails, as when its file vanished mid-transaction."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db

    def execute(self, sql: str, args: tuple[object, ...] = ()) -> sqlite3.Cursor:
        if sql == "ROLLBACK":
            raise sqlite3.OperationalError("disk I/O error")
        return self.db.execute(sql, args)

    @property
    def in_transaction(self) -> bool:
        return self.db.in_transaction

    def close(self) -> None:
        self.db.close()


def test_a_writer_left_in_its_transaction_by_a_failed_rollback_opens_a_new_connection(
    tmp_path: Path,
) -> None:
    """Before, the alert store kept the stuck connection: every later write failed with
    "cannot start a transaction within a transaction" until a restart."""
    path = tmp_path / "t.db"
    with closing(connect(path)) as setup:
        setup.execute("CREATE TABLE t (x INTEGER)")
    opened: list[sqlite3.Connection] = []

    def opener() -> sqlite3.Connection:
        db = connect(path)
        opened.append(db)
        return cast(sqlite3.Connection, _RollbackFails(db)) if len(opened) == 1 else db

    w = Writer(opener)
    with pytest.raises(RuntimeError), w.tx() as db:
        db.execute("INSERT INTO t VALUES (1)")
        raise RuntimeError("the write failed")
    assert opened[0].in_transaction  # stuck: its rollback failed
    with w.tx() as db:
        db.execute("INSERT INTO t VALUES (2)")
    assert len(opened) == 2  # the stuck one was closed (its lock released) and replaced
    w.close()
    with closing(connect(path)) as check:
        assert [r[0] for r in check.execute("SELECT x FROM t")] == [2]
