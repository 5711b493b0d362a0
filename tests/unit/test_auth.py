"""Staff access parts on their own: the sign-in limiter on a fake clock, the password policy
and hashes, weak secrets, tokens and sessions in the store, scopes from the registry, and the
``jiayuan staff password`` command."""

from __future__ import annotations

import io
import sys
from pathlib import Path

import pytest

from jiayuan.auth import passwords
from jiayuan.auth.limiter import SignInLimiter
from jiayuan.auth.scope import Principal, Scopes
from jiayuan.auth.secrets import weak_secret
from jiayuan.auth.store import AuthStore, digest
from jiayuan.cli import main
from registry import write_registry
from tests.alerting import FakeClock
from tests.staff import CHEAP
from tests.staffworld import registry


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


def test_tokens_and_sessions_are_stored_as_digests(tmp_path: Path) -> None:
    clock = FakeClock(1000.0)
    store = AuthStore(tmp_path / "auth.db", clock)
    token, t = store.create_token("care-a", "script", 60, "adm")
    sid, s = store.start_session("care-a", 60, "127.0.0.1")
    raw = (tmp_path / "auth.db").read_bytes()
    assert token.encode() not in raw and sid.encode() not in raw
    assert digest(token).encode() in raw
    assert (tmp_path / "auth.db").stat().st_mode & 0o077 == 0
    assert store.token(token) == t and store.session(sid) == s
    assert store.token("jy_" + token[3:-1] + "x") is None and store.token("nope") is None
    clock.advance(61)
    assert store.token(token) is None and store.session(sid) is None
    assert store.prune(keep_s=0) == 2


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
