"""The modules compiled to C with mypyc, and the step that compiles them (``make`` runs it after
installing the virtual environment: ``python -m devtools.compile``).

They are the plain typed Python on the ingest process's per-message path whose work is its own
(not a library's): the PUBLISH packets read from the receive buffer (:mod:`ingest.wire`), and
a row's payload turned into the journal's compact form and back (:mod:`ingest.rowcodec`).
Measured 2026-12-05 (best of five, CPU time): the receive path's Python work 0.89 µs a message
against 0.35 compiled (``python -m bench.receive``); a journal batch of 1,000 readings 3.81 µs
a reading against 3.48, its payloads' ``dump`` 1.43 against 1.21 (``python -m
bench.journal_cpu``).

Python imports a compiled module (``ingest/wire.cpython-311-….so``) instead of its ``.py``
beside it, so a module is compiled again whenever its source is newer. Without a C compiler,
or installed with ``pip`` alone, the same source runs as Python, with the same answers:
``tests/unit/test_compiled.py`` runs both on generated inputs and fails when a module listed
here is not the compiled one, or was compiled from an older source.
"""

from __future__ import annotations

import argparse
import importlib.machinery
import os
import subprocess
import sys
from pathlib import Path
from typing import Final

ROOT: Final = Path(__file__).resolve().parents[1]
MODULES: Final[tuple[str, ...]] = ("ingest/wire.py", "ingest/rowcodec.py")
"""Sources compiled, relative to the repository, each on its own (mypyc's helper library for it
beside it)."""


def compiled(source: str) -> list[Path]:
    """The extension modules built from ``source`` (the module and mypyc's helper for it)."""
    src = ROOT / source
    found: list[Path] = []
    for suffix in importlib.machinery.EXTENSION_SUFFIXES:
        for stem in (src.stem, f"{src.stem}__mypyc"):
            path = src.with_name(stem + suffix)
            if path.exists():
                found.append(path)
    return found


def stale(source: str) -> bool:
    """Whether ``source`` has no compiled module, or one older than the source."""
    built = compiled(source)
    newest = (ROOT / source).stat().st_mtime
    return not built or any(p.stat().st_mtime < newest for p in built)


def build(source: str) -> None:
    """Compile ``source`` in place with mypyc (output in ``build/``; shown only on failure)."""
    for old in compiled(source):
        old.unlink()
    done = subprocess.run(
        [sys.executable, "-m", "mypyc", source],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    built = compiled(source)
    if done.returncode != 0 or not built:
        sys.stderr.write(done.stdout + done.stderr)
        raise SystemExit(f"compiling {source} with mypyc failed (a C compiler and Python.h?)")
    # setuptools copies a module it had no need to build again with its old time: newer now
    for path in built:
        os.utime(path)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--force", action="store_true", help="compile even what is up to date")
    ap.add_argument("--clean", action="store_true", help="remove the compiled modules")
    a = ap.parse_args()
    for source in MODULES:
        if a.clean:
            for path in compiled(source):
                path.unlink()
        elif a.force or stale(source):
            build(source)
            print(f"compiled {source} with mypyc")


if __name__ == "__main__":
    main()
