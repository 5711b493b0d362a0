"""What a journal is, whichever database holds it: the interface the pipeline and the API use.

Two implementations: :class:`ingest.journal.Journal` (SQLite, one community on one server, the
default) and :class:`ingest.journal_pg.PgJournal` (PostgreSQL, several instances sharing one
database: docs/district.md). Their behaviour is one contract, checked on both by
tests/integration/test_journal_contract.py; what only one of them has (the SQLite file's
``path`` its followers open, the PostgreSQL journal's partitions and follower reads) stays out
of this protocol.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from ingest.payloads import DeadLetter, Reading
from registry import Registry

Step = Literal["raw", "1m", "1h"]


@dataclass(frozen=True, slots=True)
class BatchResult:
    new: list[Reading]
    """Readings journaled for the first time, in arrival order; duplicates left out."""
    duplicates: int
    dead_letters: int
    commit_seconds: float


class JournalStore(Protocol):
    """The journal's operations, as :class:`ingest.journal.Journal` documents them."""

    def write_batch(
        self, readings: Sequence[Reading], dead: Sequence[DeadLetter]
    ) -> BatchResult: ...

    def probe(self) -> None: ...

    def flush(self, *, if_due: bool = False) -> bool: ...

    def trouble(self, e: BaseException) -> str | None:
        """What is wrong with the store when ``e`` (raised by a write) says it cannot take
        writes at all, as a short name; None when ``e`` is about what was written."""
        ...

    @property
    def pending_devices(self) -> int: ...

    def sync_registry(self, registry: Registry) -> int: ...

    def prune(
        self,
        before: float,
        chunk: int = 5000,
        *,
        keep_after: int | None = None,
        pause_s: float = 0.02,
        forget_idle_s: float = ...,
    ) -> int: ...

    def list_devices(
        self,
        *,
        kind: str | None = None,
        building: str | None = None,
        online: bool | None = None,
        registered: bool | None = None,
        among: tuple[Collection[str], Collection[str]] | None = None,
        communities: Collection[str] | None = None,
        limit: int = 50,
        offset: int = 0,
    ) -> tuple[list[dict[str, Any]], int]: ...

    def get_device(self, device_id: str) -> dict[str, Any] | None: ...

    def readings(
        self,
        device_id: str,
        *,
        metric: str | None = None,
        since: float | None = None,
        until: float | None = None,
        step: Step = "raw",
        limit: int = 10_000,
    ) -> list[dict[str, Any]]: ...

    def dead_letters(
        self,
        *,
        reason: str | None = None,
        since: float | None = None,
        until: float | None = None,
        communities: Collection[str] | None = None,
        limit: int = 50,
        offset: int = 0,
    ) -> tuple[list[dict[str, Any]], int]: ...

    def dead_letter_counts(self) -> dict[str, int]: ...

    def last_reading(self, device_id: str) -> dict[str, Any] | None: ...

    def count_readings(self, device_id: str | None = None) -> int: ...

    def close(self) -> None: ...


# ------------------------------------------------ what both journals write and answer

DeadRow = tuple[float, str, str, str, bytes]


class Fields(Protocol):
    """A stored row whose columns are read by name (``sqlite3.Row``, psycopg's ``dict_row``)."""

    def __getitem__(self, key: str, /) -> Any: ...


def dead_letter_rows(dead: Sequence[DeadLetter]) -> list[DeadRow]:
    """The ``dead_letters`` rows of ``dead``: (received, topic, reason, detail, payload)."""
    return [(d.received, d.topic, d.reason, d.detail, d.payload) for d in dead]


def dead_letter_item(r: Fields) -> dict[str, Any]:
    """A stored dead letter as the API gives it (its payload as text, bad bytes escaped)."""
    return {
        "id": r["id"],
        "received": r["received"],
        "topic": r["topic"],
        "reason": r["reason"],
        "detail": r["detail"],
        "payload": bytes(r["payload"]).decode("utf-8", errors="backslashreplace"),
    }


def raw_item(r: Fields, stream: str, body: Any, metric: str | None = None) -> dict[str, Any] | None:
    """A stored reading (``ts``, ``received``, ``event``, ``ts_flag`` of row ``r``, its stream
    and payload ``body``) as the API gives a raw one; with ``metric``, its value of that field
    alone, or None when it has none."""
    if metric is not None:
        if metric not in body:
            return None
        body = {metric: body[metric]}
    return {
        "ts": r["ts"],
        "received": r["received"],
        "stream": stream,
        "event": r["event"],
        "ts_flag": r["ts_flag"],
        "values": body,
    }
