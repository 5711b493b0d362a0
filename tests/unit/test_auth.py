"""Staff access parts on their own: the sign-in limiter on a fake clock, the password policy
and hashes, weak secrets, tokens and sessions in the store, the audit trail, scopes from the
registry, and the ``jiayuan staff password`` command.

The store and audit tests take ``auth_at`` and run once on SQLite and once on PostgreSQL (the
contract both stores keep); those that only PostgreSQL can show (two instances on one database,
its append-only trigger's DELETE and TRUNCATE) take ``pg_url``."""

from __future__ import annotations

import io
import sqlite3
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from jiayuan.auth import passwords
from jiayuan.auth.audit import AuditLog
from jiayuan.auth.authn import Authenticator
from jiayuan.auth.limiter import SignInLimiter
from jiayuan.auth.manage import note_registry
from jiayuan.auth.scope import Principal, Scopes
from jiayuan.auth.secrets import weak_secret
from jiayuan.auth.store import AuthStore, digest
from jiayuan.cli import main
from jiayuan.settings import Settings
from registry import Registry, write_registry
from tests.alerting import FakeClock
from tests.schemas import columns
from tests.staff import CHEAP
from tests.staffworld import registry


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(1000.0)


@pytest.fixture
def store(auth_at: Path | str, clock: FakeClock) -> Iterator[AuthStore]:
    s = AuthStore.open(auth_at, clock)
    yield s
    s.close()


def stored_text(store: AuthStore) -> str:
    """Everything the store holds, as text: the file's bytes, or every row of every table."""
    if isinstance(store.where, Path):
        return store.where.read_bytes().decode("latin-1")
    with store.db() as db:
        return "\n".join(
            str(r[0])
            for table in ("credentials", "sessions", "tokens", "audit", "registry_seen")
            for r in db.execute(f"SELECT t::text FROM {table} t")
        )


def test_the_limiter_locks_for_doubling_times_and_forgets() -> None:
    clock = FakeClock(0.0)
    lim = SignInLimiter(clock, account_free=3, address_free=100, base_s=30, max_s=100)
    assert [lim.failed("a", "ip") for _ in range(3)] == [0, 0, 30]
    assert lim.wait("a", "ip") == 30 and lim.wait("b", "ip") == 0
    clock.advance(30)
    assert lim.wait("a", "ip") == 0
    assert lim.failed("a", "ip") == 60  # doubled
    clock.advance(60)
    assert lim.failed("a", "ip") == 100  # capped
    clock.advance(100 + 901)
    assert lim.wait("a", "ip") == 0 and lim.failed("a", "ip") == 0  # forgotten
    lim.succeeded("a")
    assert lim.failed("a", "ip") == 0


def test_the_address_limit_is_not_reset_by_a_good_sign_in() -> None:
    lim = SignInLimiter(FakeClock(0.0), account_free=100, address_free=2)
    lim.failed("a", "ip")
    lim.succeeded("a")
    assert lim.failed("b", "ip") > 0 and lim.wait("c", "ip") > 0 and lim.wait("c", "other") == 0


def test_password_policy_and_hashes() -> None:
    for bad, why in (("short", "at least"), ("care-a-password", "staff id"),
                     ("aaaaaaaaaaaa", "different"), ("x" * 300, "at most")):  # fmt: skip
        with pytest.raises(passwords.WeakPassword, match=why):
            passwords.check_policy(bad, "care-a")
    h = passwords.hash_password("correct horse", CHEAP)
    assert h.startswith("$argon2id$") and "correct horse" not in h
    assert passwords.verify_password(h, "correct horse")
    assert not passwords.verify_password(h, "correct horsE")
    assert not passwords.verify_password("not a hash", "x")
    assert not passwords.verify_password(None, "anything")  # unknown account: same work, no
    assert passwords.needs_rehash(h)  # cheap parameters: stored again on the next sign-in


def test_weak_secrets() -> None:
    assert weak_secret("changeme") and weak_secret("x" * 31) and weak_secret("ab" * 20)
    assert weak_secret("ThisIsMyChangeMeTokenOfSufficientLength42")
    assert weak_secret("k3J9-aZq0_Lw8sVb2Yx7Rt5Nc1Hd6Gf4Pe") is None


