"""Secrets given as settings: read from files (``*_FILE``) and judged too weak to start with."""

from __future__ import annotations

from pathlib import Path
from typing import Final

MIN_SECRET: Final = 32
KNOWN_WEAK: Final = frozenset(
    {"admin", "changeme", "change-me", "secret", "password", "jiayuan", "token", "demo", "test"}
)


def read_secret_file(path: Path, setting: str) -> str:
    """The first line of ``path`` (a mounted secret, a file only its owner reads)."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as e:
        raise ValueError(f"{setting}: cannot read {path} ({e.strerror})") from None
    if not lines or not lines[0].strip():
        raise ValueError(f"{setting}: {path} is empty")
    return lines[0].strip()


def weak_secret(value: str) -> str | None:
    """Why ``value`` is too weak to guard anything, or None."""
    if value.strip().lower() in KNOWN_WEAK or any(w in value.lower() for w in ("changeme",)):
        return "a well-known default"
    if len(value) < MIN_SECRET:
        return f"too short ({len(value)} characters, at least {MIN_SECRET})"
    if len(set(value)) < 10:
        return "too repetitive (fewer than 10 different characters)"
    return None
