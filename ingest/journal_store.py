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
from typing import Any, Protocol

from ingest.journal import BatchResult, Step
from ingest.payloads import DeadLetter, Reading
from registry import Registry


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
