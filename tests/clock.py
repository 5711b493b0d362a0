"""The fake clock of the unit tests: a callable returning ``t``, moved only by the test."""

from __future__ import annotations

import threading


class FakeClock:
    """Safe to read from the threads of the code under test while the test moves it."""

    def __init__(self, t: float = 1_700_000_000.0) -> None:
        self.t = t
        self._lock = threading.Lock()

    def __call__(self) -> float:
        with self._lock:
            return self.t

    def advance(self, seconds: float) -> float:
        with self._lock:
            self.t += seconds
            return self.t
