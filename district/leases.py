"""Numbered things held by lease rows: renewed by a heartbeat, balanced, taken over when they
lapse. Two kinds: the device partitions a rules worker evaluates (:data:`PARTITION`) and the MQTT
session slots an instance keeps connected (:data:`SLOT`, docs/district.md); one table,
``leases``, keyed by kind and number.

An instance runs a :class:`LeaseKeeper` per kind. Each :meth:`LeaseKeeper.tick` (every
``ttl_s / 3`` by :meth:`LeaseKeeper.start`) is one transaction that

1. renews the instance's row in ``instances`` (alive until ``now() + ttl``);
2. renews every partition it holds (``expires_at = now() + ttl``) that has not lapsed;
3. works out its fair share, ``ceil(partitions / live instances)``, and releases what it holds
   beyond it (after ``before_release`` let the work on those partitions commit), so that a new
   instance finds free partitions;
4. takes free or lapsed partitions up to its share (``FOR UPDATE SKIP LOCKED``: two instances
   never wait on, or both take, the same row; its own lapsed ones first), raising each one's
   ``epoch``: a lease that lapsed is a new lease when it is taken again, even by the instance
   that held it, so work fenced under the old epoch is never committed.

All times are the database's (``now()``), so the instances' clocks do not matter. Locally an
instance treats a partition as its own until ``ttl`` after the moment it *sent* the renewal
(:meth:`LeaseKeeper.owned`): the database cannot let another take it before then, so an
instance that cannot reach the database stops working on its partitions before anyone else
starts. Writes that must not come from a former holder (a rules worker's cursor with the alert
changes it made) call :func:`fence` in their transaction: it checks holder and epoch and keeps
the lease row from changing hands until that transaction ends.

Why lease rows rather than session advisory locks: docs/district.md (a stopped or cut-off
holder keeps an advisory lock for as long as its session lives; a lease lapses after ``ttl``).
"""

from __future__ import annotations

import json
import logging
import math
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg_pool import ConnectionPool

log = logging.getLogger(__name__)


PARTITION = "partition"
"""Device partitions (district.partitions): one rules evaluator per device at a time."""
SLOT = "slot"
"""MQTT session slots: each held slot is one persistent session on the shared subscription."""
URGENT_SLOT = "urgent-slot"
"""The urgent streams' session slots (falls, SOS, alarms): balanced apart from telemetry's."""


class LeaseLost(RuntimeError):
    """The lease is no longer this instance's (lapsed, or taken with a higher epoch)."""

    def __init__(self, message: str, numbers: Iterable[int] = ()) -> None:
        super().__init__(message)
        self.numbers = tuple(numbers)
        """The leases found lost (:func:`fence_all`)."""


@dataclass(frozen=True, slots=True)
class Lease:
    number: int
    epoch: int


@dataclass(frozen=True, slots=True)
class Changes:
    """What one tick changed: partitions gained (with their new epoch) and lost."""

    gained: tuple[Lease, ...] = ()
    lost: tuple[int, ...] = ()


def ensure_leases(db: psycopg.Connection[Any], kind: str, count: int) -> None:
    """Make the ``count`` lease rows of ``kind`` (once per installation). Refuses a different
    number than the table has: moving devices between partitions (or sessions between slots)
    would need their cursors and state moved too."""
    with db.transaction():
        db.execute("LOCK TABLE leases IN EXCLUSIVE MODE")
        row = db.execute("SELECT count(*) FROM leases WHERE kind = %s", (kind,)).fetchone()
        have = int(row[0]) if row else 0
        if have == 0:
            db.execute(
                "INSERT INTO leases (kind, number) SELECT %s, generate_series(0, %s - 1)",
                (kind, count),
            )
        elif have != count:
            raise ValueError(
                f"the database has {have} leases of kind {kind!r}, this instance was configured"
                f" with {count}"
            )


def ensure_partitions(db: psycopg.Connection[Any], partitions: int) -> None:
    """:func:`ensure_leases` for the device partitions."""
    ensure_leases(db, PARTITION, partitions)


