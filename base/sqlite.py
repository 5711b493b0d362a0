"""SQLite connections and write transactions, the one way every store opens its file.

:func:`connect` opens a connection in autocommit mode (``isolation_level=None``: the sqlite3
module never begins a transaction behind the caller's back) with the pragmas a store asks for;
:func:`transaction` is the only place a write transaction is begun, committed and rolled back.

What the stores ask for, and why they differ:

- the journal (:mod:`ingest.journal`): WAL, ``synchronous`` as configured (FULL by default: a
  reading acknowledged to the broker is on disk), ``max_page_count`` as its size cap;
- the journal's followers (:mod:`ingest.follower`): WAL, ``synchronous=NORMAL`` (a cursor lost
  to a power cut only moves back);
- the alert store (:mod:`alerts.db`): WAL, ``synchronous=FULL``, foreign keys, rows by name;
- ``auth.db`` (:mod:`jiayuan.auth.store`) and the resident labels: a connection per call, the
  file's defaults;
- reports and backtests: ``read_only`` (the file opened ``mode=ro``: never created, never
  written).
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Callable, Iterator
from dataclasses import fields
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, TypeVar

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

    from base.sql import Row

Synchronous = Literal["OFF", "NORMAL", "FULL", "EXTRA"]
RowFactory = Callable[[sqlite3.Cursor, tuple[Any, ...]], Any]

D = TypeVar("D", bound="DataclassInstance")

BUSY_TIMEOUT_S = 10.0
"""How long a statement waits for another connection's lock before SQLite says "locked"."""


def connect(
    path: Path | str,
    *,
    wal: bool = True,
    synchronous: Synchronous | None = None,
    busy_timeout_s: float = BUSY_TIMEOUT_S,
    read_only: bool = False,
    query_only: bool = False,
    row_factory: RowFactory | None = None,
    foreign_keys: bool = False,
    max_page_count: int | None = None,
    any_thread: bool = False,
) -> sqlite3.Connection:
    """A connection to ``path`` in autocommit mode; begin writes with :func:`transaction`.

    ``wal``: switch the file to write-ahead logging (kept in the file; off for a connection
    that must not write, or a file known to be WAL already). ``synchronous``: the durability
    level (None: SQLite's default, FULL). ``busy_timeout_s``: how long to wait for a lock.
    ``read_only``: open the file ``mode=ro`` (it must exist; nothing can be written through
    this connection). ``query_only``: refuse writes on a connection to a writable file (a
    reader of a store that also writes). ``row_factory``: e.g. :class:`sqlite3.Row`.
    ``foreign_keys``: enforce ``REFERENCES``. ``max_page_count``: a cap on the file's size in
    pages (writes past it fail with "database or disk is full"). ``any_thread``: the connection
    may be used from threads other than the one that opened it (its owner serialises them).
    """
    target: str | Path = f"file:{path}?mode=ro" if read_only else path
    db = sqlite3.connect(
        target,
        timeout=busy_timeout_s,
        isolation_level=None,
        check_same_thread=not any_thread,
        uri=read_only,
    )
    try:
        if row_factory is not None:
            db.row_factory = row_factory
        if wal and not read_only:
            db.execute("PRAGMA journal_mode=WAL")
        if synchronous is not None:
            db.execute(f"PRAGMA synchronous={synchronous}")
        if foreign_keys:
            db.execute("PRAGMA foreign_keys=ON")
        if max_page_count is not None:
            db.execute(f"PRAGMA max_page_count={int(max_page_count)}")
        if query_only:
            db.execute("PRAGMA query_only=1")
    except BaseException:
        db.close()
        raise
    return db


@contextlib.contextmanager
def transaction(db: sqlite3.Connection, *, immediate: bool = True) -> Iterator[sqlite3.Connection]:
    """One transaction on ``db`` (a connection from :func:`connect`): committed when the block
    ends, rolled back on any exception (including a failed COMMIT), which then propagates.

    ``immediate`` (the default, for writers) takes the write lock at BEGIN, so the transaction
    never fails half-way because another writer got there first; ``immediate=False`` begins a
    deferred transaction (a consistent read, or a write that comes first in the block).

    A rollback that fails (the file is gone, the disk failed) does not hide the exception that
    caused it; the connection is then left in its transaction (``db.in_transaction``), which
    tells a caller to open another (as the journal's writer does)."""
    db.execute("BEGIN IMMEDIATE" if immediate else "BEGIN")
    try:
        yield db
        db.execute("COMMIT")
    except BaseException:
        if db.in_transaction:
            with contextlib.suppress(sqlite3.Error):
                db.execute("ROLLBACK")
        raise


class Writer:
    """A store's one write connection, opened again when a transaction left it unusable.

    A ROLLBACK that failed (the file replaced, the disk gone) leaves the connection inside its
    transaction: every later ``BEGIN`` on it would fail too, and the store would stay broken
    after the disk came back. :meth:`tx` notices (``in_transaction`` after the block failed, or
    ``broken(e)`` for a store that knows more about its errors) and opens a new connection
    before the next transaction. Not thread-safe by itself: its owner serialises writers."""

    def __init__(
        self,
        opener: Callable[[], sqlite3.Connection],
        broken: Callable[[BaseException], bool] = lambda _e: False,
    ) -> None:
        self._open = opener
        self._broken_by = broken
        self._db = opener()
        self._broken = False

    @property
    def db(self) -> sqlite3.Connection:
        """The connection, reopened first if the last transaction broke it."""
        if self._broken:
            with contextlib.suppress(sqlite3.Error):
                self._db.close()
            self._db = self._open()
            self._broken = False
        return self._db

    @contextlib.contextmanager
    def tx(self, *, immediate: bool = True) -> Iterator[sqlite3.Connection]:
        """:func:`transaction` on :attr:`db`; marks the connection for reopening when it failed
        in a way that may have left it unusable."""
        db = self.db
        try:
            with transaction(db, immediate=immediate):
                yield db
        except BaseException as e:
            if db.in_transaction or self._broken_by(e):
                self._broken = True
            raise

    def close(self) -> None:
        self._db.close()


def from_row(cls: type[D], row: Row, **decoded: Any) -> D:
    """The dataclass ``cls`` of a row whose columns are named as its fields; ``decoded`` gives
    the fields a column does not hold as is (JSON text, an integer flag). A field whose column
    the row lacks (a query of fewer columns, a file from before the column) keeps its default."""
    have = set(row.keys())
    values = {f.name: row[f.name] for f in fields(cls) if f.name in have and f.name not in decoded}
    return cls(**values, **decoded)
