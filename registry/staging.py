"""A change to a registry directory made all at once, even when the writer is killed halfway.

The writer holds the directory's lock (:func:`locked`, ``flock`` on the directory itself: the
service and ``jiayuan registry import`` take the same one), writes the new files into
``.staging/`` (mode 0700), each ``fsync``\\ed, then the marker ``.staging/COMMIT``: the files to
move in and the files to move aside into ``superseded/``. Written durably, the marker *is* the
change: the moves that follow are repeated by whoever finds it (:func:`settle`, which
:func:`registry.load_registry` calls on a directory before reading it) until they are all done,
and the marker is deleted last. Without the marker, whatever ``.staging/`` holds is a change
that never happened and is ignored (the next writer clears it).
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Final

from base.files import sync_dir, write_file

STAGING: Final = ".staging"
COMMIT: Final = "COMMIT"
SUPERSEDED: Final = "superseded"


class Unfinished(RuntimeError):
    """A change a killed writer committed could not be finished (no permission, say)."""


@contextmanager
def locked(directory: Path, exclusive: bool = True) -> Iterator[int]:
    """Hold the directory's lock (shared for a reader); yields the locked descriptor."""
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
        yield fd
    finally:
        os.close(fd)  # releases the lock


def fresh_staging(directory: Path) -> Path:
    """An empty ``.staging/`` (the lock held): what an earlier writer left without a marker is
    dropped; a marker left is a change to finish first (:func:`finish`)."""
    finish(directory)
    stage = directory / STAGING
    shutil.rmtree(stage, ignore_errors=True)
    stage.mkdir(mode=0o700)
    return stage


def commit(directory: Path, files: Sequence[str], aside: Sequence[str]) -> list[str]:
    """With the lock held and ``files`` written in ``.staging/``: move them into ``directory``
    and ``aside`` (names in ``directory``) into ``superseded/``; the names moved aside."""
    stage = directory / STAGING
    sync_dir(stage)
    stamp = time.strftime("%Y%m%dT%H%M%S")
    plan = {"in": list(files), "aside": {n: f"{SUPERSEDED}/{stamp}-{n}" for n in aside}}
    write_file(stage / COMMIT, json.dumps(plan))  # from here on, the change is made
    _roll_forward(directory, plan)
    return list(aside)


def finish(directory: Path) -> bool:
    """With the lock held: finish a change committed but not all moved; True when there was
    one."""
    marker = directory / STAGING / COMMIT
    try:
        plan = json.loads(marker.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return False
    _roll_forward(directory, _checked(plan, marker))
    return True


def settle(directory: Path) -> bool:
    """Finish a change a killed writer committed (taking the lock); True when there was one."""
    if not (directory / STAGING / COMMIT).exists():
        return False
    with locked(directory):
        return finish(directory)


@contextmanager
def settled(directory: Path) -> Iterator[None]:
    """Read ``directory`` as a whole: no change is moved in meanwhile, and one a killed writer
    committed is finished first."""
    with locked(directory, exclusive=False) as fd:
        if (directory / STAGING / COMMIT).exists():
            fcntl.flock(fd, fcntl.LOCK_EX)
            try:
                finish(directory)
            except (OSError, ValueError) as e:
                raise Unfinished(f"{directory / STAGING / COMMIT}: {e}") from e
        yield


def _checked(plan: object, marker: Path) -> Mapping[str, object]:
    def plain(name: object) -> bool:
        return isinstance(name, str) and name not in ("", ".", "..") and "/" not in name

    ok = (
        isinstance(plan, dict)
        and isinstance(plan.get("in"), list)
        and all(plain(n) for n in plan["in"])
        and isinstance(plan.get("aside"), dict)
        and all(
            plain(n) and isinstance(to, str) and to.startswith(f"{SUPERSEDED}/")
            and plain(to.removeprefix(f"{SUPERSEDED}/"))
            for n, to in plan["aside"].items()
        )
    )  # fmt: skip
    if not ok:
        raise ValueError(f"{marker}: not a registry change jiayuan wrote")
    assert isinstance(plan, dict)
    return plan


def _roll_forward(directory: Path, plan: Mapping[str, object]) -> None:
    stage = directory / STAGING
    files, aside = plan["in"], plan["aside"]
    assert isinstance(files, list) and isinstance(aside, dict)
    for name in files:
        if (stage / name).exists():  # not yet moved
            os.replace(stage / name, directory / name)
    if aside:
        (directory / SUPERSEDED).mkdir(exist_ok=True)
        for name, to in aside.items():
            if (directory / name).exists():
                os.replace(directory / name, directory / to)
        sync_dir(directory / SUPERSEDED)
    sync_dir(directory)
    (stage / COMMIT).unlink()
    sync_dir(stage)
    shutil.rmtree(stage, ignore_errors=True)