def fence(
    db: psycopg.Connection[Any], instance_id: str, lease: Lease, kind: str = PARTITION
) -> None:
    """In the caller's transaction: raise :class:`LeaseLost` unless ``instance_id`` still holds
    ``lease`` (same epoch, not lapsed); otherwise keep the row from changing hands until the
    transaction ends (``FOR SHARE``: a takeover waits for this commit)."""
    row = db.execute(
        "SELECT 1 FROM leases WHERE kind = %s AND number = %s AND holder = %s AND epoch = %s"
        " AND expires_at > now() FOR SHARE",
        (kind, lease.number, instance_id, lease.epoch),
    ).fetchone()
    if row is None:
        raise LeaseLost(f"{kind} {lease.number} (epoch {lease.epoch}) is no longer held")


def fence_all(
    db: psycopg.Connection[Any],
    instance_id: str,
    leases: Iterable[Lease],
    kind: str = PARTITION,
) -> None:
    """:func:`fence` for several leases in one statement: raise :class:`LeaseLost` (with the
    numbers lost) unless ``instance_id`` still holds every one of them."""
    want = {lease.number: lease.epoch for lease in leases}
    if not want:
        return
    kept = {
        int(n)
        for (n,) in db.execute(
            "SELECT number FROM leases WHERE kind = %s AND number = ANY(%s) AND holder = %s"
            " AND expires_at > now() AND epoch = (%s::jsonb ->> number::text)::bigint"
            " ORDER BY number FOR SHARE",
            (kind, list(want), instance_id, json.dumps({str(k): v for k, v in want.items()})),
        ).fetchall()
    }
    lost = sorted(set(want) - kept)
    if lost:
        raise LeaseLost(f"{kind} {lost} no longer held", lost)


