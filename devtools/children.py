"""Child processes of the demo, the benchmark and the tests (Mosquitto, VictoriaMetrics,
``jiayuan run``): start one with its output in a log file, wait until it answers, stop it."""

from __future__ import annotations

import re
import signal
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path


def spawn(
    args: Sequence[str],
    log: Path,
    env: Mapping[str, str] | None = None,
    *,
    process_group: bool = False,
) -> subprocess.Popen[bytes]:
    """Start ``args`` with stdout and stderr appended to ``log``; ``process_group``: in a
    process group of its own (its children too), which ``os.killpg`` can kill whole."""
    out = open(log, "ab")  # noqa: SIM115 - lives with the process
    try:
        return subprocess.Popen(
            list(args),
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            process_group=0 if process_group else None,
        )
    finally:
        out.close()  # the child has its own copy of the descriptor


_TAKEN = re.compile(rb"address already in use", re.IGNORECASE)


def start_listening(
    start: Callable[[], object],
    log: Path,
    repick: Callable[[], object] | None,
    *,
    attempts: int = 5,
) -> None:
    """``start()`` a child that listens on ports picked beforehand (``free_port``). Another
    process may have bound one in between: when ``start()`` fails and what the child wrote to
    ``log`` meanwhile says so ("address already in use", as Mosquitto, PostgreSQL, Go's and
    uvicorn's servers word it), ``repick()`` chooses other ports and it starts again, up to
    ``attempts`` times. Without ``repick`` (ports the caller chose) the failure stands."""
    for attempt in range(1, attempts + 1):
        since = log.stat().st_size if log.exists() else 0
        try:
            start()
            return
        except (RuntimeError, TimeoutError):
            if repick is None or attempt == attempts or not _said_taken(log, since):
                raise
        repick()


def _said_taken(log: Path, since: int) -> bool:
    try:
        with log.open("rb") as f:
            f.seek(since)
            return _TAKEN.search(f.read()) is not None
    except OSError:
        return False


def wait_ready(
    proc: subprocess.Popen[bytes],
    ready: Callable[[], bool],
    *,
    name: str,
    log: Path,
    timeout: float,
    interval: float = 0.05,
) -> None:
    """Poll ``ready()`` (an OSError or ValueError counts as not yet) until it is true. Raises
    RuntimeError, with the log's tail, if the process exits first, and TimeoutError (after
    stopping it) if it never gets ready."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            tail = log.read_text(errors="replace")[-3000:] if log.exists() else ""
            raise RuntimeError(f"{name} exited with {proc.returncode}; see {log}:\n{tail}")
        try:
            if ready():
                return
        except (OSError, ValueError):
            pass
        time.sleep(interval)
    stop(proc)
    raise TimeoutError(f"{name} not ready within {timeout}s; see {log}")


def stop(
    proc: subprocess.Popen[bytes], *, kill: bool = False, grace: float = 0.0, timeout: float = 30.0
) -> int:
    """End ``proc``: wait ``grace`` seconds for it to exit on its own (it may already have been
    signalled, by a terminal's Ctrl-C say), then SIGTERM (SIGKILL with ``kill``), and SIGKILL
    after ``timeout``. Returns its exit code."""
    if grace > 0:
        try:
            return proc.wait(grace)
        except subprocess.TimeoutExpired:
            pass
    if proc.poll() is None:
        proc.send_signal(signal.SIGKILL if kill else signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return proc.returncode


def serve(proc: subprocess.Popen[bytes] | None, stop: Callable[[], object]) -> int:
    """For a command that runs one child until Ctrl-C: wait for it, then ``stop()``."""
    try:
        assert proc is not None
        proc.wait()
    except KeyboardInterrupt:
        pass
    finally:
        stop()
    return 0