def test_tokens_and_sessions_are_stored_as_digests(store: AuthStore, clock: FakeClock) -> None:
    store.set_password_hash("care-a", "$argon2id$stand-in", "adm")
    token, t = store.create_token("care-a", "script", 60, "adm")
    sid, s = store.start_session("care-a", 60, "127.0.0.1")
    raw = stored_text(store)
    assert token not in raw and sid not in raw
    assert digest(token) in raw and digest(sid) in raw and "$argon2id$stand-in" in raw
    if isinstance(store.where, Path):
        assert store.where.stat().st_mode & 0o077 == 0
    assert store.token(token) == t and store.session(sid) == s
    assert store.token("jy_" + token[3:-1] + "x") is None and store.token("nope") is None
    clock.advance(61)
    assert store.token(token) is None and store.session(sid) is None
    assert store.prune(keep_s=0) == 2


def test_sessions_end_with_a_new_password_and_at_sign_out(store: AuthStore) -> None:
    a, _ = store.start_session("care-a", 60, "ip")
    b, _ = store.start_session("care-a", 60, "ip")
    other, _ = store.start_session("care-b", 60, "ip")
    assert store.end_session(a) and not store.end_session(a)
    assert store.session(a) is None and store.session(b) is not None
    assert store.set_password_hash("care-a", "h1", "adm") == 1  # b ended, not a again
    assert store.session(b) is None and store.session(other) is not None
    assert store.password_hash("care-a") == "h1" and store.with_password() == {"care-a"}
    c, _ = store.start_session("care-a", 60, "ip")
    assert store.set_password_hash("care-a", "h2", "care-a", end_sessions=False) == 0
    assert store.password_hash("care-a") == "h2" and store.session(c) is not None
    assert store.remove_password("care-a") and not store.remove_password("care-a")
    assert store.session(c) is None and store.with_password() == set()


def test_tokens_are_listed_revoked_once_and_forgotten_with_their_owner(
    store: AuthStore, clock: FakeClock
) -> None:
    first, t1 = store.create_token("care-a", "one", 60, "adm")
    _, t2 = store.create_token("care-a", "two", 60, "adm")
    _, t3 = store.create_token("care-b", "three", 60, "adm")
    assert t1.id < t2.id < t3.id and t1.hint == first[:10] and t1.revoked_at is None
    assert [t.name for t in store.tokens()] == ["three", "two", "one"]
    assert [t.name for t in store.tokens("care-a")] == ["two", "one"]
    clock.advance(5)
    revoked = store.revoke_token(t1.id, "adm")
    assert revoked is not None and revoked.revoked_by == "adm" and revoked.revoked_at == 1005.0
    clock.advance(5)
    again = store.revoke_token(t1.id, "someone else")
    assert again == revoked  # the first revocation stands
    assert store.revoke_token(9999, "adm") is None and store.get_token(9999) is None
    assert store.token(first) is None
    store.set_password_hash("care-a", "h", "adm")
    sid, _ = store.start_session("care-a", 60, "ip")
    assert store.forget("care-a", "system") == (1, 1, True)  # t1 was revoked already
    assert store.session(sid) is None and store.password_hash("care-a") is None
    assert all(t.revoked_at is not None for t in store.tokens("care-a"))
    assert store.get_token(t3.id) == t3