class LeaseKeeper:
    """The leases of ``kind`` (``count`` of them in all) instance ``instance_id`` holds, kept
    by a heartbeat.

    ``before_release(numbers)`` is called, before the release is committed, with the leases
    this instance gives up to balance the load: the work on them must be committed when it
    returns. ``on_change(changes)`` is told what each tick changed (from the tick's thread)."""

    def __init__(
        self,
        pool: ConnectionPool,
        instance_id: str,
        *,
        count: int,
        kind: str = PARTITION,
        ttl_s: float = 10.0,
        before_release: Callable[[list[int]], None] | None = None,
        on_change: Callable[[Changes], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if ttl_s <= 0:
            raise ValueError("ttl_s must be positive")
        self.pool = pool
        self.instance_id = instance_id
        self.count = count
        self.kind = kind
        self.ttl_s = ttl_s
        self.before_release = before_release
        self.on_change = on_change
        self.clock = clock
        self._held: dict[int, Lease] = {}
        self._valid_until = 0.0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------------ what is held

    def owned(self) -> dict[int, Lease]:
        """The leases this instance may work under now (none once a renewal is overdue)."""
        with self._lock:
            if self.clock() >= self._valid_until:
                return {}
            return dict(self._held)

    # ------------------------------------------------------------------ one heartbeat

    def tick(self) -> Changes:
        sent = self.clock()
        ttl = f"{self.ttl_s} seconds"
        with self.pool.connection() as db, db.transaction():
            db.execute(
                "INSERT INTO instances (instance_id, expires_at) VALUES (%s, now() + %s::interval)"
                " ON CONFLICT (instance_id) DO UPDATE SET heartbeat_at = now(),"
                " expires_at = excluded.expires_at",
                (self.instance_id, ttl),
            )
            live_row = db.execute(
                "SELECT count(*) FROM instances WHERE expires_at > now()"
            ).fetchone()
            live = max(1, int(live_row[0]) if live_row else 1)
            # only leases not lapsed are renewed: one that lapsed (a database outage longer
            # than the ttl, a frozen process) is lost, whoever's name it still bears, and is
            # taken again below under a new epoch. Renewed under its old epoch, it was one the
            # rules worker's fence had already refused (lapsed), so the worker never took it up
            # again: after such an outage no fall was evaluated until a restart.
            held = {
                int(p): Lease(int(p), int(e))
                for p, e in db.execute(
                    "UPDATE leases SET expires_at = now() + %s::interval"
                    " WHERE kind = %s AND holder = %s AND expires_at > now()"
                    " RETURNING number, epoch",
                    (ttl, self.kind, self.instance_id),
                ).fetchall()
            }
            share = math.ceil(self.count / live)
            released: list[int] = []
            if len(held) > share:
                released = sorted(held)[share:]
                if self.before_release is not None:
                    self.before_release(released)
                db.execute(
                    "UPDATE leases SET holder = NULL, expires_at = '-infinity'"
                    " WHERE kind = %s AND holder = %s AND number = ANY(%s)",
                    (self.kind, self.instance_id, released),
                )
                for p in released:
                    del held[p]
            gained: list[Lease] = []
            if len(held) < share:
                rows = db.execute(
                    "UPDATE leases SET holder = %s, epoch = epoch + 1,"
                    " expires_at = now() + %s::interval, acquired_at = now()"
                    " WHERE kind = %s AND number IN (SELECT number FROM leases"
                    "   WHERE kind = %s AND (holder IS NULL OR expires_at <= now())"
                    "   ORDER BY holder IS NOT DISTINCT FROM %s DESC, number"
                    "   FOR UPDATE SKIP LOCKED LIMIT %s)"
                    " RETURNING number, epoch",
                    (
                        self.instance_id,
                        ttl,
                        self.kind,
                        self.kind,
                        self.instance_id,  # its own lapsed leases first
                        share - len(held),
                    ),
                ).fetchall()
                gained = [Lease(int(p), int(e)) for p, e in rows]
                held.update((g.number, g) for g in gained)
            db.execute("DELETE FROM instances WHERE expires_at < now() - interval '1 hour'")
        with self._lock:
            before = set(self._held) if self.clock() < self._valid_until else set()
            self._held = held
            self._valid_until = sent + self.ttl_s
        changes = Changes(
            gained=tuple(sorted(gained, key=lambda g: g.number)),
            lost=tuple(sorted((before - set(held)) | set(released))),
        )
        if (changes.gained or changes.lost) and self.on_change is not None:
            self.on_change(changes)
        return changes

    def release_all(self) -> None:
        """Give every lease of this kind back and leave (a clean stop: the others take over at
        their next tick instead of waiting for the leases to lapse)."""
        with self._lock:
            self._held = {}
            self._valid_until = 0.0
        with self.pool.connection() as db, db.transaction():
            db.execute(
                "UPDATE leases SET holder = NULL, expires_at = '-infinity'"
                " WHERE kind = %s AND holder = %s",
                (self.kind, self.instance_id),
            )
            db.execute("DELETE FROM instances WHERE instance_id = %s", (self.instance_id,))

    # ------------------------------------------------------------------ the heartbeat thread

    def start(self) -> LeaseKeeper:
        """Tick now, then every ``ttl_s / 3`` in a thread until :meth:`stop`."""
        self.tick()
        self._thread = threading.Thread(
            target=self._run, name=f"leases-{self.kind}-{self.instance_id}", daemon=True
        )
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(self.ttl_s / 3):
            try:
                self.tick()
            except psycopg.Error as e:  # the next tick tries again; owned() empties meanwhile
                log.warning("lease heartbeat failed: %s", e)

    def stop(self, *, release: bool = True) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        if release:
            self.release_all()


def holders(db: psycopg.Connection[Any], kind: str = PARTITION) -> dict[int, str | None]:
    """Who holds each lease of ``kind`` now (lapsed ones count as free): for tests and the
    API."""
    return {
        int(p): (str(h) if h is not None else None)
        for p, h in db.execute(
            "SELECT number, CASE WHEN expires_at > now() THEN holder END"
            " FROM leases WHERE kind = %s ORDER BY number",
            (kind,),
        ).fetchall()
    }


def counts(owners: Iterable[str | None]) -> dict[str, int]:
    """How many leases each instance holds, from :func:`holders`' values."""
    out: dict[str, int] = {}
    for o in owners:
        if o is not None:
            out[o] = out.get(o, 0) + 1
    return out
