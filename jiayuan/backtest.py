"""The backtest wired to the service's settings: the journal and alert store of the data
directory (or of the PostgreSQL database, ``JIAYUAN_DATABASE_URL``), the registry, the rules in
force, the time zone and the flapping gate — what ``jiayuan rules backtest`` and
``POST /api/rules/backtest`` share (:mod:`rules.backtest` does the replay)."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from datetime import datetime
from pathlib import Path
from typing import TypeVar
from zoneinfo import ZoneInfo

import psycopg

from alerts.db import Database, PgDatabase
from alerts.noise import FlapGate
from base.datadir import DataDir
from base.sql import Db
from ingest.journal_pg import PgJournal
from ingest.journal_store import JournalStore
from jiayuan.settings import Settings
from registry import Registry
from registry.loader import load_registry
from rules.backtest import WARMUP_S, Report, backtest, default_jobs
from rules.model import Rule, builtin_pack, load_rules

__all__ = ["parse_when", "run"]


def parse_when(text: str, tz: ZoneInfo) -> float:
    """``YYYY-MM-DD`` (local midnight) or an ISO 8601 time (local when it has no offset)."""
    try:
        t = datetime.fromisoformat(text.strip())
    except ValueError:
        raise ValueError(f"not a date or time: {text!r} (use e.g. 2026-11-25)") from None
    return (t if t.tzinfo is not None else t.replace(tzinfo=tz)).timestamp()


def run(
    settings: Settings,
    rules: Sequence[Rule],
    since: float,
    until: float,
    *,
    registry: Registry | None = None,
    warmup_s: float = WARMUP_S,
    jobs: int | None = None,
    journal: JournalStore | None = None,
    alerts: Database | None = None,
) -> Report:
    """Backtest ``rules`` against the rules in force over the service's journal: the data
    directory's SQLite files, or the PostgreSQL database (read only). ``journal``,
    ``alerts``: the service's own stores, whose pools a backtest on PostgreSQL then borrows
    (else it opens its own); on SQLite the files are read on connections of the backtest's."""
    if registry is None:
        registry = (
            load_registry(settings.registry, community=settings.community)
            if settings.registry is not None
            else Registry(settings.community)
        )
    in_force = load_rules(settings.rules or [builtin_pack()])
    gate: Callable[[Callable[[], float]], FlapGate] = lambda clock: FlapGate(  # noqa: E731
        settings.flap.threshold, settings.flap.window_s, clock
    )
    try:
        with _stores(settings, journal, alerts) as (replayed, store):
            return backtest(
                replayed,
                rules,
                in_force,
                registry,
                since=since,
                until=until,
                tz=ZoneInfo(settings.timezone),
                alerts=store,
                warmup_s=warmup_s,
                gate=gate,
                max_unregistered=settings.max_unregistered_devices,
                jobs=default_jobs() if jobs is None else jobs,
            )
    except psycopg.OperationalError as e:  # said in words, as a journal not there yet (503)
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise Unavailable(
            f"the database (JIAYUAN_DATABASE_URL) cannot be reached: {reason}"
        ) from None


class Unavailable(FileNotFoundError):
    """What the backtest reads is not there: no journal yet, or the database unreachable
    (``jiayuan rules backtest`` says so and exits 2; the API answers 503)."""


@contextlib.contextmanager
def _stores(
    settings: Settings, journal: JournalStore | None, alerts: Database | None
) -> Iterator[tuple[Path | PgJournal, Path | Db | None]]:
    """The journal and the alert store to replay: the SQLite files (the alert store None when
    there is none yet), or the PostgreSQL journal and a read-only transaction of the alert
    store (:class:`alerts.db.Database`)."""
    if settings.database_url is None:
        data = DataDir(settings.data_dir)
        if not data.journal.exists():
            raise Unavailable(f"no journal at {data.journal}")
        yield data.journal, data.alerts if data.alerts.exists() else None
        return
    url = settings.database_url.get_secret_value()
    with contextlib.ExitStack() as stack:
        pg = (
            journal
            if isinstance(journal, PgJournal)
            else _own(stack, PgJournal(url, name="jiayuan-backtest"))
        )
        store = alerts if isinstance(alerts, PgDatabase) else _own(stack, Database.open(url))
        # one connection of the alert store's pool, idle in this transaction while the
        # replay runs (the API runs one backtest at a time)
        db = stack.enter_context(store.connection())
        db.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        yield pg, db


_T = TypeVar("_T", PgJournal, Database)


def _own(stack: contextlib.ExitStack[bool | None], store: _T) -> _T:
    """A store this backtest opened: closed when it ends."""
    stack.callback(store.close)
    return store