def test_the_audit_trail_pages_filters_and_prunes(store: AuthStore, clock: FakeClock) -> None:
    audit = AuditLog(store)
    ids: list[int] = []
    for actor, action, outcome in (
        ("anonymous", "auth.login_failed", "refused"),
        ("care-a", "auth.login", "ok"),
        ("care-a", "alert.acknowledge", "ok"),
        ("care-b", "auth.login", "ok"),
        ("care-a", "authxlogin", "ok"),  # not of the family "auth." ("." is no wildcard)
    ):
        ids.append(audit.record(actor, action, outcome=outcome, ip="10.0.0.1", n=len(ids)))  # type: ignore[arg-type]
        clock.advance(10)
    assert ids == sorted(ids) and ids[0] > 0
    items, total = audit.page()
    assert total == 5 and [e.id for e in items] == ids[::-1]
    assert items[-1].detail == {"n": 0} and items[-1].ip == "10.0.0.1" and items[-1].at == 1000.0
    family, n = audit.page(action="auth.")
    assert n == 3 and [e.actor for e in family] == ["care-b", "care-a", "anonymous"]
    assert audit.page(actor="care-a", action="auth.")[1] == 1
    assert audit.page(action="a_th.")[1] == 0  # "_" is escaped: no wildcard either
    assert audit.page(outcome="refused")[0][0].action == "auth.login_failed"
    assert audit.page(since=1010.0, until=1030.0)[1] == 2
    page, n = audit.page(limit=2, offset=1)
    assert n == 5 and [e.id for e in page] == ids[3:1:-1]
    last = audit.last("auth.login")
    assert last is not None and last.actor == "care-b"
    assert audit.prune(1020.0) == 2
    assert [e.id for e in audit.page()[0]] == ids[:1:-1][:3]


def test_the_audit_trail_refuses_changes(store: AuthStore) -> None:
    audit = AuditLog(store)
    entry = audit.record("care-a", "auth.login", target="care-a")
    errors = (sqlite3.IntegrityError, psycopg.errors.InsufficientPrivilege)
    with pytest.raises(errors, match="append-only"), store.db() as db:
        db.execute("UPDATE audit SET actor = 'someone else' WHERE id = ?", (entry,))
    (kept,), _ = audit.page()
    assert kept.actor == "care-a"


@pytest.mark.expect_errors('jiayuan_log_errors_total{logger="jiayuan.auth.audit"}')
def test_a_failed_audit_write_is_logged_not_raised(
    store: AuthStore, caplog: pytest.LogCaptureFixture
) -> None:
    assert AuditLog(store).record("care-a", "auth.login", outcome="maybe") == 0  # type: ignore[arg-type]
    assert "auth.login by care-a not written" in caplog.text
    assert AuditLog(store).page()[1] == 0


def test_registry_changes_are_audited_once_and_removed_staff_forgotten(store: AuthStore) -> None:
    reg = registry()
    first = note_registry(store, reg)
    assert first is not None and first["first"] and first["counts"]["added"] == len(reg.staff)
    assert note_registry(store, reg) is None
    store.set_password_hash("care-a", "h", "adm")
    without = Registry(
        reg.community, staff=[s for s in reg.staff.values() if s.staff_id != "care-a"]
    )
    detail = note_registry(store, without)
    assert detail is not None and detail["staff_removed"] == ["care-a"] and not detail["first"]
    assert store.password_hash("care-a") is None
    actions = [e.action for e in AuditLog(store).page()[0]]
    assert actions == ["credential.forget", "registry.changed", "registry.changed"]


def test_a_session_opened_through_one_instance_is_valid_on_another(pg_url: str) -> None:
    settings = Settings(session_hours=1)
    a_store, b_store = AuthStore.open(pg_url), AuthStore.open(pg_url)
    try:
        a = Authenticator(settings, a_store, registry())
        b = Authenticator(settings, b_store, registry())
        a_store.set_password_hash("care-a", passwords.hash_password("long enough pw", CHEAP), "t")
        signed = a.sign_in("care-a", "long enough pw", "10.0.0.1")
        on_b = b.from_session(signed.session_id)
        assert on_b is not None and on_b.id == "care-a" and on_b.csrf == signed.session.csrf
        token, _ = b_store.create_token("care-a", "script", 60, "care-a")
        assert a.from_bearer(token) is not None
        assert b_store.end_session(signed.session_id)  # signed out through B
        assert a.from_session(signed.session_id) is None
        again = b.sign_in("care-a", "long enough pw", "10.0.0.1")
        b_store.set_password_hash("care-a", "changed", "adm")  # a new password, through B
        assert a.from_session(again.session_id) is None
        assert [e.action for e in AuditLog(a_store).page()[0]] == ["auth.login", "auth.login"]
    finally:
        a_store.close()
        b_store.close()


