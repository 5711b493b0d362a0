"""Signing in, in tests: an admin token for the settings, tokens minted straight in the
service's ``auth.db``, and passwords hashed with cheap Argon2 parameters (verification reads
the parameters from the hash, so signing in with them is fast and otherwise real)."""

from __future__ import annotations

import secrets

from argon2 import PasswordHasher

from base.datadir import DataDir
from jiayuan.auth.passwords import hash_password
from jiayuan.auth.store import AuthStore
from jiayuan.context import AppContext

ADMIN_TOKEN = "test-admin-" + secrets.token_urlsafe(32)
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
CHEAP = PasswordHasher(time_cost=1, memory_cost=64, parallelism=1)


def auth_store(ctx: AppContext) -> AuthStore:
    if ctx.auth is None:
        ctx.auth = AuthStore(DataDir(ctx.settings.data_dir).auth)
    return ctx.auth


def bearer(ctx: AppContext, staff_id: str, ttl_s: float = 3600.0) -> dict[str, str]:
    """``Authorization`` for a fresh token of ``staff_id`` (who must be in the registry)."""
    token, _ = auth_store(ctx).create_token(staff_id, "test", ttl_s, "test")
    return {"Authorization": f"Bearer {token}"}


def set_password(ctx: AppContext, staff_id: str, password: str) -> None:
    auth_store(ctx).set_password_hash(staff_id, hash_password(password, CHEAP), "test")
