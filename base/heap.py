"""The Python heap a long-running process builds at start, kept out of the cyclic garbage
collector's full passes.

A full collection (generation 2) walks every object the collector tracks, and holds the GIL
while it does: in the main process, whose start builds the application, the registry, the
rules and their state, one took 42-69 ms, several times a run, and every thread waited for it
(the rules worker, the urgent session's ingest, the live stream). A fall published then was
alerted that much later: the benchmark's slowest of 1,000 probes at 5,000 msg/s were 35-67 ms
against a p99 of 14 ms (2026-12-04). :func:`freeze_startup_heap`, once the process is built,
moves what is alive then (~120,000 objects) out of those passes (``gc.freeze``): full
collections then took 3-4 ms, and the slowest of 1,000 probes 17.5-18.0 ms (README,
"The live ratio, night of 2026-12-04").

What is frozen is still freed by reference counting when no longer used; only garbage cycles
among it (none expected of objects that live as long as the process) would stay.
"""

from __future__ import annotations

import gc


def freeze_startup_heap() -> int:
    """Collect what is already garbage, then freeze the rest: the number of objects frozen."""
    gc.collect()
    gc.freeze()
    return gc.get_freeze_count()
