"""Progress of a long run: one updating line on a terminal, plain periodic lines otherwise."""

from __future__ import annotations

import logging
import threading
import time
from typing import TextIO

from simulators.publisher import Stats, format_elapsed, format_rate


class Progress:
    """Shows elapsed time, sent, acked and the current rate from a :class:`Stats`.

    Runs its own thread; :meth:`handler` gives a logging handler that clears the updating
    line before a log message, so the two never garble each other.
    """

    def __init__(
        self,
        stats: Stats,
        stream: TextIO,
        tty: bool | None = None,
        interval: float | None = None,
    ) -> None:
        self.stats = stats
        self.stream = stream
        self.tty = stream.isatty() if tty is None else tty
        self.interval = interval if interval is not None else (0.5 if self.tty else 10.0)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._last = (time.monotonic(), 0)
        self._shown = False

    def line(self, now: float | None = None) -> str:
        now = time.monotonic() if now is None else now
        s = self.stats
        then, acked_then = self._last
        rate = (s.acked - acked_then) / (now - then) if now > then else 0.0
        self._last = (now, s.acked)
        return (
            f"{format_elapsed(now - s.started)}  sent {s.sent:,}  acked {s.acked:,}  "
            f"pending {s.pending:,}  {format_rate(rate)} msg/s"
        )

    def show(self) -> None:
        text = self.line()
        with self._lock:
            if self.tty:
                self.stream.write(f"\r{text}\x1b[K")
                self._shown = True
            else:
                self.stream.write(f"progress: {text}\n")
            self.stream.flush()

    def clear(self) -> None:
        with self._lock:
            if self.tty and self._shown:
                self.stream.write("\r\x1b[K")
                self.stream.flush()
                self._shown = False

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.show()

    def start(self) -> Progress:
        self._last = (time.monotonic(), self.stats.acked)
        self._thread = threading.Thread(target=self._run, name="sim-progress", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self.clear()

    def handler(self) -> logging.Handler:
        progress = self

        class _Handler(logging.StreamHandler[TextIO]):
            def emit(self, record: logging.LogRecord) -> None:
                progress.clear()
                with progress._lock:
                    super().emit(record)

        return _Handler(self.stream)
