"""Staff passwords: Argon2id hashes (argon2-cffi), a length policy, and a verification that
costs the same whether or not the account exists.

Parameters are argon2-cffi's defaults (RFC 9106's second recommendation: 64 MiB, t=3, p=4), about
0.3 s on a small machine. A hash carries its own parameters, so verifying an older hash still
works and :func:`needs_rehash` says when to store a fresh one.
"""

from __future__ import annotations

import contextlib
import threading
from typing import Final

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

MIN_LENGTH: Final = 10
MAX_LENGTH: Final = 256
"""Longer inputs are refused before hashing (a megabyte password is a denial of service)."""

HASHER: Final = PasswordHasher()
_dummy: str | None = None
_dummy_lock = threading.Lock()


class WeakPassword(ValueError):
    """The password does not meet the policy; the message says why (never echoes it)."""


def check_policy(password: str, staff_id: str = "") -> None:
    if len(password) < MIN_LENGTH:
        raise WeakPassword(f"a password needs at least {MIN_LENGTH} characters")
    if len(password) > MAX_LENGTH:
        raise WeakPassword(f"a password has at most {MAX_LENGTH} characters")
    if staff_id and staff_id.lower() in password.lower():
        raise WeakPassword("a password must not contain the staff id")
    if len(set(password)) < 4:
        raise WeakPassword("a password needs at least 4 different characters")


def hash_password(password: str, hasher: PasswordHasher = HASHER) -> str:
    """An Argon2id hash (PHC string) of ``password``; ``hasher`` lets tests use cheap params."""
    return hasher.hash(password)


def verify_password(stored: str | None, password: str) -> bool:
    """True when ``password`` matches ``stored``. With no stored hash (unknown account, or no
    password set) a dummy hash is verified instead, so the answer takes as long either way."""
    if len(password) > MAX_LENGTH:
        return False
    if stored is None:
        with contextlib.suppress(VerificationError, InvalidHashError):
            HASHER.verify(_dummy_hash(), password)
        return False
    try:
        return HASHER.verify(stored, password)
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


def needs_rehash(stored: str) -> bool:
    try:
        return HASHER.check_needs_rehash(stored)
    except InvalidHashError:
        return True


def _dummy_hash() -> str:
    global _dummy
    with _dummy_lock:
        if _dummy is None:
            _dummy = HASHER.hash("not a password of anyone: only here to take time")
        return _dummy
