"""Slowing down password guessing: failed sign-ins are counted per account and per client
address, and past a few free failures each one locks that key for a doubling time.

- an account: 5 failures free, then locked 30 s, 60 s, 2 min … up to 15 min
- an address: 20 failures free (a shared desk, a NAT), then the same doubling
- a key is forgotten 15 minutes after its last failure or lockout; a success clears the
  account's count (not the address's: one good account must not unlock guessing at others)

While a key is locked every attempt is refused (429 with ``Retry-After``) without checking the
password, even a right one.

Where the counts live: with one instance (SQLite) in memory, per process, as before (a restart
forgets them; written in the README as still open). With several instances on PostgreSQL
(:func:`limiter_for` an :class:`AuthStore` on a URL) in the table ``signin_failures``
(district/migrations/0010): every instance counts the same failures, so guesses spread over N
instances get the free attempts once, not N times. Each failure is one upsert per key under
its row lock (two instances counting at once both count), on the database's clock.
"""

from __future__ import annotations

import math
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

from base.sql import Db
from jiayuan.auth.store import AuthStore

ACCOUNT_FREE: Final = 5
ADDRESS_FREE: Final = 20
BASE_S: Final = 30.0
MAX_S: Final = 900.0
FORGET_S: Final = 900.0
MAX_KEYS: Final = 50_000


@dataclass(slots=True)
class _Count:
    failures: int = 0
    last: float = 0.0
    locked_until: float = 0.0


class SignInLimiter:
    def __init__(
        self,
        clock: Callable[[], float] = time.monotonic,
        *,
        account_free: int = ACCOUNT_FREE,
        address_free: int = ADDRESS_FREE,
        base_s: float = BASE_S,
        max_s: float = MAX_S,
    ) -> None:
        self.clock = clock
        self.free = {"account": account_free, "address": address_free}
        self.base_s = base_s
        self.max_s = max_s
        self._counts: OrderedDict[tuple[str, str], _Count] = OrderedDict()
        self._lock = threading.Lock()

    def wait(self, account: str, address: str) -> int:
        """Seconds until this account may be tried from this address (0: now)."""
        now = self.clock()
        with self._lock:
            until = max(
                (
                    c.locked_until
                    for key in (("account", account), ("address", address))
                    if (c := self._counts.get(key)) is not None
                ),
                default=0.0,
            )
        return max(0, math.ceil(until - now))

    def failed(self, account: str, address: str) -> int:
        """Count a failure; the lockout it starts in seconds (0: none yet)."""
        now = self.clock()
        locked = 0.0
        with self._lock:
            for key in (("account", account), ("address", address)):
                c = self._get(key, now)
                c.failures += 1
                c.last = now
                over = c.failures - self.free[key[0]]
                if over >= 0:
                    c.locked_until = now + min(self.base_s * 2.0**over, self.max_s)
                    locked = max(locked, c.locked_until - now)
                self._counts.move_to_end(key)
            while len(self._counts) > MAX_KEYS:
                self._counts.popitem(last=False)
        return math.ceil(locked)

    def succeeded(self, account: str) -> None:
        with self._lock:
            self._counts.pop(("account", account), None)

    def _get(self, key: tuple[str, str], now: float) -> _Count:
        c = self._counts.get(key)
        if c is None or now - max(c.last, c.locked_until) > FORGET_S:
            c = self._counts[key] = _Count()
        return c


DB_NOW: Final = "SELECT extract(epoch from clock_timestamp())::double precision"


class SharedSignInLimiter(SignInLimiter):
    """The same limits, counted in PostgreSQL's ``signin_failures`` for every instance.
    ``clock``: None for the database's (tests pass a fake one)."""

    def __init__(
        self,
        store: AuthStore,
        clock: Callable[[], float] | None = None,
        *,
        account_free: int = ACCOUNT_FREE,
        address_free: int = ADDRESS_FREE,
        base_s: float = BASE_S,
        max_s: float = MAX_S,
    ) -> None:
        super().__init__(
            account_free=account_free, address_free=address_free, base_s=base_s, max_s=max_s
        )
        self.store = store
        self.db_clock = clock

    def _now(self, db: Db) -> float:
        if self.db_clock is not None:
            return self.db_clock()
        return float(db.execute(DB_NOW).fetchone()[0])

    def wait(self, account: str, address: str) -> int:
        with self.store.db() as db:
            now = self._now(db)
            row = db.execute(
                "SELECT max(locked_until) FROM signin_failures WHERE (kind = 'account' AND"
                " key = ?) OR (kind = 'address' AND key = ?)",
                (account, address),
            ).fetchone()
        until = row[0] if row is not None and row[0] is not None else 0.0
        return max(0, math.ceil(until - now))

    def failed(self, account: str, address: str) -> int:
        locked = 0.0
        with self.store.db() as db:
            now = self._now(db)
            # the account's row first, then the address's: two instances never wait in a circle
            for kind, key in (("account", account), ("address", address)):
                failures = db.execute(
                    "INSERT INTO signin_failures AS f (kind, key, failures, last)"
                    " VALUES (?1, ?2, 1, ?3) ON CONFLICT (kind, key) DO UPDATE SET"
                    " failures = CASE WHEN ?3 - GREATEST(f.last, f.locked_until) > ?4 THEN 1"
                    " ELSE f.failures + 1 END, last = ?3 RETURNING failures",
                    (kind, key, now, FORGET_S),
                ).fetchone()[0]
                over = int(failures) - self.free[kind]
                if over >= 0:
                    until = now + min(self.base_s * 2.0**over, self.max_s)
                    db.execute(
                        "UPDATE signin_failures SET locked_until = ? WHERE kind = ? AND key = ?",
                        (until, kind, key),
                    )
                    locked = max(locked, until - now)
        return math.ceil(locked)

    def succeeded(self, account: str) -> None:
        with self.store.db() as db:
            db.execute("DELETE FROM signin_failures WHERE kind = 'account' AND key = ?", (account,))


def limiter_for(store: AuthStore) -> SignInLimiter:
    """The sign-in limiter of the installation whose staff store is ``store``: counted in the
    database shared by every instance (PostgreSQL), or in this process (SQLite)."""
    return SharedSignInLimiter(store) if store.shared else SignInLimiter()
