"""Linux's ``/proc/<pid>/stat``, read one way for the whole project: the fields after the
command name, which may itself hold spaces and parentheses. So ``fields(...)[0]`` is the state
(field 3 in proc(5)), ``[1]`` the parent's pid, ``[11]`` and ``[12]`` user and system time in
clock ticks, ``[13]`` and ``[14]`` those of reaped children, ``[16]`` the nice value."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Final

TICK_S: Final = 1.0 / (os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100)
"""Seconds a clock tick of ``/proc`` lasts."""


def fields(process: int | Path) -> list[str] | None:
    """The fields of process ``process`` (a pid, or the path of a ``stat`` file: a thread's is
    ``/proc/<pid>/task/<tid>/stat``), None when it cannot be read (it ended, or no ``/proc``)."""
    path = process if isinstance(process, Path) else Path(f"/proc/{process}/stat")
    try:
        text = path.read_text()
    except OSError:
        return None
    return text[text.rindex(")") + 2 :].split()


def cpu_seconds(process: int | Path) -> float | None:
    """User plus system CPU of a process or thread (as :func:`fields`), None when unreadable."""
    f = fields(process)
    return None if f is None else (int(f[11]) + int(f[12])) * TICK_S


def running(pid: int) -> bool:
    """Whether ``pid`` runs: a zombie (ended, not yet reaped by its parent) does not."""
    f = fields(pid)
    return f is not None and f[0] != "Z"


def children(pid: int) -> list[int]:
    """The processes whose parent is ``pid``, now."""
    out = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            f = fields(Path(entry, "stat"))
            if f is not None and int(f[1]) == pid:
                out.append(int(entry.name))
    return out
