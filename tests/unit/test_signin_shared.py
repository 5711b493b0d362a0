"""Failed sign-ins counted once for a district: two instances' authenticators on one PostgreSQL
share the count (guesses spread over the instances get the free attempts once), a good
sign-in through either clears the account's count, and the hourly retention forgets idle
counts. One instance on SQLite keeps them in memory (tests/unit/test_auth.py)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from jiayuan.auth import passwords
from jiayuan.auth.authn import Authenticator, SignInLimited, SignInRefused
from jiayuan.auth.limiter import ACCOUNT_FREE, SharedSignInLimiter, SignInLimiter, limiter_for
from jiayuan.auth.store import AuthStore
from jiayuan.settings import Settings
from tests.staff import CHEAP
from tests.staffworld import registry

PASSWORD = "long enough pw"


@contextmanager
def two(url: str) -> Iterator[tuple[Authenticator, Authenticator]]:
    """Instances ``a`` and ``b``: a staff store and an authenticator each, on one database."""
    a_store, b_store = AuthStore.open(url), AuthStore.open(url)
    try:
        settings = Settings(session_hours=1)
        a = Authenticator(settings, a_store, registry())
        b = Authenticator(settings, b_store, registry())
        a_store.set_password_hash("care-a", passwords.hash_password(PASSWORD, CHEAP), "t")
        yield a, b
    finally:
        a_store.close()
        b_store.close()


def guess(on: Authenticator, ip: str = "10.0.0.9") -> str:
    try:
        on.sign_in("care-a", "wrong guess", ip)
    except SignInRefused:
        return "refused"
    except SignInLimited:
        return "limited"
    return "signed in"


def test_guesses_spread_over_two_instances_are_counted_once(pg_url: str) -> None:
    with two(pg_url) as (a, b):
        assert isinstance(a.limiter, SharedSignInLimiter)
        outcomes = [guess((a, b)[i % 2]) for i in range(ACCOUNT_FREE)]
        assert outcomes == ["refused"] * ACCOUNT_FREE
        # the account is locked on both, even for the right password, from any address
        assert guess(a) == guess(b) == "limited"
        with pytest.raises(SignInLimited) as e:
            b.sign_in("care-a", PASSWORD, "10.0.0.1")
        assert 0 < e.value.retry_after <= 30
        audited = [x.action for x in a.audit.page(limit=50)[0]]
        assert audited.count("auth.login_failed") == ACCOUNT_FREE


def test_a_good_sign_in_on_one_instance_clears_the_count_on_the_other(pg_url: str) -> None:
    with two(pg_url) as (a, b):
        for _ in range(ACCOUNT_FREE - 1):
            assert guess(a) == "refused"
        b.sign_in("care-a", PASSWORD, "10.0.0.1")
        for _ in range(ACCOUNT_FREE - 1):
            assert guess(a) == "refused"  # counted from the good sign-in: not locked
        assert guess(b) == "refused"  # the fifth since: locked from now on
        assert guess(a) == "limited"


def test_idle_counts_are_forgotten_and_pruned(pg_url: str) -> None:
    store = AuthStore.open(pg_url)
    try:
        now = [1_000.0]
        lim = SharedSignInLimiter(store, clock=lambda: now[0], account_free=2, base_s=30)
        assert lim.failed("care-a", "10.0.0.9") == 0
        assert lim.failed("care-a", "10.0.0.9") == 30
        assert lim.wait("care-a", "10.0.0.7") == 30  # the account, from another address
        now[0] += 31
        assert lim.wait("care-a", "10.0.0.7") == 0
        assert lim.failed("care-a", "10.0.0.9") == 60  # doubled: still remembered
        now[0] += 60 + 901  # idle past FORGET_S after the lockout ended: a fresh count
        assert lim.failed("care-a", "10.0.0.9") == 0
        with store.db() as db:
            assert db.execute("SELECT count(*) FROM signin_failures").fetchone()[0] == 2
        store.prune()  # their times are the fake clock's: long past on the database's
        with store.db() as db:
            assert db.execute("SELECT count(*) FROM signin_failures").fetchone()[0] == 0
    finally:
        store.close()


def test_one_instance_on_sqlite_counts_in_memory(tmp_path: Path) -> None:
    store = AuthStore.open(tmp_path / "auth.db")
    assert type(limiter_for(store)) is SignInLimiter
    assert store.prune() == 0  # and has no shared table to prune
