"""Signing in, in tests: an admin token for the settings, tokens minted straight in the
service's ``auth.db``, and passwords hashed with cheap Argon2 parameters (verification reads
the parameters from the hash, so signing in with them is fast and otherwise real)."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from argon2 import PasswordHasher

from alerts import AlertStore
from base.datadir import DataDir
from ingest.journal import Journal
from jiayuan.auth.passwords import hash_password
from jiayuan.auth.store import AuthStore
from jiayuan.context import AppContext
from jiayuan.settings import Settings
from registry import Registry

ADMIN_TOKEN = "test-admin-" + secrets.token_urlsafe(32)
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
CHEAP = PasswordHasher(time_cost=1, memory_cost=64, parallelism=1)


@contextmanager
def app_context(
    data: Path, journal: Journal, alerts: AlertStore, registry: Registry, **more: Any
) -> Iterator[AppContext]:
    """The API's context over ``journal`` and ``alerts`` (closed after) in ``data``, with
    :data:`ADMIN_TOKEN` as the admin token."""
    try:
        yield AppContext(
            settings=Settings(data_dir=data, admin_token=ADMIN_TOKEN),
            journal=journal,
            alerts=alerts,
            registry=registry,
            **more,
        )
    finally:
        alerts.close()
        journal.close()


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
