"""Files written so that a crash or a power cut leaves the old content or the new, never an
empty or half file, and that nobody else can read what they did not need to.

:func:`write_file` writes beside the target, ``fsync``\\s, renames over it and ``fsync``\\s the
directory; the file is created with ``mode`` (0600 unless said otherwise), set again even when a
stale temporary file was left with other bits.
"""

from __future__ import annotations

import os
from pathlib import Path

PRIVATE = 0o600


def write_file(path: Path, text: str | bytes, mode: int = PRIVATE, gid: int | None = None) -> None:
    """Replace ``path`` with ``text`` (UTF-8), atomically and durably, with ``mode`` (and group
    ``gid``)."""
    data = text.encode("utf-8") if isinstance(text, str) else text
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
        try:
            os.fchmod(fd, mode)  # also when the file was left over with other bits
            if gid is not None:
                os.fchown(fd, -1, gid)
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    sync_dir(path.parent)


def mode_of(path: Path, default: int = PRIVATE) -> int:
    """The permission bits of ``path``, or ``default`` when there is no such file: a file
    rewritten keeps what its owner gave it."""
    try:
        return path.stat().st_mode & 0o777
    except FileNotFoundError:
        return default


def sync_dir(directory: Path) -> None:
    """``fsync`` a directory: the renames and removals in it survive a power cut."""
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