def test_instances_starting_together_audit_a_registry_change_once(pg_url: str) -> None:
    stores = [AuthStore.open(pg_url) for _ in range(2)]
    try:
        reg = registry()
        start = threading.Barrier(4)
        noted: list[dict[str, object] | None] = []

        def start_with(store: AuthStore) -> None:
            start.wait()
            noted.append(note_registry(store, reg))

        threads = [threading.Thread(target=start_with, args=(s,)) for s in stores * 2]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert sum(d is not None for d in noted) == 1
        assert AuditLog(stores[0]).page(action="registry.changed")[1] == 1
    finally:
        for s in stores:
            s.close()


def test_on_postgresql_only_retention_deletes_audit_entries(pg_url: str) -> None:
    clock = FakeClock(1000.0)
    store = AuthStore.open(pg_url, clock)
    try:
        audit = AuditLog(store)
        audit.record("care-a", "auth.login")
        for statement in ("DELETE FROM audit", "TRUNCATE audit"):
            with (
                pytest.raises(psycopg.errors.InsufficientPrivilege, match="append-only"),
                store.db() as db,
            ):
                db.execute(statement)
        with store.db() as db:  # the setting lasts for prune's transaction only
            db.execute("SELECT set_config('jiayuan.audit_prune', 'on', true)")
        with pytest.raises(psycopg.errors.InsufficientPrivilege), store.db() as db:
            db.execute("DELETE FROM audit")
        assert audit.page()[1] == 1
        assert audit.prune(1001.0) == 1 and audit.page()[1] == 0
    finally:
        store.close()


def test_scopes_follow_the_registry() -> None:
    scopes = Scopes(registry())
    a = scopes.of(Principal("care-a", "caretaker", "A", "token"))
    assert a.devices == {"w-1", "s-1"} and a.vitals == {"w-1"} and a.residents == {"r-1"}
    assert a.audience.delivered_to == "care-a" and not a.audience.everyone
    assert not a.sees_device("w-2", "wearable") and a.sees_readings("w-1", "wearable")
    g = scopes.of(Principal("guard", "security", "G", "session", csrf="x"))
    assert g.sees_device("g-1", "gate") and not g.sees_device("w-1", "wearable")
    assert g.sees_readings("s-2", "smoke") and "security" in g.audience.routes
    m = scopes.of(Principal("mgr", "manager", "M", "token"))
    assert m.sees_device("w-2", "wearable") and not m.sees_readings("w-2", "wearable")
    assert m.audience.everyone and m.sees_resident("r-2") and "audit" not in m.can


def test_the_staff_password_command(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                    capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    write_registry(registry(), tmp_path / "registry")
    monkeypatch.setenv("JIAYUAN_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("JIAYUAN_REGISTRY", str(tmp_path / "registry"))
    monkeypatch.setattr(sys, "stdin", io.StringIO("a long enough secret\n"))
    assert main(["staff", "password", "care-a", "--stdin"]) == 0
    store = AuthStore(tmp_path / "data" / "auth.db")
    stored = store.password_hash("care-a")
    assert stored and passwords.verify_password(stored, "a long enough secret")
    monkeypatch.setattr(sys, "stdin", io.StringIO("short\n"))
    assert main(["staff", "password", "care-a", "--stdin"]) == 1
    monkeypatch.setattr(sys, "stdin", io.StringIO("a long enough secret\n"))
    assert main(["staff", "password", "nobody", "--stdin"]) == 1
    assert main(["staff", "list"]) == 0
    out = capsys.readouterr()
    assert "care-a" in out.out and "password set" in out.out
    assert "a long enough secret" not in out.out + out.err
    assert main(["staff", "password", "care-a", "--remove"]) == 0
    assert store.password_hash("care-a") is None


def test_both_schemas_have_the_same_tables_and_columns(tmp_path: Path, pg_url: str) -> None:
    """The two DDLs (jiayuan/auth/store.py's SCHEMA for SQLite, district/migrations/
    0005_auth.sql for PostgreSQL) are kept apart on purpose; this keeps them in step."""
    on_file, on_pg = AuthStore.open(tmp_path / "auth.db"), AuthStore.open(pg_url)
    try:
        with on_file.db() as db, on_pg.db() as pg:
            lite = columns(db)
            on_both = columns(pg, lite)
        assert set(lite) == {"credentials", "sessions", "tokens", "audit", "registry_seen"}
        assert on_both == lite
    finally:
        on_file.close()
        on_pg.close()
