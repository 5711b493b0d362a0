"""Push integrations' tokens on PostgreSQL: issued through one instance (`jiayuan push token`
there), taken by every instance — each with a data directory of its own — and revoked for all
at once. On SQLite they stay in the data directory's ``push_tokens.json``, as before."""

from __future__ import annotations

from pathlib import Path

from jiayuan.auth.store import AuthStore
from jiayuan.integrations import TOKENS_FILE, PushTokens


def test_a_token_issued_on_one_instance_is_taken_by_another_and_revoked_for_both(
    tmp_path: Path, pg_url: str
) -> None:
    store_a, store_b = AuthStore.open(pg_url), AuthStore.open(pg_url)
    try:
        a = PushTokens(tmp_path / "a", store_a)
        b = PushTokens(tmp_path / "b", store_b)
        token = a.issue("nb-platform")
        assert b.check("nb-platform", token)
        assert not b.check("nb-platform", token + "x")
        assert not b.check("other", token)
        record = b.issued("nb-platform")
        assert record is not None and record.hint == token[:8]
        again = b.issue("nb-platform")  # a new one replaces it, for both
        assert a.check("nb-platform", again) and not a.check("nb-platform", token)
        assert b.revoke("nb-platform") and not a.revoke("nb-platform")
        assert not a.check("nb-platform", again)
        assert not (tmp_path / "a" / TOKENS_FILE).exists()  # nothing in a data directory
        assert not (tmp_path / "b" / TOKENS_FILE).exists()
    finally:
        store_a.close()
        store_b.close()


def test_one_instance_on_sqlite_keeps_the_tokens_in_its_data_directory(tmp_path: Path) -> None:
    store = AuthStore.open(tmp_path / "auth.db")
    tokens = PushTokens(tmp_path, store)
    token = tokens.issue("nb-platform")
    assert (tmp_path / TOKENS_FILE).exists()
    assert PushTokens(tmp_path).check("nb-platform", token)  # the file, as before
